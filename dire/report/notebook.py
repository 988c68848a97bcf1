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
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

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
            ok, c = (
                _matches(item, item_kinds[0] if len(item_kinds) == 1 else item_kinds[i]) if item_kinds else (True, item)
            )
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
            raise TypeError(
                f"parameter {name!r} should be {_type_name(kind)}, got {namespace[name]!r} "
                f"({type(namespace[name]).__name__})"
            )
        namespace[name] = values[name] = converted
    return values


def output_stem(figures_root: str | Path, profile: str, name: str) -> Path:
    """``<figures_root>/<profile>/<name>`` with the folder created."""
    folder = Path(figures_root) / profile
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
