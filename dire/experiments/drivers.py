"""Experiment drivers behind the paper tables: seeds, method comparisons, the ablation, cross-architecture.

They return rows (dicts of ``{"mean", "std", "n"}`` statistics); :mod:`dire.report.tables` formats them.

Seed ``s`` of an experiment means synthesis seed ``s`` *and* student seed ``s``, so
the spread covers both the synthetic set and the student's training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import dire.distributed as distributed
from dire.evaluation import check_seeds, summarize
from dire.evaluation.common import paired_difference
from dire.experiments.config import Experiment, resolve_dire, with_method
from dire.experiments.pipeline import run_experiment
from dire.synthesis import METHODS

# the diversity metrics a row summarises, in each network it was measured in (dire.metrics.diversity_metrics)
DIVERSITY = (
    "vendi",
    "coverage",
    "coverage_expected",
    "coverage_matched",
    "coverage_matched_expected",
    "coverage_matched_k",
    "intra_class_cosine",
    "precision",
    "density",
)
METRICS = ("acc_final", "acc_best", *DIVERSITY, "synthesis_s_per_image")
EVAL_METRICS = tuple(f"eval_{m}" for m in DIVERSITY)  # the same, in the independent evaluator (metric_arch)

REFERENCE = "real"  # the real-subset reference row's method (dire.synthesis.real)
# what a + DiRe row reports a paired delta of; tables show the accuracy and Vendi ones, the CSVs carry all
DELTA_METRICS = (
    "acc_final",
    "vendi",
    "eval_vendi",
    "coverage_matched",
    "eval_coverage_matched",
    "intra_class_cosine",
    "eval_intra_class_cosine",
)


def with_seed(exp: Experiment, seed: int) -> Experiment:
    return dataclasses.replace(exp, synthesis=dataclasses.replace(exp.synthesis, seed=seed), student_seeds=(seed,))


def prefill(experiments: Sequence[Experiment], seeds: Sequence[int], *, jobs: int = 1, **run_kwargs) -> None:
    """With ``jobs > 1`` (default 1: nothing to do), run every experiment at every seed in that many worker
    processes (:func:`dire.experiments.jobs.run_parallel`), so the table's own pass only reads the cache. Under
    torchrun nothing is started: the ranks already share each experiment's units and seeds."""
    if jobs > 1 and not distributed.active():
        from dire.experiments.jobs import run_parallel

        run_parallel([with_seed(exp, s) for exp in experiments for s in seeds], jobs=jobs, **run_kwargs)


def run_seeds(exp: Experiment, seeds: Sequence[int], *, log: Callable[[str], None] = print, **run_kwargs) -> dict:
    """Run ``exp`` once per seed (``log`` gets each run's lines, ending with its result); returns
    ``{"runs": [...], "<metric>": {"mean", "std", "n"}, ...}``."""
    check_seeds(seeds)
    runs = [run_record(run_experiment(with_seed(exp, seed), log=log, **run_kwargs), seed) for seed in seeds]
    summary = {
        "runs": runs,
        "teacher_acc": runs[0]["teacher_acc"],
        "metric_network": runs[0]["metric_network"],
        "protocol": runs[0]["protocol"],
        "teachers": runs[0]["teachers"],
    }
    if "eval_network" in runs[0]:
        summary["eval_network"] = runs[0]["eval_network"]
    for key in METRICS + EVAL_METRICS:
        if key in METRICS or key in runs[0]:  # an evaluator's metrics only where one was measured in
            summary[key] = summarize(r[key] for r in runs if key in r)
    return summary


