"""Estimated hours per row of the paper profile's main table: work counted from the profile's settings
(dire.experiments.row_cost) times the seconds per image-step that 04_timing_memory measured at each dataset's
shape. Rows of datasets without a measurement print "not measured".

    python benchmarks/paper_cost.py                                   # figures/paper/04_timing_memory.json
    python benchmarks/paper_cost.py --timing build/paper-dry-run/figures/paper/04_timing_memory.json
"""

import argparse
import json
from pathlib import Path
from typing import Any, Optional

import yaml

from dire.experiments.row_cost import main_table_rows, step_seconds

REPO = Path(__file__).resolve().parents[1]


def notebook_defaults(name: str) -> dict:
    """A notebook's parameters cell, executed: its defaults."""
    cells = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    namespace: dict[str, Any] = {"Optional": Optional}
    exec("".join(cell["source"]), namespace)
    return {k: namespace[k] for k in namespace["__annotations__"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timing", type=Path, default=REPO / "figures" / "paper" / "04_timing_memory.json")
    args = parser.parse_args()
    params = {**notebook_defaults("01_main_results")}
    params |= yaml.safe_load((REPO / "notebooks/params/paper/01_main_results.yaml").read_text())
    seconds, device = {}, "GPU"
    if args.timing.exists():
        seconds = step_seconds(args.timing)
        device = json.loads(args.timing.read_text())[0]["device"]
    print(f"seconds per image-step from {args.timing if seconds else 'nothing (not measured)'}: {seconds}")
    print("| dataset | IPC | method | image-steps (baseline) | hours, baseline + DiRe row |")
    print("|---|---|---|---|---|")
    total: dict[str, float] = {}
    for r in main_table_rows(params, seconds=seconds):
        hours = "not measured" if r["hours"] is None else f"{2 * r['hours']:.1f} ({device})"
        print(f"| {r['dataset']} | {r['ipc']} | {r['method']} | {r['image_steps']:.3g} | {hours} |")
        if r["hours"] is not None:
            total[r["dataset"]] = total.get(r["dataset"], 0.0) + 2 * r["hours"]
    for dataset, hours in total.items():
        print(f"{dataset}: {hours:.0f} hours in all on {device}")


if __name__ == "__main__":
    main()
