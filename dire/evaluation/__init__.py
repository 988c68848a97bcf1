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
from dire.evaluation.common import check_seeds, check_synthetic, per_seed, summarize
from dire.evaluation.dc import DCProtocol, evaluate_dc
from dire.evaluation.soft import evaluate_synthetic


@dataclass(frozen=True)
class Students:
    """What a protocol needs to train and score students on a synthetic set (fields a protocol does not use
    are ignored: the soft protocol reads ``recipe`` and ``labeller``, the DC protocol ``zca`` and ``epochs``)."""

    test_set: ImageDataset  # what students are scored on
    seeds: Sequence[int]  # one student per seed
    arch: str  # student architecture
    recipe: Any = None  # soft: the dire.nets.train.Recipe
    labeller: torch.nn.Module | None = None  # soft: the network giving soft labels (a teacher or an ensemble)
    labeller_key: Any = None  # soft: the labeller's cache key
    zca: Any = None  # dc: the whitening the set was synthesised under (MTT with ZCA)
    epochs: int | None = None  # dc: overrides the protocol's epochs
    device: str | torch.device = "cpu"
    cache_key: dict | None = None  # each seed's result is cached under this key (None: not cached)
    runs_root: str | Path | None = None
    progress: bool = False  # a progress bar per student
    precision: str = "fp32"  # autocast of student training and scoring: fp32, bf16 or auto (dire.nets.speed)
    ddp: bool = False  # under torchrun: the ranks train each seed's student together (DDP), not one seed each


@dataclass(frozen=True)
class Protocol:
    """A student protocol: its name, whether it trains with a soft-label recipe, and how it evaluates."""

    name: str
    uses_recipe: bool  # True: students follow a dire.nets.train.Recipe (and student_overrides apply)

    def evaluate(self, synthetic: dict, students: Students) -> dict:
        """``{"final", "best"}`` accuracy (mean ± std over the seeds) and the per-seed ``runs``."""
        raise NotImplementedError


class SoftLabels(Protocol):
    def evaluate(self, synthetic: dict, students: Students) -> dict:
        s = students
        key = None if s.cache_key is None else {**s.cache_key, "teacher": s.labeller_key}
        return evaluate_synthetic(
            synthetic,
            teacher=s.labeller,
            test_set=s.test_set,
            seeds=s.seeds,
            arch=s.arch,
            recipe=s.recipe,
            device=s.device,
            cache_key=key,
            runs_root=s.runs_root,
            progress=s.progress,
            precision=s.precision,
            ddp=s.ddp,
        )


class HardLabelsDC(Protocol):
    def evaluate(self, synthetic: dict, students: Students) -> dict:
        s = students
        overrides = {"epochs": s.epochs} if s.epochs else {}
        return evaluate_dc(
            synthetic,
            test_set=s.test_set,
            seeds=s.seeds,
            arch=s.arch,
            zca=s.zca,
            device=s.device,
            cache_key=s.cache_key,
            runs_root=s.runs_root,
            progress=s.progress,
            precision=s.precision,
            ddp=s.ddp,
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
    "Students",
    "check_seeds",
    "check_synthetic",
    "evaluate_dc",
    "evaluate_synthetic",
    "get_protocol",
    "per_seed",
    "register_protocol",
    "summarize",
]
