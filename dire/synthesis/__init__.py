"""Stage 4, synthesis: the shared loop (:mod:`dire.synthesis.base`) and one registered class per method.

Importing this package registers every method in :data:`METHODS` (``@register`` in each module).
"""

import dataclasses

from dire.synthesis.base import (
    METHODS,
    Context,
    DiReConfig,
    Method,
    Step,
    SynthesisConfig,
    Unit,
    plan_units,
    register,
    synthesize,
)
from dire.synthesis.cda import CDA
from dire.synthesis.delt import DELT
from dire.synthesis.dm import DM
from dire.synthesis.dwa import DWA
from dire.synthesis.gvbsm import GVBSM
from dire.synthesis.mtt import MTT
from dire.synthesis.real import RealSubset
from dire.synthesis.sre2l import SRe2L
from dire.synthesis.ufc import UFC


def build_method(name: str, **kwargs) -> Method:
    """The registered method ``name`` with ``kwargs`` as its settings (unknown names and settings are refused)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    valid = [f.name for f in dataclasses.fields(METHODS[name])] if dataclasses.is_dataclass(METHODS[name]) else []
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"method {name!r} has no setting(s) {unknown}; its settings are {valid}")
    return METHODS[name](**kwargs)


__all__ = [
    "CDA",
    "DELT",
    "DM",
    "DWA",
    "GVBSM",
    "METHODS",
    "MTT",
    "UFC",
    "Context",
    "DiReConfig",
    "Method",
    "RealSubset",
    "SRe2L",
    "Step",
    "SynthesisConfig",
    "Unit",
    "build_method",
    "plan_units",
    "register",
    "synthesize",
]
