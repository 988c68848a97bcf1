"""Result tables: rows from :mod:`dire.experiments` as Markdown and CSV (written atomically)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dire.experiments.drivers import EVAL_METRICS, METRICS, row_name
from dire.runs import atomic_write_text


def mean_pm(stat: dict, digits: int) -> str:
    """``mean ± std`` of a ``{"mean", "std"[, "n"]}`` statistic; just the mean when ``n`` is 1 (no spread to show);
    ``–`` where the statistic is undefined (NaN: intra-class cosine of one image per class)."""
    if math.isnan(stat["mean"]):
        return "–"
    if stat.get("n") == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A Markdown table from header cells and rows of already formatted cells."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


Column = tuple[str, Callable[[dict], str]]  # header, and the cell of a row


def delta_cell(delta: dict | None, digits: int) -> str:
    """``+1.23 [+0.10, +2.36]*``: a paired difference with its 95 % CI, ``*`` where the CI excludes 0; one seed
    gives no interval (``+1.23 (1 seed)``); ``–`` for a row without one (a baseline)."""
    if delta is None or math.isnan(delta["delta"]):  # no baseline, or an undefined metric
        return "–"
    if delta["n"] < 2 or math.isnan(delta["low"]):
        return f"{delta['delta']:+.{digits}f} ({delta['n']} seed)"
    mark = "*" if delta["excludes_zero"] else ""
    return f"{delta['delta']:+.{digits}f} [{delta['low']:+.{digits}f}, {delta['high']:+.{digits}f}]{mark}"


def _has(rows: Sequence[dict], key: str) -> bool:
    return any(key in r for r in rows)


def _coverage(row: dict, prefix: str, digits: int) -> str:
    """Coverage beside its identical-distribution expectation, where the row carries one."""
    cell = mean_pm(row[f"{prefix}coverage"], digits)
    expected = row.get(f"{prefix}coverage_expected")
    return cell if expected is None else f"{cell} (E {expected['mean']:.{digits}f})"


def _matched(row: dict, prefix: str, digits: int) -> str:
    """Matched-size Coverage (E its expectation), with the k used where it fell below the nominal one."""
    stat = row.get(f"{prefix}coverage_matched")
    if stat is None or stat.get("n") == 0 or math.isnan(stat["mean"]):  # none measured, or k = 0 (IPC 1)
        return "–"
    k = row[f"{prefix}coverage_matched_k"]["mean"]
    note = f", k {k:.0f}" if k < COVERAGE_K else ""
    return f"{mean_pm(stat, digits)} (E {row[f'{prefix}coverage_matched_expected']['mean']:.{digits}f}{note})"


COVERAGE_K = 5  # dire.metrics.diversity_metrics' k, which matched Coverage lowers to M - 1 where M <= k


def diversity_columns(rows: Sequence[dict], *, coverage_digits: int = 3) -> list[Column]:
    """Vendi, Coverage (beside its expectation E), matched Coverage and intra-class cosine, in the teacher and,
    where the rows were also measured in an evaluator, again in it (headers say which); ``Δ Vendi`` after each
    Vendi where rows carry paired deltas. Columns a row set lacks (rows made before they existed) are left
    out, so older tables render as they did."""
    networks = [("", "")]
    if _has(rows, "eval_network"):
        networks = [("", " (teacher)"), ("eval_", " (eval)")]
    columns: list[Column] = []
    for prefix, tag in networks:
        columns.append((f"Vendi ↑{tag}", lambda r, p=prefix: mean_pm(r[f"{p}vendi"], 3)))
        if _has(rows, f"delta_{prefix}vendi"):
            columns.append((f"Δ Vendi{tag}", lambda r, p=prefix: delta_cell(r.get(f"delta_{p}vendi"), 3)))
        expected = " (E)" if _has(rows, f"{prefix}coverage_expected") else ""
        columns.append((f"Coverage{expected} ↑{tag}", lambda r, p=prefix: _coverage(r, p, coverage_digits)))
        if _has(rows, f"{prefix}coverage_matched"):
            columns.append((f"matched Cov. (E){tag}", lambda r, p=prefix: _matched(r, p, coverage_digits)))
        columns.append((f"intra-class cos ↓{tag}", lambda r, p=prefix: mean_pm(r[f"{p}intra_class_cosine"], 3)))
    return columns


def accuracy_columns(rows: Sequence[dict], *, best: bool = True, head: str = "accuracy final (%)") -> list[Column]:
    """Final (and best) accuracy, then ``Δ acc`` where rows carry paired deltas."""
    columns: list[Column] = [(head, lambda r: mean_pm(r["acc_final"], 2))]
    if best:
        columns.append(("accuracy best (%)", lambda r: mean_pm(r["acc_best"], 2)))
    if _has(rows, "delta_acc_final"):
        columns.append(("Δ acc (95 % CI)", lambda r: delta_cell(r.get("delta_acc_final"), 2)))
    return columns


def render(columns: Sequence[Column], rows: Sequence[dict]) -> str:
    return markdown_table([h for h, _ in columns], [[cell(r) for _, cell in columns] for r in rows])


def table_notes(rows: Sequence[dict]) -> str:
    """The footnote that says how to read the columns the rows carry: the networks, Coverage's E, matched
    Coverage, the paired Δ and the reference row."""
    networks = f"Metrics in: {rows[0]['metric_network']}"
    if _has(rows, "eval_network"):
        networks += f" (teacher) and {rows[0]['eval_network']} (eval), an independently trained network"
    notes = [networks + "."]
    if _has(rows, "coverage_expected"):
        notes.append(
            f"Coverage (E): E is the Coverage two identical distributions give at that row's N real and M synthetic "
            f"per class with k = {COVERAGE_K} (Naeem et al. 2020, Lemma 2), so the column reads as a fraction of E."
        )
    if _has(rows, "coverage_matched"):
        notes.append(
            "matched Cov.: Coverage against M real per class (the mean of 10 random draws), E its expectation; "
            f"where M <= {COVERAGE_K} k drops to M - 1 (shown as k)."
        )
    if any(r.get("ipc") == 1 for r in rows):
        notes.append(
            "IPC 1: one image per class, so Vendi is 1 by definition, and intra-class cosine (no pair) and matched "
            "Coverage (k = 0) are undefined (–)."
        )
    if any(k.startswith("delta_") for r in rows for k in r):
        notes.append(
            "Δ: mean per-seed paired difference to the method's baseline row (same seeds), with a 95 % "
            "paired-t confidence interval; * the interval excludes 0."
        )
    if any(r.get("method") == "real" for r in rows):
        notes.append(
            "real subset: M = IPC random real training images per class (drawn per seed), trained and measured "
            "like the other rows."
        )
    return " ".join(notes) + "\n"


def to_markdown(rows: Sequence[dict]) -> str:
    # eval: "soft" = students on teacher soft labels, "dc" = the DC/DM/MTT hard-label protocol
    columns: list[Column] = [
        ("method", row_name),
        ("dataset", lambda r: str(r["dataset"])),
        ("IPC", lambda r: str(r["ipc"])),
        ("eval", lambda r: r.get("protocol", "soft")),
        *accuracy_columns(rows),
        *diversity_columns(rows),
        ("synthesis ms/img", lambda r: f"{r['synthesis_s_per_image']['mean'] * 1e3:.0f}"),
    ]
    return render(columns, rows)


def _csv(records: Sequence[dict], fields: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def to_csv(rows: Sequence[dict]) -> str:
    fields = ["method", "dire", "variant", "dataset", "ipc", "seeds", "teacher_acc", "protocol"]
    metrics = [m for m in METRICS + EVAL_METRICS if all(m in r for r in rows)]  # what every row has
    stats = {f"{m}_{s}": (m, s) for m in metrics for s in ("mean", "std")}
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
    def norm(key: str) -> Callable[[dict], str]:
        return lambda r: "–" if math.isnan(r[f"{key}_norm"]) else f"{r[f'{key}_norm']:.2f}"

    columns: list[Column] = [
        ("variant", lambda r: r["variant"]),
        *accuracy_columns(rows, best=False, head="accuracy (%)"),
        *diversity_columns(rows, coverage_digits=4),
        ("acc (norm)", norm("acc_final")),
        ("Vendi (norm)", norm("vendi")),
        ("Coverage (norm)", norm("coverage")),
        ("intra-cos (norm)", norm("intra_class_cosine")),
    ]
    return render(columns, rows)


def cross_architecture_markdown(rows: Sequence[dict]) -> str:
    """Students as columns, (real subset,) baseline and + DiRe as rows, a + DiRe cell with its paired Δ where
    the rows carry one; one table per (dataset, IPC), each under a heading when there are several. Where the rows
    carry the new diversity columns, a second table gives each set's diversity (the same whichever student)."""
    groups = list(dict.fromkeys((r.get("dataset"), r.get("ipc")) for r in rows))
    if len(groups) > 1:
        return "\n".join(
            f"**{dataset}, IPC {ipc}** (teacher {next(r['teacher'] for r in rows if r['dataset'] == dataset)})\n\n"
            + cross_architecture_markdown([r for r in rows if (r.get("dataset"), r.get("ipc")) == (dataset, ipc)])
            for dataset, ipc in groups
        )
    students = list(dict.fromkeys(r["student"] for r in rows))
    sets = list(dict.fromkeys((r["method"], r["dire"]) for r in rows))  # real subset, baseline, + DiRe

    def cell(r: dict) -> str:
        delta = r.get("delta_acc_final")
        return mean_pm(r["acc_final"], 2) + ("" if delta is None else f" (Δ {delta_cell(delta, 2)})")

    body = []
    for method, enabled in sets:
        cells = {r["student"]: cell(r) for r in rows if (r["method"], r["dire"]) == (method, enabled)}
        body.append([row_name({"method": method, "dire": enabled})] + [cells.get(s, "–") for s in students])
    table = markdown_table(["method"] + students, body)
    if not _has(rows, "coverage_expected"):
        return table
    firsts = [next(r for r in rows if (r["method"], r["dire"]) == k) for k in sets]  # one row per set
    columns = [("set", row_name), *diversity_columns(firsts)]
    return table + "\nDiversity of each set (the same whichever student):\n\n" + render(columns, firsts)


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


def _settings_text(settings: Mapping) -> str:
    """A recipe-search candidate's settings as ``k=v``, nested dicts (``student_overrides``) flattened;
    the architectures have their own columns."""
    flat = {}
    for key, value in settings.items():
        flat.update(value if isinstance(value, Mapping) else {key: value})
    return ", ".join(f"{k}={v}" for k, v in flat.items() if k not in ("teacher_arch", "student_arch"))


def recipe_search_markdown(rows: Sequence[dict], chosen: Mapping | None = None) -> str:
    head = ("candidate", "teacher (test acc.)", "student", "settings", "val. accuracy (%)", "per seed")
    body = [
        (
            ("**" + r["name"] + "**") if chosen is not None and r["name"] == chosen["name"] else r["name"],
            f"{r['teacher']} ({r['teacher_acc']:.2f} %)",
            r["student"],
            _settings_text(r["settings"]),
            mean_pm(r["val_acc"], 2),
            " ".join(f"{a:.2f}" for a in r["per_seed"]),
        )
        for r in rows
    ]
    return markdown_table(head, body)


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
