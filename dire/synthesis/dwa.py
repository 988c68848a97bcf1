"""DWA: directed weight adjustment (Du et al., NeurIPS 2024, "Diversity-Driven Synthesis";
AngusDujw/Diversity-Driven-Synthesis ``distillation/``).

SRe2L recover with three changes:

1. real-image init (one real image per class per batch in the release);
2. before each unit, a *copy* of the teacher is perturbed by ``steps`` (K) normalised
   ascent steps on the CE loss of the unit's jittered initial batch, each moving the
   weights by ``(rho / K) · g / ||g||`` with ``||g||`` the global gradient norm over all
   parameters. The perturbation is computed once, at iteration 0, and kept for the
   whole unit, so every unit sees a differently perturbed teacher. The copy is in
   eval mode (BN running statistics unchanged) and the cached teacher is never
   modified in place (release: ``Perterb(rho=rho/steps)``, ``first_step`` K times at
   iteration 0 of each batch, read in AngusDujw/Diversity-Driven-Synthesis
   ``distillation/``);
3. the BN loss weights each layer's variance gap by ``r_var`` (11 on CIFAR/Tiny, 2 on
   ImageNet).

Defaults are the release's CIFAR settings: rho 15e-3, K 12, r_var 11, r_bn 0.01,
roll jitter 4 (lr 0.25 and 1000 iterations live in ``SynthesisConfig``). With DiRe
on, the embeddings come from the perturbed copy's forward pass, against the bank of
the unperturbed teacher: a radius of 0.015 over all weights moves embeddings far
less than the gap DiRe acts on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from dire.data.augment import random_roll
from dire.synthesis.base import Context, Unit, real_init, register
from dire.synthesis.sre2l import SRe2L


def perturb_weights(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, rho: float = 15e-3, steps: int = 12
) -> nn.Module:
    """A copy of ``model`` moved by ``steps`` normalised CE-ascent steps of length ``rho / steps`` each
    (so the total displacement has norm at most ``rho``, exactly ``rho`` when ``steps == 1``)."""
    if rho < 0 or steps < 1:
        raise ValueError(f"expected rho >= 0 and steps >= 1; got rho={rho}, steps={steps}")
    perturbed = copy.deepcopy(model).eval()
    params = [p for p in perturbed.parameters()]
    for p in params:
        p.requires_grad_(True)
    for _ in range(steps):
        grads = torch.autograd.grad(F.cross_entropy(perturbed(x), y), params, allow_unused=True)
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads if g is not None]))
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.add_(g, alpha=rho / steps / (float(norm) + 1e-12))
    return perturbed.requires_grad_(False)


@register
@dataclass
class DWA(SRe2L):
    rho: float = 15e-3  # total radius of the weight perturbation (all datasets in the release)
    steps: int = 12  # K normalised ascent steps (ImageNet 15)
    r_var: float = 11.0  # variance-gap weight in the BN loss (ImageNet 2)

    name = "dwa"
    RANGES = {"steps": ">=1"}

    def init_images(self, ctx: Context, unit: Unit, generator: torch.Generator) -> torch.Tensor:
        return torch.cat([real_init(ctx, c, unit.slots) for c in unit.classes])  # DWA always starts from real images

    def start_unit(
        self, ctx: Context, unit: Unit, images: torch.Tensor, generator: torch.Generator
    ) -> list[torch.Tensor]:
        jittered = random_roll(images, self.jitter, generator, symmetric=self.symmetric_jitter)
        ctx.extra["dwa_teacher"] = perturb_weights(
            ctx.teacher, jittered, unit.labels(images.device), rho=self.rho, steps=self.steps
        )
        return super().start_unit(ctx, unit, images, generator)

    def teacher(self, ctx: Context) -> nn.Module:
        return ctx.extra["dwa_teacher"]

    def end_unit(self, ctx: Context, unit: Unit) -> None:
        ctx.extra.pop("dwa_teacher", None)
