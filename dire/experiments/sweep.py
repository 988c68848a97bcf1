"""Choosing DiRe's weights on a validation split (``dire sweep``, notebook ``06_weight_sweep``).

The release's weights (w = 0.1, r_c = 1, r_e = 0.01) were tuned for a ResNet-18's 512-d features on
CIFAR-100; embedding scale and dimension change with the network and the dataset, so they need not transfer.
A sweep runs one dataset × method × teacher over a grid of (w, r_c, r_e) with a validation split held out
of the training set (per class, seeded; teachers, banks and synthesis never see it, see
:func:`dire.data.validation_split`), scores each point by the students' *validation* accuracy, and writes the
best point to a JSON file that profiles reference (``{"weights_file": ...}``, see :func:`resolve_dire`).
The test split is never used to choose.

Since w multiplies both r_c and r_e, a grid over (w, r_e) at r_c = 1 already spans every
(w·r_c, w·r_e); r_c is a grid axis too for completeness.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dire.evaluation import check_seeds
from dire.experiments.config import WEIGHT_KEYS, Experiment
from dire.experiments.drivers import run_seeds
from dire.runs import atomic_write_text
from dire.synthesis import DiReConfig

DEFAULT_GRID = {"weight": (0.03, 0.1, 0.3, 1.0), "r_c": (1.0,), "r_e": (0.0, 0.01, 0.1)}


def grid_points(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """Every combination of the grid's values, as ``{"weight", "r_c", "r_e"}`` dicts (missing axes: release value)."""
    unknown = set(grid) - set(WEIGHT_KEYS)
    if unknown:
        raise ValueError(f"unknown sweep axes {sorted(unknown)}; expected a subset of {WEIGHT_KEYS}")
    release = DiReConfig()
    axes = {k: tuple(grid.get(k, (getattr(release, k),))) for k in WEIGHT_KEYS}
    bad = {k: v for k, v in axes.items() if not v or any(not isinstance(x, (int, float)) or x < 0 for x in v)}
    if bad:
        raise ValueError(f"each sweep axis needs one or more numbers >= 0; got {bad}")
    return [dict(zip(WEIGHT_KEYS, map(float, values))) for values in itertools.product(*axes.values())]


def sweep(
    base: Experiment,
    *,
    grid: Mapping[str, Sequence[float]] = DEFAULT_GRID,
    seeds: Sequence[int] = (0,),
    validation_per_class: int = 500,
    validation_seed: int = 0,
    log: Callable[[str], None] = print,
    **run_kwargs,
) -> list[dict]:
    """One row per grid point (DiRe on with ``base.dire``'s other settings) plus a first ``baseline`` row
    (DiRe off), each ``dire.experiments.drivers.run_seeds`` over ``seeds`` with students scored on the
    validation split."""
    check_seeds(seeds)
    if validation_per_class < 1:
        raise ValueError(
            f"a sweep chooses on a validation split: validation_per_class must be >= 1, got {validation_per_class}"
        )
    held = dataclasses.replace(base, validation_per_class=validation_per_class, validation_seed=validation_seed)
    points = [None] + grid_points(grid)
    rows = []
    for i, point in enumerate(points):
        dire = (
            dataclasses.replace(base.dire, enabled=False)
            if point is None
            else dataclasses.replace(base.dire, enabled=True, **point)
        )
        name = "baseline" if point is None else ", ".join(f"{k} {v:g}" for k, v in point.items())
        log(f"== sweep {i}/{len(points) - 1}: {base.method} on {base.dataset}: {name}")
        summary = run_seeds(dataclasses.replace(held, dire=dire), seeds, log=log, **run_kwargs)
        rows.append(
            {
                "point": name,
                "dire": point is not None,
                **(point or {w: 0.0 for w in WEIGHT_KEYS}),
                "method": base.method,
                "dataset": base.dataset,
                "ipc": base.synthesis.ipc,
                "teacher": base.teacher_arch,
                "seeds": len(seeds),
                **summary,
            }
        )
    return rows


def select(rows: Sequence[dict]) -> dict:
    """The DiRe point with the highest mean validation accuracy (final epoch); ties go to the smaller w.

    Returns ``{"weight", "r_c", "r_e", "val_acc", "val_acc_std", "baseline_val_acc", "beats_baseline"}``.
    """
    points = [r for r in rows if r["dire"] and not math.isnan(r["acc_final"]["mean"])]
    if not points:
        raise ValueError("no finished DiRe point to select from; run the sweep first")
    best = max(points, key=lambda r: (r["acc_final"]["mean"], -r["weight"]))
    baseline = next((r["acc_final"]["mean"] for r in rows if not r["dire"]), math.nan)
    return {
        **{k: best[k] for k in WEIGHT_KEYS},
        "val_acc": best["acc_final"]["mean"],
        "val_acc_std": best["acc_final"]["std"],
        "baseline_val_acc": baseline,
        "beats_baseline": bool(best["acc_final"]["mean"] > baseline),
    }


def write_selection(
    path: str | Path,
    chosen: Mapping,
    rows: Sequence[dict],
    *,
    base: Experiment,
    validation_per_class: int,
    validation_seed: int,
    command: str = "",
) -> Path:
    """The chosen weights and how they were chosen, as JSON (atomically): what :func:`load_weights` reads."""
    record = {
        "weights": {k: chosen[k] for k in WEIGHT_KEYS},
        "selected_by": {
            "criterion": "max mean validation accuracy (final epoch), ties to the smaller w",
            "val_acc": chosen["val_acc"],
            "val_acc_std": chosen["val_acc_std"],
            "baseline_val_acc": chosen["baseline_val_acc"],
            "beats_baseline": chosen["beats_baseline"],
            "validation_per_class": validation_per_class,
            "validation_seed": validation_seed,
            "seeds": rows[0]["seeds"],
            "command": command,
        },
        "for": {
            "dataset": base.dataset,
            "method": base.method,
            "teacher": base.teacher_arch,
            "ipc": base.synthesis.ipc,
        },
        "grid": [
            {
                "point": r["point"],
                **{k: r[k] for k in WEIGHT_KEYS},
                "val_acc": r["acc_final"]["mean"],
                "val_acc_std": r["acc_final"]["std"],
                "vendi": r["vendi"]["mean"],
                "coverage": r["coverage"]["mean"],
                "intra_class_cosine": r["intra_class_cosine"]["mean"],
            }
            for r in rows
        ],
    }
    return atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
