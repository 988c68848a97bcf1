"""Experiment drivers behind the paper tables: seeds, method comparisons, the ablation, cross-architecture.

They return rows (dicts of ``{"mean", "std", "n"}`` statistics); :mod:`dire.report.tables` formats them.

Seed ``s`` of an experiment means synthesis seed ``s`` *and* student seed ``s``, so
the spread covers both the synthetic set and the student's training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from dire.evaluation import check_seeds, summarize
from dire.experiments.config import Experiment, resolve_dire, with_method
from dire.experiments.pipeline import run_experiment

METRICS = (
    "acc_final",
    "acc_best",
    "vendi",
    "coverage",
    "intra_class_cosine",
    "precision",
    "density",
    "synthesis_s_per_image",
)


def with_seed(exp: Experiment, seed: int) -> Experiment:
    return dataclasses.replace(exp, synthesis=dataclasses.replace(exp.synthesis, seed=seed), student_seeds=(seed,))


def run_seeds(exp: Experiment, seeds: Sequence[int], *, log: Callable[[str], None] = print, **run_kwargs) -> dict:
    """Run ``exp`` once per seed (``log`` gets each run's lines, ending with its result); returns
    ``{"runs": [...], "<metric>": {"mean", "std", "n"}, ...}``."""
    check_seeds(seeds)
    runs = []
    for seed in seeds:
        result = run_experiment(with_seed(exp, seed), log=log, **run_kwargs)
        runs.append(
            {
                "seed": seed,
                "teacher_acc": result["teacher_acc"],
                "acc_final": result["accuracy"]["final"]["mean"],
                "acc_best": result["accuracy"]["best"]["mean"],
                **{k: result["diversity"][k] for k in METRICS if k in result["diversity"]},
                "synthesis_s_per_image": result["timing"]["synthesis_s_per_image"],
                "metric_network": result["metric_network"],
                "protocol": result["protocol"],
                "teachers": result["teachers"],
            }
        )
    summary = {
        "runs": runs,
        "teacher_acc": runs[0]["teacher_acc"],
        "metric_network": runs[0]["metric_network"],
        "protocol": runs[0]["protocol"],
        "teachers": runs[0]["teachers"],
    }
    for key in METRICS:
        summary[key] = summarize(r[key] for r in runs if key in r)
    return summary


def compare(
    base: Experiment,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] | None = None,
    overrides: dict[str, dict] | None = None,
    variants: dict[str, dict] | None = None,
    log: Callable[[str], None] = print,
    jobs: int = 1,
    **run_kwargs,
) -> list[dict]:
    """Rows of method × {baseline, + DiRe, + DiRe (variant) ...} for ``base`` (its ``dire`` settings give the
    + DiRe row); ``overrides[method]`` holds that method's own settings (see
    :func:`dire.experiments.config.with_method`).

    ``variants`` adds rows named ``+ DiRe (<name>)``: each maps to DiRe settings for
    :func:`dire.experiments.config.resolve_dire` (e.g. ``{"weights_file": ...}`` or
    ``{"terms": ["logdet", "cdm", "edm"]}``)
    plus an optional ``methods`` list restricting which methods get the row.

    ``jobs > 1`` runs the table's experiments (method × variant × seed) in that many worker processes first
    (:func:`dire.experiments.jobs.run_parallel`); the rows are then read from the cache, the same as with one.
    """
    check_seeds(seeds)
    variants = dict(variants or {})
    for name, spec in variants.items():
        unknown = [m for m in spec.get("methods", []) if m not in (methods or [base.method])]
        if unknown:
            raise ValueError(
                f"DiRe variant {name!r} names methods {unknown} that are not compared; "
                f"expected some of {list(methods or [base.method])}"
            )
    plans = []  # (method, variant, experiment) of every row
    for method in methods or [base.method]:
        settings = [
            ("", dataclasses.replace(base.dire, enabled=False)),
            ("", dataclasses.replace(base.dire, enabled=True)),
        ]
        settings += [
            (name, resolve_dire(base.dire, {k: v for k, v in spec.items() if k != "methods"}))
            for name, spec in variants.items()
            if method in spec.get("methods", [method])
        ]
        for variant, dire in settings:
            exp = dataclasses.replace(with_method(base, method, (overrides or {}).get(method)), dire=dire)
            plans.append((method, variant, exp))
    if jobs > 1:
        from dire.experiments.jobs import run_parallel

        run_parallel([with_seed(exp, s) for _, _, exp in plans for s in seeds], jobs=jobs, **run_kwargs)
    rows = []
    for method, variant, exp in plans:
        dire = exp.dire
        label = row_name({"method": method, "dire": dire.enabled, "variant": variant})
        log(f"== {label}: {base.dataset}, IPC {base.synthesis.ipc}, seeds {list(seeds)}")
        summary = run_seeds(exp, seeds, log=log, **run_kwargs)
        rows.append(
            {
                "method": method,
                "dire": dire.enabled,
                "variant": variant,
                "dataset": base.dataset,
                "ipc": base.synthesis.ipc,
                "seeds": len(seeds),
                **summary,
            }
        )
    return rows


def row_name(row: dict) -> str:
    """``sre2l``, ``sre2l + DiRe`` or ``sre2l + DiRe (variant)``."""
    variant = row.get("variant")
    return f"{row['method']}{' + DiRe' if row['dire'] else ''}{f' ({variant})' if variant else ''}"


# ------------------------------------------------------------------ ablation and cross-architecture

ABLATION = {  # variant name -> DiRe terms (None = DiRe off)
    "none": None,
    "CD": ("cd",),
    "CDM": ("cdm",),
    "EDM": ("edm",),
    "CD+CDM": ("cd", "cdm"),
    "CD+EDM": ("cd", "edm"),
    "CDM+EDM": ("cdm", "edm"),
    "all": ("cd", "cdm", "edm"),
    # beyond the paper: the log-det (DPP) term alone and in CD's place
    "LD": ("logdet",),
    "LD+CDM+EDM": ("logdet", "cdm", "edm"),
}


def ablation(
    base: Experiment,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    variants: Sequence[str] = tuple(ABLATION),
    log: Callable[[str], None] = print,
    **run_kwargs,
) -> list[dict]:
    """One row per DiRe term combination, with raw metrics and min-max normalised ones (paper's ablation)."""
    check_seeds(seeds)
    unknown = [v for v in variants if v not in ABLATION]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; expected names from {list(ABLATION)}")
    rows = []
    for variant in variants:
        terms = ABLATION[variant]
        dire = dataclasses.replace(base.dire, enabled=terms is not None, terms=terms or base.dire.terms)
        log(f"== ablation {variant}: {base.dataset}, IPC {base.synthesis.ipc}, seeds {list(seeds)}")
        rows.append(
            {
                "variant": variant,
                "method": base.method,
                "dire": terms is not None,
                "dataset": base.dataset,
                "ipc": base.synthesis.ipc,
                "seeds": len(seeds),
                **run_seeds(dataclasses.replace(base, dire=dire), seeds, log=log, **run_kwargs),
            }
        )
    for key in ("acc_final", "vendi", "coverage", "intra_class_cosine"):
        values = [r[key]["mean"] for r in rows]
        lo, hi = min(values), max(values)
        for r in rows:  # min-max over the variants; raw direction kept (intra-class cosine: lower = more diverse)
            r[f"{key}_norm"] = (r[key]["mean"] - lo) / (hi - lo) if hi > lo else 0.0
    return rows


def cross_architecture(
    base: Experiment,
    *,
    students: Sequence[str],
    seeds: Sequence[int] = (0, 1, 2),
    student_overrides: dict[str, dict] | None = None,
    log: Callable[[str], None] = print,
    **run_kwargs,
) -> list[dict]:
    """Synthesise once with ``base``'s teacher (± DiRe), evaluate students of each architecture.

    ``student_overrides[arch]`` holds that student's recipe settings on top of ``base.student_overrides``
    (e.g. ``{"vit_tiny": {"lr": 1e-3, "warmup_epochs": 10}}``: transformers want a smaller lr than CNNs)."""
    check_seeds(seeds)
    student_overrides = student_overrides or {}
    if unknown := sorted(set(student_overrides) - set(students)):
        raise ValueError(f"student_overrides name {unknown}, which are not among the students {list(students)}")
    rows = []
    for enabled in (False, True):
        for arch in students:
            exp = dataclasses.replace(
                base,
                student_arch=arch,
                dire=dataclasses.replace(base.dire, enabled=enabled),
                student_overrides={**base.student_overrides, **student_overrides.get(arch, {})},
            )
            log(f"== {row_name({'method': base.method, 'dire': enabled})} → student {arch}")
            rows.append(
                {
                    "method": base.method,
                    "dire": enabled,
                    "student": arch,
                    "teacher": base.teacher_arch,
                    "dataset": base.dataset,
                    "ipc": base.synthesis.ipc,
                    "seeds": len(seeds),
                    **run_seeds(exp, seeds, log=log, **run_kwargs),
                }
            )
    return rows
