"""CDA: curriculum data synthesis (Yin & Shen, "Dataset Distillation via Curriculum Data
Synthesis in Large Data Era", TMLR 2024; VILA-Lab/SRe2L ``CDA/``).

SRe2L recover with one change: the lower bound of the RandomResizedCrop scale
follows an easy-to-hard curriculum. It starts at 1.0 (the whole image) and decays
to ``min_scale`` (0.08) by iteration ``milestone × iterations``, then stays there:

- ``cosine`` (the release's default): ``min_scale + (1 - min_scale) · (1 + cos(π t / T_m)) / 2``
- ``linear``: ``min_scale + (1 - min_scale) · (1 - t / T_m)``
- ``step``: 1.0 until the milestone, ``min_scale`` after it

``milestone = 0`` turns the curriculum off (a fixed ``(min_scale, 1)`` crop, as SRe2L
on ImageNet). The release's scripts all use ``milestone = 1`` (the curriculum spans
the run), horizontal flip and roll jitter; Tiny-ImageNet uses lr 0.4, r_bn 0.05,
4000 iterations, ImageNet lr 0.25, r_bn 0.01. CDA has no CIFAR script.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dire.synthesis.base import Context, register
from dire.synthesis.sre2l import SRe2L

CURRICULA = ("cosine", "linear", "step")


def curriculum_min_scale(t: float, span: float, *, mode: str = "cosine", min_scale: float = 0.08) -> float:
    """The crop scale's lower bound after ``t`` of ``span`` curriculum iterations (``span <= 0``: no curriculum)."""
    if mode not in CURRICULA:
        raise ValueError(f"unknown curriculum {mode!r}; expected one of {CURRICULA}")
    if span <= 0 or t >= span:
        return min_scale
    if mode == "cosine":
        return min_scale + (1 - min_scale) * (1 + math.cos(math.pi * t / span)) / 2
    if mode == "linear":
        return min_scale + (1 - min_scale) * (1 - t / span)
    return 1.0


@register
@dataclass
class CDA(SRe2L):
    curriculum: str = "cosine"  # easy-to-hard schedule of the crop's lower bound: cosine, linear or step
    milestone: float = 1.0  # fraction of the iterations the curriculum spans (0 = none: plain random crops)
    min_scale: float = 0.08  # where the lower bound ends (RandomResizedCrop's default)
    flip: bool = True  # CDA keeps SRe2L's ImageNet/Tiny horizontal flip

    name = "cda"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.curriculum not in CURRICULA:
            raise ValueError(f"curriculum must be one of {CURRICULA}; got {self.curriculum!r}")
        if not 0 <= self.milestone <= 1 or not 0 < self.min_scale <= 1:
            raise ValueError(
                f"expected milestone in [0, 1] and min_scale in (0, 1]; got {self.milestone}, {self.min_scale}"
            )
        if self.crop_scale is not None:
            raise ValueError("CDA sets the crop scale by its curriculum; leave crop_scale unset")

    def crop_scale_at(self, ctx: Context, iteration: int) -> tuple[float, float]:
        span = self.milestone * ctx.config.iterations
        return (curriculum_min_scale(iteration, span, mode=self.curriculum, min_scale=self.min_scale), 1.0)
