"""Numeric settings are checked when a config is built: finite, and inside the range their field allows.

A range is written as a short spec: ``">0"``, ``">=0"``, ``">=1"``, ``"[0,1)"``, ``"[0,1]"`` or ``"seed"``
(an integer in [0, 2**32), so that derived per-unit seeds stay inside a 64-bit generator seed). Booleans are
not numbers here; tuples and lists of numbers are checked element by element.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

SEED_LIMIT = 2**32
_INTERVAL = re.compile(r"^([\[(])\s*(-?[\d.e]+)\s*,\s*(-?[\d.e]+|inf)\s*([\])])$")


class NonFiniteLoss(FloatingPointError):
    """A training or synthesis loss became NaN or infinite; the stage stops and saves nothing of that step."""


def non_finite(stage: str, where: str, *, lr: float | None = None) -> NonFiniteLoss:
    """The error for a loss that stopped being finite in ``stage`` at ``where``, with the likely cause."""
    cause = f"the lr ({lr:g}) is too high for this setting" if lr is not None else "a setting diverges"
    return NonFiniteLoss(
        f"{stage}: the loss is not finite at {where}; likely cause: {cause}, or NaN / inf inputs. Nothing of "
        "the diverged step was saved: lower the lr (or the weight that diverges) and rerun"
    )


def _numbers(value: Any) -> list[float] | None:
    """The numbers in ``value`` (a number, or a tuple / list of them), or None when it holds none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return [value]
    if (
        isinstance(value, (tuple, list))
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return list(value)
    return None


def in_range(x: float, spec: str) -> bool:
    if spec == "seed":
        return float(x).is_integer() and 0 <= x < SEED_LIMIT
    if spec.startswith(">="):
        return x >= float(spec[2:])
    if spec.startswith(">"):
        return x > float(spec[1:])
    match = _INTERVAL.match(spec)
    if not match:
        raise ValueError(f"bad range spec {spec!r}")
    lo_open, lo, hi, hi_open = match[1] == "(", float(match[2]), float(match[3]), match[4] == ")"
    return (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)


def describe(spec: str) -> str:
    if spec == "seed":
        return f"an integer seed in [0, {SEED_LIMIT})"
    return f"a finite number {spec}" if spec[0] in "<>" else f"a finite number in {spec}"


def check_numbers(obj: Any, ranges: Mapping[str, str] | None = None, *, default: str | None = None) -> None:
    """Raise ``ValueError`` for the first numeric field of dataclass ``obj`` that is not finite or lies outside
    ``ranges[field]`` (or ``default`` for fields without their own range). The message names the class, the
    field, the value and the allowed range."""
    ranges = ranges or {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if kind.split(" |")[0] in ("float", "int") and isinstance(value, str):
            raise ValueError(f"{type(obj).__name__}.{f.name} = {value!r} is not allowed; expected a number")
        numbers = _numbers(value)
        if numbers is None:
            continue
        spec = ranges.get(f.name, default)
        for x in numbers:
            if isinstance(x, float) and not math.isfinite(x) or (spec is not None and not in_range(x, spec)):
                expected = describe(spec) if spec else "a finite number"
                raise ValueError(
                    f"{type(obj).__name__}.{f.name} = {getattr(obj, f.name)!r} is not allowed; expected {expected}"
                )


def check_device(device: Any) -> Any:
    """``device`` as a ``torch.device`` that exists here; a name torch does not know, or CUDA without a GPU,
    is a ``ValueError`` saying what to pass instead."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device name; expected 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA GPUs (cuda:0 ...)")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: only 'cpu' and 'cuda' are supported")
    return dev


def set_deterministic(enabled: bool = True) -> None:
    """Deterministic kernels for reruns that must match bit for bit on one machine: PyTorch's deterministic
    algorithms (an error names any op that has none), cuDNN without autotuning, and the cuBLAS workspace
    setting CUDA requires for it. Costs speed on a GPU (no cuDNN autotuning, slower deterministic kernels);
    on the CPU the loops here are deterministic already."""
    import os

    import torch

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False if enabled else torch.backends.cudnn.benchmark
