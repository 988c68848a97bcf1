"""SRe2L recover (Yin, Xing, Shen, "Squeeze, Recover and Relabel", NeurIPS 2023;
VILA-Lab/SRe2L ``SRe2L/*small_dataset/recover``).

Loss on the augmented batch: ``CE(teacher(x_aug), y) + r_bn * R_BN`` with R_BN the
BN-statistics loss (first BN ×10). Augmentation: optional RandomResizedCrop and
flip (Tiny-ImageNet, ImageNet), then a circular roll ("jitter"). CIFAR recover
uses the roll alone, one-sided U{0..4}.

Deviations from the release: images are kept as tensors and stored as 8-bit
pixels (lossless) instead of JPEG; the last iterate is kept (as the release does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dire.data.augment import random_flip, random_resized_crop, random_roll
from dire.nets.models import features_and_logits
from dire.synthesis.base import Context, Method, Step, Unit, register
from dire.synthesis.bn import BNStatistics


@register
@dataclass
class SRe2L(Method):
    r_bn: float = 0.01  # BN-statistics weight (CIFAR 0.01; Tiny 1.0; the DiRe release 1.0)
    first_bn_multiplier: float = 10.0  # weight of the first BN layer's gap
    jitter: int = 4  # circular-roll range in pixels (ImageNet 32)
    symmetric_jitter: bool = False  # roll by U{-j..j} (Tiny) instead of U{0..j} (CIFAR, ImageNet)
    crop_scale: tuple[float, float] | None = None  # RandomResizedCrop scale; None = no crop (CIFAR)
    flip: bool = False  # random horizontal flip (Tiny, ImageNet)
    r_var: float = 1.0  # weight of the variance gap inside each layer's term (DWA uses 11)

    name = "sre2l"

    def crop_scale_at(self, ctx: Context, iteration: int) -> tuple[float, float] | None:
        """RandomResizedCrop scale at ``iteration``; fixed for SRe2L, a curriculum for CDA."""
        return self.crop_scale

    def augment(self, ctx: Context, images: torch.Tensor, iteration: int, generator: torch.Generator) -> torch.Tensor:
        x = images
        scale = self.crop_scale_at(ctx, iteration)
        if scale is not None:
            x = random_resized_crop(x, generator, scale=scale)
        if self.flip:
            x = random_flip(x, generator, per_sample=False)
        return random_roll(x, self.jitter, generator, symmetric=self.symmetric_jitter)

    def teacher(self, ctx: Context) -> torch.nn.Module:
        """The network this unit matches (DWA swaps in a perturbed copy)."""
        return ctx.teacher

    def loss(
        self,
        ctx: Context,
        unit: Unit,
        images: torch.Tensor,
        labels: torch.Tensor,
        iteration: int,
        generator: torch.Generator,
    ) -> Step:
        x = self.augment(ctx, images, iteration, generator)
        teacher = self.teacher(ctx)
        with BNStatistics(teacher, r_var=self.r_var) as bn:
            z, logits = features_and_logits(teacher, x)
            bn_loss = bn.loss(first_multiplier=self.first_bn_multiplier)
        ce = F.cross_entropy(logits, labels)
        return Step(ce + self.r_bn * bn_loss, z, logs={"ce": ce.detach(), "bn": bn_loss.detach()})