def run_record(result: dict, seed: int) -> dict:
    """One seed's line of a row: accuracy, the diversity metrics in the teacher (and as ``eval_<metric>`` in
    the evaluator), timing and where its set lies."""
    record = {
        "seed": seed,
        "teacher_acc": result["teacher_acc"],
        "acc_final": result["accuracy"]["final"]["mean"],
        "acc_best": result["accuracy"]["best"]["mean"],
        **{k: result["diversity"][k] for k in DIVERSITY if k in result["diversity"]},
        "synthesis_s_per_image": result["timing"]["synthesis_s_per_image"],
        "metric_network": result["metric_network"],
        "protocol": result["protocol"],
        "teachers": result["teachers"],
        "synthetic_dir": result["dirs"]["synthetic"],
    }
    if "diversity_eval" in result:
        record.update({f"eval_{k}": result["diversity_eval"][k] for k in DIVERSITY if k in result["diversity_eval"]})
        record["eval_network"] = result["eval_network"]
    return record


def reference_experiment(exp: Experiment) -> Experiment:
    """``exp``'s real-subset reference: its set replaced by ``ipc`` random real training images per class (seed
    ``s`` draws its own, cached like any set), DiRe off, and students trained and scored with ``exp``'s protocol,
    recipe and teacher, so it stands beside ``exp``'s rows as their yardstick."""
    protocol = exp.protocol or METHODS[exp.method].protocol
    return dataclasses.replace(
        with_method(exp, REFERENCE), dire=dataclasses.replace(exp.dire, enabled=False), protocol=protocol
    )


def add_deltas(
    rows: list[dict],
    *,
    match: Sequence[str] = ("dataset", "ipc", "method"),
    is_baseline: Callable[[dict], bool] = lambda r: not r.get("dire") and not r.get("variant"),
) -> list[dict]:
    """Give every + DiRe row (variants too) ``delta_<metric>`` for :data:`DELTA_METRICS`: the mean per-seed
    paired difference to the baseline row (``is_baseline``, default: DiRe off and no variant) that agrees on
    ``match``, with its 95 % paired-t interval (:func:`dire.evaluation.common.paired_difference`); rows are
    paired by seed, over the seeds both ran."""
    for row in rows:
        if not row.get("dire"):
            continue
        key = tuple(row.get(m) for m in match)
        base = next((b for b in rows if is_baseline(b) and tuple(b.get(m) for m in match) == key), None)
        if base is None:
            continue
        for metric in DELTA_METRICS:
            ours = {r["seed"]: r[metric] for r in row["runs"] if metric in r}
            theirs = {r["seed"]: r[metric] for r in base["runs"] if metric in r}
            seeds = [s for s in ours if s in theirs]
            if seeds:
                row[f"delta_{metric}"] = paired_difference([ours[s] for s in seeds], [theirs[s] for s in seeds])
    return rows


