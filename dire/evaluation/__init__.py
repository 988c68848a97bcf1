"""Stage 5, evaluation: students trained on a synthetic set, behind one interface.

Two protocols, looked up by name in :data:`PROTOCOLS` (a method declares its default in ``Method.protocol``):

- ``"soft"`` (:mod:`dire.evaluation.soft`): the SRe2L family's relabel protocol, a student trained on the
  teacher's soft labels with a :class:`dire.nets.train.Recipe`;
- ``"dc"`` (:mod:`dire.evaluation.dc`): the DC/DSA/DM/MTT protocol, hard labels, SGD and DSA.

Their numbers measure different things and must not be mixed in one comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dire.data import ImageDataset
from dire.evaluation.common import check_synthetic, per_seed, summarize
from dire.evaluation.dc import DCProtocol, evaluate_dc
from dire.evaluation.soft import evaluate_synthetic


@dataclass(frozen=True)
class Protocol:
    """A student protocol: its name, whether it trains with a soft-label recipe, and how it evaluates."""

    name: str
    uses_recipe: bool  # True: students follow a dire.nets.train.Recipe (and student_overrides apply)

    def evaluate(
        self,
        synthetic: dict,
        *,
        test_set: ImageDataset,
        seeds: Sequence[int],
        arch: str,
        recipe: Any,
        labeller: torch.nn.Module,
        labeller_key: Any,
        zca: Any,
        epochs: int | None,
        device: str | torch.device,
        cache_key: dict | None,
        runs_root: str | Path | None,
    ) -> dict:
        raise NotImplementedError


class SoftLabels(Protocol):
    def evaluate(
        self,
        synthetic,
        *,
        test_set,
        seeds,
        arch,
        recipe,
        labeller,
        labeller_key,
        zca,
        epochs,
        device,
        cache_key,
        runs_root,
    ):
        key = None if cache_key is None else {**cache_key, "teacher": labeller_key}
        return evaluate_synthetic(
            synthetic,
            teacher=labeller,
            test_set=test_set,
            seeds=seeds,
            arch=arch,
            recipe=recipe,
            device=device,
            cache_key=key,
            runs_root=runs_root,
        )


class HardLabelsDC(Protocol):
    def evaluate(
        self,
        synthetic,
        *,
        test_set,
        seeds,
        arch,
        recipe,
        labeller,
        labeller_key,
        zca,
        epochs,
        device,
        cache_key,
        runs_root,
    ):
        overrides = {"epochs": epochs} if epochs else {}
        return evaluate_dc(
            synthetic,
            test_set=test_set,
            seeds=seeds,
            arch=arch,
            zca=zca,
            device=device,
            cache_key=cache_key,
            runs_root=runs_root,
            **overrides,
        )


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add ``protocol`` to :data:`PROTOCOLS`; a name may be registered once."""
    if protocol.name in PROTOCOLS:
        raise ValueError(f"a student protocol named {protocol.name!r} is already registered")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown student protocol {name!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


register_protocol(SoftLabels("soft", uses_recipe=True))
register_protocol(HardLabelsDC("dc", uses_recipe=False))

__all__ = [
    "PROTOCOLS",
    "DCProtocol",
    "Protocol",
    "check_synthetic",
    "evaluate_dc",
    "evaluate_synthetic",
    "get_protocol",
    "per_seed",
    "register_protocol",
    "summarize",
]
