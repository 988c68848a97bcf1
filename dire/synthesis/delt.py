"""DELT: diversity-driven EarlyLate training (Shen et al., CVPR 2025;
VILA-Lab/DELT ``recover/recover.py``).

CDA recover with two changes:

1. **Init from real images of median teacher confidence.** A ranking pass scores every
   training image of the class by the teacher's softmax probability of its label;
   the ``ipc`` images around the median score are the starting points (the release
   also offers top/min; its scripts' default is an RDED-style init folder).
2. **EarlyLate.** With ``round_iterations`` R there are ``ceil(iterations / R)``
   rounds; a class's images are split into that many near-equal groups (50 over 8
   rounds: 7, 7, 6, 6, 6, 6, 6, 6) and group g joins at round g and stays to the end,
   so the first group is optimised for every iteration and the last for R. Each
   iteration forwards only the active images, so BN statistics come from the active
   subset. IPC 1 runs without EarlyLate. The global cosine LR schedule is kept, as in
   the release (its optional per-round LR reset and random per-class round counts
   are not built).

Release settings: CDA cosine curriculum with milestone 1, roll jitter 0, lr 0.25,
r_bn 0.01, batches of 100 = 100/IPC classes × IPC images (``ipc_per_unit = ipc``,
``classes_per_unit = 100 // ipc`` in ``SynthesisConfig``), first BN ×10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dire.nets.train import batch_loader
from dire.synthesis.base import Context, Step, Unit, register
from dire.synthesis.cda import CDA


def join_rounds(n_images: int, iterations: int, round_iterations: int) -> list[int]:
    """The round at which each of a class's ``n_images`` joins: near-equal consecutive groups, larger first."""
    rounds = max(math.ceil(iterations / round_iterations), 1)
    if n_images <= 1:
        return [0] * n_images
    sizes = [len(g) for g in np.array_split(np.arange(n_images), rounds)]
    return [g for g, size in enumerate(sizes) for _ in range(size)]


@torch.no_grad()
def median_confidence_images(
    teacher: torch.nn.Module, images: torch.Tensor, cls: int, k: int, *, batch_size: int = 512
) -> torch.Tensor:
    """The ``k`` images whose teacher probability of ``cls`` lies around the median (the middle of the ranking)."""
    if len(images) < k:
        raise ValueError(f"class {cls} has {len(images)} real images, fewer than ipc={k}")
    device = next(teacher.parameters()).device
    scores = torch.cat(
        [
            teacher(images[i : i + batch_size].to(device)).softmax(1)[:, cls].cpu()
            for i in range(0, len(images), batch_size)
        ]
    )
    return images[_middle(scores, k)]


@torch.no_grad()
def median_confidence_class(
    teacher: torch.nn.Module, dataset, cls: int, k: int, *, batch_size: int = 512, workers: int | None = None
) -> torch.Tensor:
    """:func:`median_confidence_images` of all of ``dataset``'s class ``cls``, without stacking the class (an
    ImageNet class is ~1300 images, 780 MB as float): it is scored a batch at a time through the loader, in the
    same batches, then only the ``k`` picks are decoded again. Same images, same order."""
    idx = dataset.class_indices(cls)
    if len(idx) < k:
        raise ValueError(f"class {cls} has {len(idx)} real images, fewer than ipc={k}")
    device = next(teacher.parameters()).device
    chunks = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    stream = batch_loader(dataset, chunks, workers=workers, device=device)
    scores = torch.cat([teacher(x.to(device, non_blocking=True)).softmax(1)[:, cls].cpu() for x, _ in stream])
    return dataset.batch(idx[_middle(scores, k)])[0]


def _middle(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` scores around the median, in ranking order (ties keep their order)."""
    order = torch.argsort(scores, stable=True)
    start = (len(scores) - k) // 2
    return order[start : start + k]


@register
@dataclass
class DELT(CDA):
    round_iterations: int = 500  # R: iterations per round; a new group of each class's images joins every R
    jitter: int = 0  # the release's scripts turn the roll off

    name = "delt"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.round_iterations < 1:
            raise ValueError(f"round_iterations must be >= 1; got {self.round_iterations}")

    def init_images(self, ctx: Context, unit: Unit, generator: torch.Generator) -> torch.Tensor:
        parts = []
        for c in unit.classes:
            key = ("delt_init", c)
            if key not in ctx.extra:  # one ranking pass per class, shared by the class's units
                ctx.extra[key] = median_confidence_class(ctx.teacher, ctx.dataset, c, ctx.config.ipc)
            parts.append(ctx.extra[key][list(unit.slots)])
        return torch.cat(parts)

    def active(self, ctx: Context, unit: Unit, iteration: int) -> torch.Tensor:
        """Indices (into the unit's class-major batch) of the images optimised at ``iteration``."""
        joins = join_rounds(ctx.config.ipc, ctx.config.iterations, self.round_iterations)
        per_class = [joins[s] for s in unit.slots]
        current = iteration // self.round_iterations
        mask = torch.tensor(per_class * len(unit.classes)) <= current
        return mask.nonzero().squeeze(1)

    def loss(
        self,
        ctx: Context,
        unit: Unit,
        images: torch.Tensor,
        labels: torch.Tensor,
        iteration: int,
        generator: torch.Generator,
    ) -> Step:
        idx = self.active(ctx, unit, iteration).to(images.device)
        active_labels = labels[idx]
        step = super().loss(ctx, unit, images[idx], active_labels, iteration, generator)
        step.labels = active_labels
        return step
