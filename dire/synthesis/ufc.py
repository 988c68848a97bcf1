"""UFC / INFER: inter-class feature compensators (Zhang et al., "Breaking Class
Barriers: Efficient Dataset Distillation via Inter-Class Feature Compensator", ICLR 2025;
zhangxin-xd/UFC ``ufc_generation/``).

"One instance for all classes": each unit holds one real image of every class, and
per teacher architecture m a single learnable perturbation ``U_m`` [1, C, H, W]
(initialised to zeros) is *shared by all classes* and added to every real image. Only
the ``U_m`` are optimised, each against its own teacher:
``CE(teacher_m(roll(x_real + U_m)), y) + r_bn · R_BN`` (first BN ×10). The M problems
are independent (the loss is their sum and Adam is per element), so optimising them
in one unit equals M separate runs.

Storage budget: with M teachers and C classes, ``ipc_init = floor(IPC / (M/C + 1))``
real images per class, each stored plain and with every compensator added, so a
class has ``ipc_init · (M + 1)`` training images while the storage is
``ipc_init · C`` images + ``ipc_init · M`` compensators ≤ IPC · C (CIFAR-100, IPC 10, M 4:
9 real, 45 training images per class).

Students: soft labels are the mean logits of the M teachers, computed online on the
augmented, mixed batch (the release's "+Dyn"), with the epochs cut by 1/(M + 1) so the
student takes as many steps as on an IPC-sized set (80 instead of 400 on CIFAR).
Release settings (CIFAR): Adam (0.5, 0.9), lr 0.25, 1000 iterations, r_bn 1, roll
jitter 4; teachers ResNet-18, MobileNetV2, EfficientNet-B0, ShuffleNetV2.

With DiRe on, each compensator's images are regularised in their own teacher's
embedding space, against that teacher's real bank (one DiRe group per teacher).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dire.data.augment import random_roll
from dire.nets.models import features_and_logits
from dire.synthesis.base import Context, Method, Step, Unit, plan_units, real_init, register
from dire.synthesis.bn import BNStatistics


def ufc_ipc_init(ipc: int, num_teachers: int, num_classes: int) -> int:
    """Real images per class that keep real images + compensators within ``ipc`` images per class."""
    n = int(ipc // (num_teachers / num_classes + 1))
    if n < 1:
        raise ValueError(
            f"IPC {ipc} leaves no real image per class for {num_teachers} compensators over "
            f"{num_classes} classes; raise the IPC or use fewer teachers"
        )
    return n


@register
@dataclass
class UFC(Method):
    r_bn: float = 1.0  # BN-statistics weight (CIFAR 1; ImageNet 0.01)
    first_bn_multiplier: float = 10.0  # weight of the first BN layer's gap
    jitter: int = 4  # roll by U{0..jitter} px

    name = "ufc"
    default_teacher_set = "ufc-paper"

    def units(self, ctx: Context) -> list[Unit]:
        # the budget of the whole dataset's set, so a run of some classes makes that set's images of them
        n = ufc_ipc_init(ctx.config.ipc, len(ctx.teachers), ctx.info.num_classes)
        return plan_units(
            dataclasses.replace(ctx.config, ipc=n, ipc_per_unit=1, classes_per_unit=None), ctx.info.num_classes
        )

    def init_images(self, ctx: Context, unit: Unit, generator: torch.Generator) -> torch.Tensor:
        return torch.cat([real_init(ctx, c, unit.slots) for c in unit.classes])  # compensators act on real images

    def start_unit(
        self, ctx: Context, unit: Unit, images: torch.Tensor, generator: torch.Generator
    ) -> list[torch.Tensor]:
        self.real = images.detach()
        return [torch.zeros_like(images[:1]).requires_grad_() for _ in ctx.teachers]

    def images(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """The compensated images, teacher by teacher: [M · n, C, H, W]."""
        return torch.cat([self.real + u for u in params])

    def loss(
        self,
        ctx: Context,
        unit: Unit,
        images: torch.Tensor,
        labels: torch.Tensor,
        iteration: int,
        generator: torch.Generator,
    ) -> Step:
        n, steps = len(self.real), []
        for k, teacher in enumerate(ctx.teachers):
            x = random_roll(images[k * n : (k + 1) * n], self.jitter, generator)
            with BNStatistics(teacher) as bn:
                z, logits = features_and_logits(teacher, x)
                bn_loss = bn.loss(first_multiplier=self.first_bn_multiplier)
            loss = F.cross_entropy(logits, labels) + self.r_bn * bn_loss
            steps.append(Step(loss, z, labels=labels, bank=ctx.bank_of(k)))
        total = sum(s.loss for s in steps)
        return Step(
            total, steps[0].embeddings, labels=labels, bank=steps[0].bank, more=steps[1:], logs={"loss": total.detach()}
        )

    def after_step(self, ctx: Context, params: Sequence[torch.Tensor]) -> None:
        """No clamp on the compensators; stored images are clipped to valid pixels when quantised."""

    def stored(
        self, ctx: Context, unit: Unit, params: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The plain real images, then the real images plus each compensator."""
        return torch.cat([self.real, self.images(params)]), labels.repeat(len(params) + 1)

    def student_settings(self, num_teachers: int) -> dict:
        return {"ensemble": True, "epoch_scale": 1 / (num_teachers + 1)}