def compare(
    base: Experiment,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] | None = None,
    overrides: dict[str, dict] | None = None,
    variants: dict[str, dict] | None = None,
    log: Callable[[str], None] = print,
    jobs: int = 1,
    reference_row: bool = False,
    **run_kwargs,
) -> list[dict]:
    """Rows of method × {baseline, + DiRe, + DiRe (variant) ...} for ``base`` (its ``dire`` settings give the
    + DiRe row); ``overrides[method]`` holds that method's own settings (see
    :func:`dire.experiments.config.with_method`).

    ``variants`` adds rows named ``+ DiRe (<name>)``: each maps to DiRe settings for
    :func:`dire.experiments.config.resolve_dire` (e.g. ``{"weights_file": ...}`` or
    ``{"terms": ["logdet", "cdm", "edm"]}``)
    plus an optional ``methods`` list restricting which methods get the row.

    Every + DiRe row carries ``delta_<metric>`` (:func:`add_deltas`): paired by seed against its method's
    baseline. ``reference_row=True`` (default False) puts first a real-subset row (:func:`reference_experiment`,
    method ``real``) for each student protocol the compared methods use, with the first such method's
    experiment settings (e.g. its ``student_epochs``).

    ``jobs > 1`` runs the table's experiments (method × variant × seed) in that many worker processes first
    (:func:`prefill`); the rows are then read from the cache, the same as with one.
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
    if reference_row:
        protocols = {}  # protocol -> the first compared method evaluated with it
        for method in methods or [base.method]:
            exp = with_method(base, method, (overrides or {}).get(method))
            protocols.setdefault(exp.protocol or METHODS[method].protocol, exp)
        plans += [(REFERENCE, "", reference_experiment(exp)) for exp in protocols.values()]
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
    prefill([exp for _, _, exp in plans], seeds, jobs=jobs, **run_kwargs)
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
    return add_deltas(rows)


def methods_at(ipc: int, methods: Sequence[str], ipc_methods: Mapping | None = None) -> list[str]:
    """The methods a table compares at ``ipc``: ``ipc_methods[ipc]`` (a key may be an int or its string, as
    YAML or JSON give it), in ``methods``' order, or all of ``methods`` where ``ipc`` has no entry."""
    try:
        chosen = {int(k): list(v) for k, v in (ipc_methods or {}).items()}
    except (TypeError, ValueError):
        raise ValueError(f"ipc_methods: expected {{IPC: [methods]}}, got {ipc_methods}") from None
    if ipc not in chosen:
        return list(methods)
    if unknown := [m for m in chosen[ipc] if m not in methods]:
        raise ValueError(f"ipc_methods[{ipc}] names {unknown}, not among the compared methods {list(methods)}")
    if not chosen[ipc]:
        raise ValueError(f"ipc_methods[{ipc}] is empty; name at least one of {list(methods)} or drop the IPC")
    return [m for m in methods if m in chosen[ipc]]


def variants_at(ipc: int, variants: Mapping[str, Mapping], methods: Sequence[str]) -> dict[str, dict]:
    """The DiRe variants of a table at ``ipc`` for :func:`compare`: those whose optional ``ipcs`` list holds
    ``ipc`` (absent: every IPC) and that name a compared method, their ``methods`` narrowed to ``methods``."""
    chosen = {}
    for name, spec in variants.items():
        spec = dict(spec)
        if ipc not in spec.pop("ipcs", [ipc]):
            continue
        if "methods" in spec:
            spec["methods"] = [m for m in spec["methods"] if m in methods]
            if not spec["methods"]:
                continue
        chosen[name] = spec
    return chosen


def row_name(row: dict) -> str:
    """``sre2l``, ``sre2l + DiRe``, ``sre2l + DiRe (variant)`` or ``real subset`` (the reference row; ``real
    subset (dc)`` for one evaluated with the DC protocol)."""
    if row["method"] == REFERENCE:  # one per protocol in a table that mixes them: named apart where not soft
        return "real subset" + (f" ({row['protocol']})" if row.get("protocol", "soft") != "soft" else "")
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
    reference_row: bool = False,
    jobs: int = 1,
    **run_kwargs,
) -> list[dict]:
    """One row per DiRe term combination, with raw metrics and min-max normalised ones (paper's ablation).

    Each DiRe row carries ``delta_<metric>`` against the ``none`` row when that is among ``variants``.
    ``reference_row=True`` (default False) adds a last ``real subset`` row (:func:`reference_experiment`),
    left out of the min-max normalisation (its ``*_norm`` are NaN). ``jobs > 1``: as in :func:`compare`."""
    check_seeds(seeds)
    unknown = [v for v in variants if v not in ABLATION]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; expected names from {list(ABLATION)}")
    plans = []  # (variant, experiment) of every row
    for variant in variants:
        terms = ABLATION[variant]
        dire = dataclasses.replace(base.dire, enabled=terms is not None, terms=terms or base.dire.terms)
        plans.append((variant, dataclasses.replace(base, dire=dire)))
    reference = reference_experiment(base) if reference_row else None
    prefill([exp for _, exp in plans] + ([reference] if reference else []), seeds, jobs=jobs, **run_kwargs)
    rows = []
    for variant, exp in plans:
        log(f"== ablation {variant}: {base.dataset}, IPC {base.synthesis.ipc}, seeds {list(seeds)}")
        rows.append(
            {
                "variant": variant,
                "method": base.method,
                "dire": exp.dire.enabled,
                "dataset": base.dataset,
                "ipc": base.synthesis.ipc,
                "seeds": len(seeds),
                **run_seeds(exp, seeds, log=log, **run_kwargs),
            }
        )
    for key in ("acc_final", "vendi", "coverage", "intra_class_cosine"):
        values = [r[key]["mean"] for r in rows]
        lo, hi = min(values), max(values)
        for r in rows:  # min-max over the variants; raw direction kept (intra-class cosine: lower = more diverse)
            r[f"{key}_norm"] = (r[key]["mean"] - lo) / (hi - lo) if hi > lo else 0.0
    add_deltas(rows, match=("dataset", "ipc"), is_baseline=lambda r: r["variant"] == "none")
    if reference is not None:
        log(f"== ablation real subset: {base.dataset}, IPC {base.synthesis.ipc}, seeds {list(seeds)}")
        rows.append(
            {
                "variant": "real subset",
                "method": REFERENCE,
                "dire": False,
                "dataset": base.dataset,
                "ipc": base.synthesis.ipc,
                "seeds": len(seeds),
                **run_seeds(reference, seeds, log=log, **run_kwargs),
                **{f"{k}_norm": float("nan") for k in ("acc_final", "vendi", "coverage", "intra_class_cosine")},
            }
        )
    return rows


