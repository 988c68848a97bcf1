"""Result tables: rows from :mod:`dire.experiments` as Markdown and CSV (written atomically)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from dire.experiments.drivers import METRICS, row_name
from dire.runs import atomic_write_text


def mean_pm(stat: dict, digits: int) -> str:
    """``mean ± std`` of a ``{"mean", "std"[, "n"]}`` statistic; just the mean when ``n`` is 1 (no spread to show)."""
    if stat.get("n") == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A Markdown table from header cells and rows of already formatted cells."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def to_markdown(rows: Sequence[dict]) -> str:
    head = (
        "method",
        "dataset",
        "IPC",
        "eval",
        "accuracy final (%)",
        "accuracy best (%)",
        "Vendi ↑",
        "Coverage ↑",
        "intra-class cos ↓",
        "synthesis ms/img",
    )
    # eval: "soft" = students on teacher soft labels, "dc" = the DC/DM/MTT hard-label protocol
    return markdown_table(
        head,
        [
            (
                row_name(r),
                str(r["dataset"]),
                str(r["ipc"]),
                r.get("protocol", "soft"),
                mean_pm(r["acc_final"], 2),
                mean_pm(r["acc_best"], 2),
                mean_pm(r["vendi"], 3),
                mean_pm(r["coverage"], 3),
                mean_pm(r["intra_class_cosine"], 3),
                f"{r['synthesis_s_per_image']['mean'] * 1e3:.0f}",
            )
            for r in rows
        ],
    )


def _csv(records: Sequence[dict], fields: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def to_csv(rows: Sequence[dict]) -> str:
    fields = ["method", "dire", "variant", "dataset", "ipc", "seeds", "teacher_acc", "protocol"]
    stats = {f"{m}_{s}": (m, s) for m in METRICS for s in ("mean", "std")}
    missing = {"protocol": "soft", "variant": ""}  # rows made before these columns existed
    return _csv(
        [
            {**{f: r.get(f, missing.get(f)) for f in fields}, **{k: r[m][s] for k, (m, s) in stats.items()}}
            for r in rows
        ],
        fields + list(stats),
    )


def write_table(rows: Sequence[dict], path_stem: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` atomically."""
    stem = Path(path_stem)
    return atomic_write_text(stem.with_suffix(".csv"), to_csv(rows)), atomic_write_text(
        stem.with_suffix(".md"), to_markdown(rows)
    )


def ablation_markdown(rows: Sequence[dict]) -> str:
    head = (
        "variant",
        "accuracy (%)",
        "Vendi ↑",
        "Coverage ↑",
        "intra-class cos ↓",
        "acc (norm)",
        "Vendi (norm)",
        "Coverage (norm)",
        "intra-cos (norm)",
    )
    return markdown_table(
        head,
        [
            (
                r["variant"],
                mean_pm(r["acc_final"], 2),
                mean_pm(r["vendi"], 3),
                mean_pm(r["coverage"], 4),
                mean_pm(r["intra_class_cosine"], 3),
                f"{r['acc_final_norm']:.2f}",
                f"{r['vendi_norm']:.2f}",
                f"{r['coverage_norm']:.2f}",
                f"{r['intra_class_cosine_norm']:.2f}",
            )
            for r in rows
        ],
    )


def cross_architecture_markdown(rows: Sequence[dict]) -> str:
    """Students as columns, baseline and + DiRe as rows; one table per (dataset, IPC), each under a heading when
    there are several."""
    groups = list(dict.fromkeys((r.get("dataset"), r.get("ipc")) for r in rows))
    if len(groups) > 1:
        return "\n".join(
            f"**{dataset}, IPC {ipc}** (teacher {next(r['teacher'] for r in rows if r['dataset'] == dataset)})\n\n"
            + cross_architecture_markdown([r for r in rows if (r.get("dataset"), r.get("ipc")) == (dataset, ipc)])
            for dataset, ipc in groups
        )
    students = list(dict.fromkeys(r["student"] for r in rows))
    body = []
    for enabled in (False, True):
        cells = {r["student"]: mean_pm(r["acc_final"], 2) for r in rows if r["dire"] == enabled}
        body.append([row_name({"method": rows[0]["method"], "dire": enabled})] + [cells.get(s, "–") for s in students])
    return markdown_table(["method"] + students, body)


def flat_rows(rows: Sequence[dict]) -> list[dict]:
    """Rows with each {mean, std} metric split into two columns, for CSV and plotting."""
    flat = []
    for r in rows:
        out = {}
        for key, value in r.items():
            if key == "runs":
                continue
            if isinstance(value, dict) and set(value) - {"n"} == {"mean", "std"}:
                out[f"{key}_mean"], out[f"{key}_std"] = value["mean"], value["std"]
            else:
                out[key] = value
        flat.append(out)
    return flat


def rows_to_csv(rows: Sequence[dict]) -> str:
    flat = flat_rows(rows)
    return _csv(flat, list(dict.fromkeys(k for r in flat for k in r)))


def sweep_markdown(rows: Sequence[dict]) -> str:
    head = ("point", "w", "r_c", "r_e", "val. accuracy (%)", "Vendi ↑", "Coverage ↑", "intra-class cos ↓")
    return markdown_table(
        head,
        [
            (
                r["point"],
                f"{r['weight']:g}",
                f"{r['r_c']:g}",
                f"{r['r_e']:g}",
                mean_pm(r["acc_final"], 2),
                f"{r['vendi']['mean']:.3f}",
                f"{r['coverage']['mean']:.3f}",
                f"{r['intra_class_cosine']['mean']:.3f}",
            )
            for r in rows
        ],
    )
