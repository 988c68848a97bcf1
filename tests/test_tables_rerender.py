"""The committed quick tables re-render byte for byte from their own CSVs through dire.report.tables, so a
change to the formatting code (or to what a row holds) that would alter a published table is caught."""

import ast
import csv
import math
from pathlib import Path

import pytest

from dire.report.tables import (
    ablation_markdown,
    cross_architecture_markdown,
    rows_to_csv,
    sweep_markdown,
    to_markdown,
)

QUICK = Path(__file__).resolve().parents[1] / "figures" / "quick"


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if text == "nan" or text.startswith("{") and "nan" in text:  # nan (the reference row's normalised cells, a
            # one-seed Δ's interval) as Python writes it, which literal_eval refuses
            return eval(text, {"__builtins__": {}}, {"nan": math.nan})
        return text


def read_rows(path: Path) -> list[dict]:
    """Rows as the drivers return them: ``<m>_mean`` / ``<m>_std`` columns back into ``{"mean", "std", "n"}``."""
    rows = []
    with path.open() as handle:
        for record in csv.DictReader(handle):
            row = {}
            for key, text in record.items():
                if key.startswith("delta_") and text == "":  # a baseline row has no Δ to its baseline
                    continue
                if key.endswith("_std") and key[:-4] + "_mean" in record:
                    continue
                if key.endswith("_mean") and key[:-5] + "_std" in record:
                    name = key[:-5]
                    row[name] = {"mean": float(text), "std": float(record[name + "_std"]), "n": int(record["seeds"])}
                else:
                    row[key] = _value(text) if key not in ("variant", "point") else text
            rows.append(row)
    return rows


@pytest.mark.parametrize(
    "name,render",
    [
        ("01_main_results", to_markdown),
        ("02_ablation", ablation_markdown),
        ("03_cross_architecture", cross_architecture_markdown),
        ("06_weight_sweep", sweep_markdown),
    ],
)
def test_quick_table_rerenders_byte_identical(name, render):
    csv_path, md_path = QUICK / f"{name}.csv", QUICK / f"{name}.md"
    if not csv_path.exists():
        pytest.skip(f"{csv_path} not generated")
    rows = read_rows(csv_path)
    assert md_path.read_text().startswith(render(rows))  # the notebook appends a footnote after the table
    assert rows_to_csv(rows) == csv_path.read_text()
