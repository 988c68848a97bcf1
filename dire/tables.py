"""Multi-seed comparisons and result tables (CSV + Markdown).

Seed ``s`` of an experiment means synthesis seed ``s`` *and* student seed ``s``, so
the spread covers both the synthetic set and the student's training.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import statistics
from pathlib import Path
from typing import Callable, Sequence

from dire.pipeline import Experiment, run_experiment, with_method
from dire.runs import atomic_write_text

METRICS = ("acc_final", "acc_best", "vendi", "coverage", "intra_class_cosine", "precision", "density",
           "synthesis_s_per_image")


def with_seed(exp: Experiment, seed: int) -> Experiment:
    return dataclasses.replace(exp, synthesis=dataclasses.replace(exp.synthesis, seed=seed), student_seeds=(seed,))


def run_seeds(exp: Experiment, seeds: Sequence[int], **run_kwargs) -> dict:
    """Run ``exp`` once per seed; returns ``{"runs": [...], "<metric>": {"mean", "std", "n"}, ...}``."""
    runs = []
    for seed in seeds:
        result = run_experiment(with_seed(exp, seed), **run_kwargs)
        runs.append({"seed": seed, "teacher_acc": result["teacher_acc"],
                     "acc_final": result["accuracy"]["final"]["mean"], "acc_best": result["accuracy"]["best"]["mean"],
                     **{k: result["diversity"][k] for k in METRICS if k in result["diversity"]},
                     "synthesis_s_per_image": result["timing"]["synthesis_s_per_image"],
                     "metric_network": result["metric_network"], "protocol": result["protocol"],
                     "teachers": result["teachers"]})
    summary = {"runs": runs, "teacher_acc": runs[0]["teacher_acc"], "metric_network": runs[0]["metric_network"],
               "protocol": runs[0]["protocol"], "teachers": runs[0]["teachers"]}
    for key in METRICS:
        values = [r[key] for r in runs if key in r and not math.isnan(r[key])]
        summary[key] = {"mean": statistics.fmean(values) if values else math.nan,
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
    return summary


def compare(base: Experiment, *, seeds: Sequence[int] = (0, 1, 2), methods: Sequence[str] | None = None,
            overrides: dict[str, dict] | None = None, variants: dict[str, dict] | None = None,
            log: Callable[[str], None] = print, **run_kwargs) -> list[dict]:
    """Rows of method × {baseline, + DiRe, + DiRe (variant) ...} for ``base`` (its ``dire`` settings give the
    + DiRe row); ``overrides[method]`` holds that method's own settings (see :func:`dire.pipeline.with_method`).

    ``variants`` adds rows named ``+ DiRe (<name>)``: each maps to DiRe settings for
    :func:`dire.sweep.resolve_dire` (e.g. ``{"weights_file": ...}`` or ``{"terms": ["logdet", "cdm", "edm"]}``)
    plus an optional ``methods`` list restricting which methods get the row.
    """
    from dire.sweep import resolve_dire

    variants = dict(variants or {})
    for name, spec in variants.items():
        unknown = [m for m in spec.get("methods", []) if m not in (methods or [base.method])]
        if unknown:
            raise ValueError(f"DiRe variant {name!r} names methods {unknown} that are not compared; "
                             f"expected some of {list(methods or [base.method])}")
    rows = []
    for method in methods or [base.method]:
        settings = [("", dataclasses.replace(base.dire, enabled=False)), ("", dataclasses.replace(base.dire, enabled=True))]
        settings += [(name, resolve_dire(base.dire, {k: v for k, v in spec.items() if k != "methods"}))
                     for name, spec in variants.items() if method in spec.get("methods", [method])]
        for variant, dire in settings:
            exp = dataclasses.replace(with_method(base, method, (overrides or {}).get(method)), dire=dire)
            label = row_name({"method": method, "dire": dire.enabled, "variant": variant})
            log(f"== {label}: {base.dataset}, IPC {base.synthesis.ipc}, seeds {list(seeds)}")
            summary = run_seeds(exp, seeds, **run_kwargs)
            rows.append({"method": method, "dire": dire.enabled, "variant": variant, "dataset": base.dataset,
                         "ipc": base.synthesis.ipc, "seeds": len(seeds), **summary})
    return rows


def row_name(row: dict) -> str:
    """``sre2l``, ``sre2l + DiRe`` or ``sre2l + DiRe (variant)``."""
    variant = row.get("variant")
    return f"{row['method']}{' + DiRe' if row['dire'] else ''}{f' ({variant})' if variant else ''}"


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
    head = ("method", "dataset", "IPC", "eval", "accuracy final (%)", "accuracy best (%)", "Vendi ↑", "Coverage ↑",
            "intra-class cos ↓", "synthesis ms/img")
    # eval: "soft" = students on teacher soft labels, "dc" = the DC/DM/MTT hard-label protocol
    return markdown_table(head, [(row_name(r), str(r["dataset"]), str(r["ipc"]), r.get("protocol", "soft"),
                                  mean_pm(r["acc_final"], 2), mean_pm(r["acc_best"], 2), mean_pm(r["vendi"], 3),
                                  mean_pm(r["coverage"], 3), mean_pm(r["intra_class_cosine"], 3),
                                  f"{r['synthesis_s_per_image']['mean'] * 1e3:.0f}") for r in rows])


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
    return _csv([{**{f: r.get(f, missing.get(f)) for f in fields},
                  **{k: r[m][s] for k, (m, s) in stats.items()}} for r in rows],
                fields + list(stats))


def write_table(rows: Sequence[dict], path_stem: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` atomically."""
    stem = Path(path_stem)
    return atomic_write_text(stem.with_suffix(".csv"), to_csv(rows)), atomic_write_text(stem.with_suffix(".md"), to_markdown(rows))