def cross_architecture(
    base: Experiment,
    *,
    students: Sequence[str],
    seeds: Sequence[int] = (0, 1, 2),
    student_overrides: dict[str, dict] | None = None,
    log: Callable[[str], None] = print,
    reference_row: bool = False,
    jobs: int = 1,
    **run_kwargs,
) -> list[dict]:
    """Synthesise once with ``base``'s teacher (± DiRe), evaluate students of each architecture.

    Each + DiRe row carries ``delta_<metric>``, paired by seed against the baseline of the same student.
    ``reference_row=True`` (default False) adds, first, a real-subset row per student
    (:func:`reference_experiment`, method ``real``).

    ``student_overrides[arch]`` holds that student's recipe settings on top of ``base.student_overrides``
    (e.g. ``{"vit_tiny": {"lr": 1e-3, "warmup_epochs": 10}}``: transformers want a smaller lr than CNNs).
    ``jobs > 1``: as in :func:`compare`."""
    check_seeds(seeds)
    student_overrides = student_overrides or {}
    if unknown := sorted(set(student_overrides) - set(students)):
        raise ValueError(f"student_overrides name {unknown}, which are not among the students {list(students)}")
    plans = []  # (method, DiRe on, student, experiment) of every row
    kinds = [(REFERENCE, False)] if reference_row else []
    for method, enabled in kinds + [(base.method, False), (base.method, True)]:
        for arch in students:
            exp = dataclasses.replace(
                base,
                student_arch=arch,
                dire=dataclasses.replace(base.dire, enabled=enabled),
                student_overrides={**base.student_overrides, **student_overrides.get(arch, {})},
            )
            plans.append((method, enabled, arch, reference_experiment(exp) if method == REFERENCE else exp))
    prefill([exp for *_, exp in plans], seeds, jobs=jobs, **run_kwargs)
    rows = []
    for method, enabled, arch, exp in plans:
        log(f"== {row_name({'method': method, 'dire': enabled})} → student {arch}")
        rows.append(
            {
                "method": method,
                "dire": enabled,
                "student": arch,
                "teacher": base.teacher_arch,
                "dataset": base.dataset,
                "ipc": base.synthesis.ipc,
                "seeds": len(seeds),
                **run_seeds(exp, seeds, log=log, **run_kwargs),
            }
        )
    return add_deltas(rows, match=("dataset", "ipc", "method", "student"))
