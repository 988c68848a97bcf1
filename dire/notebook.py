"""Helpers the paper notebooks share: parameter validation and output paths.

A notebook starts with ``_before = set(globals())``, then its ``parameters`` cell of
annotated assignments (``seed: int = 0  # RNG seed``), then papermill's injected
cell, then ``check_parameters(globals(), _before)``. Every annotated name is a known
parameter; any other new name was injected by mistake and is rejected, and values
must match their annotation (ints are accepted for floats, lists for tuples).
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, MutableMapping

_IPYTHON_NAMES = {"__annotations__", "_before", "In", "Out", "_", "__", "___", "exit", "quit", "get_ipython"}


def _matches(value: Any, kind: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits annotation ``kind``; returns (ok, value converted where harmless)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            ok, converted = _matches(value, option)
            if ok:
                return True, converted
        return False, value
    if kind is type(None):
        return value is None, value
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        item_kinds = args[:1] if (origin is list or (len(args) == 2 and args[1] is Ellipsis)) else args
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            return False, value
        converted = []
        for i, item in enumerate(value):
            ok, c = _matches(item, item_kinds[0] if len(item_kinds) == 1 else item_kinds[i]) if item_kinds else (True, item)
            if not ok:
                return False, value
            converted.append(c)
        return True, (tuple(converted) if origin is tuple else converted)
    if origin is dict:
        return isinstance(value, dict), value
    if isinstance(kind, type):
        return isinstance(value, kind), value
    return True, value


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) if isinstance(kind, type) else str(kind).replace("typing.", "")


def check_parameters(namespace: MutableMapping[str, Any], before: set[str]) -> dict[str, Any]:
    """Validate the notebook's parameters in place; return them as a dict (for provenance).

    Raises ``ValueError`` naming unknown parameters (with the known ones listed) and
    ``TypeError`` naming ill-typed ones (with the expected type).
    """
    known: dict[str, Any] = dict(namespace.get("__annotations__", {}))
    new = {k for k in set(namespace) - set(before) - _IPYTHON_NAMES if not k.startswith("_i")}
    unknown = sorted(new - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; this notebook takes {sorted(known)}")
    values = {}
    for name, kind in known.items():
        ok, converted = _matches(namespace[name], kind)
        if not ok:
            raise TypeError(f"parameter {name!r} should be {_type_name(kind)}, got {namespace[name]!r} "
                            f"({type(namespace[name]).__name__})")
        namespace[name] = values[name] = converted
    return values


def output_stem(figures_root: str | Path, profile: str, name: str) -> Path:
    """``<figures_root>/<profile>/<name>`` with the folder created."""
    folder = Path(figures_root) / profile
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def make_experiment(*, dataset: str, method: str = "sre2l", ipc: int = 10, seed: int = 0, iterations: int = 200,
                    lr: float = 0.25, ipc_per_unit: int = 1, classes_per_unit: int | None = None, init: str = "noise",
                    r_bn: float = 0.01, jitter: int = 4, dire: bool = False, dire_weight: float = 0.1,
                    r_c: float = 1.0, r_e: float = 0.01, official: bool = False,
                    terms: tuple[str, ...] = ("cd", "cdm", "edm"), teacher_arch: str = "convnet_bn",
                    teacher_recipe: str = "cpu", student_arch: str = "convnet", student_recipe: str = "cpu",
                    student_epochs: int | None = None, student_seeds: tuple[int, ...] = (0, 1, 2),
                    bank_per_class: int = 500, metric_arch: str | None = None, method_settings: dict | None = None,
                    **ignored: Any):
    """An :class:`~dire.pipeline.Experiment` from the flat parameter names the notebooks share.

    Extra keyword arguments (a notebook's other parameters) are ignored, so a notebook can pass
    ``**params`` straight through.
    """
    from dire.pipeline import Experiment
    from dire.synthesis import DiReConfig, SynthesisConfig

    synthesis = SynthesisConfig(ipc=ipc, iterations=iterations, lr=lr, ipc_per_unit=ipc_per_unit,
                                classes_per_unit=classes_per_unit, init=init, seed=seed)
    settings = {"r_bn": r_bn, "jitter": jitter, **(method_settings or {})}
    return Experiment(dataset=dataset, method=method, method_kwargs=settings,
                      synthesis=synthesis,
                      dire=DiReConfig(enabled=dire, r_c=r_c, r_e=r_e, weight=dire_weight, official=official,
                                      terms=tuple(terms)),
                      teacher_arch=teacher_arch, teacher_recipe=teacher_recipe, bank_per_class=bank_per_class,
                      student_arch=student_arch, student_recipe=student_recipe, student_epochs=student_epochs,
                      student_seeds=tuple(student_seeds), metric_arch=metric_arch)