# ------------------------------------------------------------------ ablation and cross-architecture

ABLATION = {  # variant name -> DiRe terms (None = DiRe off)
    "none": None, "CD": ("cd",), "CDM": ("cdm",), "EDM": ("edm",), "CD+CDM": ("cd", "cdm"),
    "CD+EDM": ("cd", "edm"), "CDM+EDM": ("cdm", "edm"), "all": ("cd", "cdm", "edm"),
    # beyond the paper: the log-det (DPP) term alone and in CD's place
    "LD": ("logdet",), "LD+CDM+EDM": ("logdet", "cdm", "edm"),
}


def ablation(base: Experiment, *, seeds: Sequence[int] = (0, 1, 2), variants: Sequence[str] = tuple(ABLATION),
             log: Callable[[str], None] = print, **run_kwargs) -> list[dict]:
    """One row per DiRe term combination, with raw metrics and min-max normalised ones (paper's ablation)."""
    unknown = [v for v in variants if v not in ABLATION]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; expected names from {list(ABLATION)}")
    rows = []
    for variant in variants:
        terms = ABLATION[variant]
        dire = dataclasses.replace(base.dire, enabled=terms is not None, terms=terms or base.dire.terms)
        log(f"== ablation {variant}: {base.dataset}, IPC {base.synthesis.ipc}, seeds {list(seeds)}")
        rows.append({"variant": variant, "method": base.method, "dire": terms is not None, "dataset": base.dataset,
                     "ipc": base.synthesis.ipc, "seeds": len(seeds),
                     **run_seeds(dataclasses.replace(base, dire=dire), seeds, **run_kwargs)})
    for key in ("acc_final", "vendi", "coverage", "intra_class_cosine"):
        values = [r[key]["mean"] for r in rows]
        lo, hi = min(values), max(values)
        for r in rows:  # min-max over the variants; raw direction kept (intra-class cosine: lower = more diverse)
            r[f"{key}_norm"] = (r[key]["mean"] - lo) / (hi - lo) if hi > lo else 0.0
    return rows


def ablation_markdown(rows: Sequence[dict]) -> str:
    head = ("variant", "accuracy (%)", "Vendi ↑", "Coverage ↑", "intra-class cos ↓", "acc (norm)", "Vendi (norm)",
            "Coverage (norm)", "intra-cos (norm)")
    return markdown_table(head, [(r["variant"], mean_pm(r["acc_final"], 2), mean_pm(r["vendi"], 3),
                                  mean_pm(r["coverage"], 4), mean_pm(r["intra_class_cosine"], 3), f"{r['acc_final_norm']:.2f}",
                                  f"{r['vendi_norm']:.2f}", f"{r['coverage_norm']:.2f}",
                                  f"{r['intra_class_cosine_norm']:.2f}") for r in rows])


def cross_architecture(base: Experiment, *, students: Sequence[str], seeds: Sequence[int] = (0, 1, 2),
                       student_overrides: dict[str, dict] | None = None, log: Callable[[str], None] = print,
                       **run_kwargs) -> list[dict]:
    """Synthesise once with ``base``'s teacher (± DiRe), evaluate students of each architecture.

    ``student_overrides[arch]`` holds that student's recipe settings on top of ``base.student_overrides``
    (e.g. ``{"vit_tiny": {"lr": 1e-3, "warmup_epochs": 10}}``: transformers want a smaller lr than CNNs)."""
    student_overrides = student_overrides or {}
    if unknown := sorted(set(student_overrides) - set(students)):
        raise ValueError(f"student_overrides name {unknown}, which are not among the students {list(students)}")
    rows = []
    for enabled in (False, True):
        for arch in students:
            exp = dataclasses.replace(base, student_arch=arch, dire=dataclasses.replace(base.dire, enabled=enabled),
                                      student_overrides={**base.student_overrides, **student_overrides.get(arch, {})})
            log(f"== {row_name({'method': base.method, 'dire': enabled})} → student {arch}")
            rows.append({"method": base.method, "dire": enabled, "student": arch, "teacher": base.teacher_arch,
                         "dataset": base.dataset, "ipc": base.synthesis.ipc, "seeds": len(seeds),
                         **run_seeds(exp, seeds, **run_kwargs)})
    return rows


def cross_architecture_markdown(rows: Sequence[dict]) -> str:
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
