"""Estimated hours per row of the paper profile's main table: work counted from the profile's settings
(dire.experiments.row_cost) times the seconds per image-step that 04_timing_memory measured at each dataset's
shape. Rows of datasets without a measurement print "not measured".

Then the wall time of one dataset and IPC (default ImageNet-1K, IPC 50) against the GPU count under torchrun:
each row's share of its one-GPU time on the busiest rank (counted from its units and seeds, so printed even
without a measurement), with students as one seed per rank or as DDP students, and the hours that gives.

    python benchmarks/paper_cost.py                                   # figures/paper/04_timing_memory.json
    python benchmarks/paper_cost.py --timing build/paper-dry-run/figures/paper/04_timing_memory.json
    python benchmarks/paper_cost.py --gpus 1,2,4,8,16 --dataset imagenet --ipc 50
"""

import argparse
import json
from pathlib import Path
from typing import Any, Optional

import yaml

from dire.experiments.row_cost import main_table_rows, step_seconds, wall_fraction

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
    parser.add_argument("--gpus", default="1,2,4,8", help="GPU counts of the wall-time model, comma-separated")
    parser.add_argument("--dataset", default="imagenet", help="the wall-time model's dataset")
    parser.add_argument("--ipc", type=int, default=50, help="the wall-time model's IPC")
    args = parser.parse_args()
    gpus = [int(g) for g in args.gpus.split(",")]
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
    rows = main_table_rows(params, seconds=seconds)
    for r in rows:
        hours = "not measured" if r["hours"] is None else f"{2 * r['hours']:.1f} ({device})"
        print(f"| {r['dataset']} | {r['ipc']} | {r['method']} | {r['image_steps']:.3g} | {hours} |")
        if r["hours"] is not None:
            total[r["dataset"]] = total.get(r["dataset"], 0.0) + 2 * r["hours"]
    for dataset, hours in total.items():
        print(f"{dataset}: {hours:.0f} hours in all on {device}")
    wall_model(rows, gpus, dataset=args.dataset, ipc=args.ipc, device=device)


def wall_model(rows: list[dict], gpus: list[int], *, dataset: str, ipc: int, device: str) -> None:
    """Each row of ``dataset`` at ``ipc`` (baseline + DiRe): its share of one GPU's time on G GPUs, seeds over the
    ranks / DDP students, and the wall hours that share gives where 04 measured the dataset."""
    picked = [r for r in rows if r["dataset"] == dataset and r["ipc"] == ipc]
    if not picked:
        raise SystemExit(f"no main-table row of {dataset} at IPC {ipc}")
    print(f"\nwall time of {dataset} IPC {ipc} on G GPUs (torchrun): share of one GPU's time, seeds over ranks / DDP")
    print("students; hours of the baseline + DiRe rows on that share (communication, teachers and banks left out)")
    print("| method | units | seeds | " + " | ".join(f"G = {g}" for g in gpus) + " |")
    print("|---|---|---|" + "---|" * len(gpus))
    for r in picked:
        cells = []
        for g in gpus:
            spread, ddp = wall_fraction(r, g), wall_fraction(r, g, ddp_students=True)
            hours = "not measured" if r["hours"] is None else f"{2 * r['hours'] * spread:.1f} h ({device})"
            cells.append(f"{spread:.3f} / {ddp:.3f}, {hours}")
        print(f"| {r['method']} | {r['units']} | {r['seeds']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
