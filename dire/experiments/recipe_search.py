"""Choosing a profile's teacher and student recipe on a validation split (``dire recipe-search``).

A search file (YAML) names a ``base`` experiment in the flat names of
:data:`dire.experiments.config.FLAT` and a list of ``candidates``, each a name and the flat settings it changes
(teacher or student architecture, ``student_overrides`` such as lr or batch size, epochs, ...). Every candidate
runs over the same seeds with a validation split held out of the training set (teachers, banks and synthesis
never see it, :func:`dire.data.validation_split`) and is scored by its students' validation accuracy; the test
split is never used to choose. Stages a candidate shares with another (a teacher, a synthetic set) come from
the run cache, so a student-only candidate costs its students alone.

The choice (:func:`select_recipe`): the highest mean validation accuracy among candidates whose seed std is
within ``max_std``; ties go to the candidate listed first (list cheaper ones first).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dire.evaluation import check_seeds
from dire.experiments.config import FLAT, make_experiment
from dire.experiments.drivers import run_seeds
from dire.runs import atomic_write_text

HELD_OUT = ("validation_per_class", "validation_seed")  # the search sets these itself


def load_search(path: str | Path) -> dict:
    """``{"base": {...}, "candidates": [{"name", "settings"}, ...], "seeds": [...], "max_std": float | None}``
    from a search file, checked: every setting a flat name, candidate names unique."""
    spec = yaml.safe_load(Path(path).read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("candidates"), list) or not spec["candidates"]:
        raise ValueError(
            f"{path}: expected a mapping with 'base' (flat settings) and a non-empty list 'candidates' of "
            "{name: ..., settings: {...}}"
        )
    base = dict(spec.get("base") or {})
    candidates = [{"name": str(c.get("name")), "settings": dict(c.get("settings") or {})} for c in spec["candidates"]]
    for where, settings in [("base", base)] + [(f"candidate {c['name']!r}", c["settings"]) for c in candidates]:
        if unknown := sorted(set(settings) - set(FLAT)):
            raise ValueError(f"{path}: {where} sets {unknown}, which are not flat experiment names (dire --help)")
        if held := sorted(set(settings) & set(HELD_OUT)):
            raise ValueError(f"{path}: {where} sets {held}; the search holds the validation split out itself")
    names = [c["name"] for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: candidate names must be unique; got {names}")
    return {
        "base": base,
        "candidates": candidates,
        "seeds": list(spec.get("seeds", [0, 1, 2])),
        "max_std": spec.get("max_std"),
    }


def search_recipes(
    base: Mapping[str, Any],
    candidates: Sequence[Mapping[str, Any]],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    validation_per_class: int = 500,
    validation_seed: int = 0,
    log: Callable[[str], None] = print,
    **run_kwargs,
) -> list[dict]:
    """One row per candidate (``{"name", "settings"}``): its validation accuracy over ``seeds``
    (:func:`dire.experiments.drivers.run_seeds`, seed s = synthesis and student seed s) and the
    per-seed values."""
    check_seeds(seeds)
    if validation_per_class < 1:
        raise ValueError(
            f"a recipe search chooses on a validation split: validation_per_class >= 1, got {validation_per_class}"
        )
    rows = []
    for i, candidate in enumerate(candidates):
        settings = dict(candidate["settings"])
        exp = make_experiment(
            **{**base, **settings, "validation_per_class": validation_per_class, "validation_seed": validation_seed}
        )
        log(f"== recipe {i + 1}/{len(candidates)}: {candidate['name']} {settings}")
        summary = run_seeds(exp, seeds, log=log, **run_kwargs)
        rows.append(
            {
                "name": candidate["name"],
                "settings": settings,
                "teacher": exp.teacher_arch,
                "student": exp.student_arch,
                "val_acc": summary["acc_final"],
                "per_seed": [r["acc_final"] for r in summary["runs"]],
                "teacher_acc": summary["teacher_acc"],
            }
        )
    return rows


def select_recipe(rows: Sequence[dict], *, max_std: float | None = None) -> dict:
    """The row with the highest mean validation accuracy among those with seed std <= ``max_std`` (all rows when
    None or none qualifies; ``within_std`` says which); ties go to the row listed first."""
    done = [r for r in rows if not math.isnan(r["val_acc"]["mean"])]
    if not done:
        raise ValueError("no finished candidate to select from; run the search first")
    steady = [r for r in done if max_std is None or r["val_acc"]["std"] <= max_std]
    pool = steady or done
    best = max(pool, key=lambda r: r["val_acc"]["mean"])  # max keeps the first of equal keys
    return {**best, "within_std": bool(steady)}


def write_recipe_selection(
    path: str | Path,
    chosen: Mapping,
    rows: Sequence[dict],
    *,
    base: Mapping,
    seeds: Sequence[int],
    validation_per_class: int,
    validation_seed: int,
    max_std: float | None,
    command: str = "",
) -> Path:
    """The chosen candidate's settings and how they were chosen, as JSON (atomically)."""
    record = {
        "settings": chosen["settings"],
        "name": chosen["name"],
        "selected_by": {
            "criterion": "max mean validation accuracy (final epoch) among candidates with seed std <= max_std, "
            "ties to the one listed first",
            "max_std": max_std,
            "within_std": chosen["within_std"],
            "val_acc": chosen["val_acc"],
            "validation_per_class": validation_per_class,
            "validation_seed": validation_seed,
            "seeds": list(seeds),
            "command": command,
        },
        "base": dict(base),
        "candidates": [{k: r[k] for k in ("name", "settings", "val_acc", "per_seed", "teacher_acc")} for r in rows],
    }
    return atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
