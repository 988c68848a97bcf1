"""DM: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023;
VICO-UoE/DatasetCondensation ``main_DM.py``).

Each iteration draws a freshly initialised network (default the DC ConvNet, train mode,
``requires_grad_(False)``) and, for every class c, minimises

    || mean_i embed(DSA(real_c,i)) - mean_j embed(DSA(syn_c,j)) ||²

with ``batch_real`` random real images of c and one DSA seed shared by c's real and
synthetic batch (Siamese). Pixels are updated by SGD (``lr_img``, momentum 0.5) at a
constant learning rate, starting from real images.

Layout: the loss of a class involves only that class's images, so classes are
independent; a class's images must however be optimised together (their *mean* is
matched). DM therefore requires ``ipc_per_unit = ipc``; ``classes_per_unit`` is free
(default all classes: one unit, one fresh network per iteration shared by every
class, as the reference does).

Randomness: the network's initial weights, the real batches and the DSA seeds come
from the unit generator, so a run is reproducible and resumes exactly (the
reference reseeds from the wall clock instead).

DiRe: ``Step.embeddings`` are the synthetic embeddings of the matching forward pass
(augmented, in this iteration's network) and ``Step.bank`` is built from this
iteration's real embeddings of the same forward pass. The bank is rebuilt every
iteration because the network is: an embedding bank of another network (the
teacher's, or last iteration's) would sit in a different feature space, where
cosine and distance to the synthetic embeddings mean nothing. It costs no extra
forward pass (DM embeds these real images anyway) and, like the synthetic side, is
augmented with the class's Siamese transform.

Pixels are clamped to the valid range after each step (the loop's convention, since the set is
stored as 8-bit pixels; the reference does not clamp). Settings not used by DM: ``SynthesisConfig.lr``
and ``betas`` (the pixel optimiser is SGD with ``lr_img``); ``SynthesisConfig.init`` unless ``init=None``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from dire.data.dsa import DSA, STRATEGY
from dire.nets.models import build_model, features_and_logits
from dire.regularizer import RealBank
from dire.synthesis.base import Context, Method, Step, Unit, real_init, register


def fresh_network(model: str, ctx: Context, generator: torch.Generator) -> nn.Module:
    """A newly initialised ``model`` whose weights are seeded from ``generator`` (built on the CPU, so the
    same seed gives the same network on any device), frozen and in train mode."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    info = ctx.info
    with torch.random.fork_rng(devices=[]):  # leave the global RNG as it was
        torch.manual_seed(seed)
        net = build_model(model, num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size)
    return net.to(ctx.device).train().requires_grad_(False)


def mean_embedding_loss(
    net: nn.Module,
    real: Sequence[torch.Tensor],
    syn: Sequence[torch.Tensor],
    seeds: Sequence[int],
    augment: Callable[..., torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """DM's loss over classes: real[k] and syn[k] are class k's batches, augmented with ``seeds[k]``.

    Returns the loss summed over classes, the synthetic embeddings (classes concatenated in order) and
    each class's real embeddings (no gradient). One forward pass for all real and one for all synthetic
    images, so a class's terms do not depend on how many classes share the call.
    """
    if not len(real) == len(syn) == len(seeds):
        raise ValueError(
            f"expected one real batch, one synthetic batch and one seed per class; "
            f"got {len(real)}, {len(syn)}, {len(seeds)}"
        )
    if augment is not None:
        real = [augment(r, seed=s) for r, s in zip(real, seeds)]
        syn = [augment(x, seed=s) for x, s in zip(syn, seeds)]
    with torch.no_grad():
        z_real = features_and_logits(net, torch.cat(list(real)))[0].split([len(r) for r in real])
    z_syn = features_and_logits(net, torch.cat(list(syn)))[0]
    mu_syn = torch.stack([z.mean(0) for z in z_syn.split([len(x) for x in syn])])
    mu_real = torch.stack([z.mean(0) for z in z_real])
    return ((mu_real - mu_syn) ** 2).sum(), z_syn, list(z_real)


@register
@dataclass
class DM(Method):
    model: str = "convnet"  # the randomly initialised embedding network (DM: ConvNet-3, instance norm)
    lr_img: float = 1.0  # SGD lr on pixels (DM README: 1 for IPC 1/10/50, 10 for IPC >= 100)
    momentum: float = 0.5  # SGD momentum on pixels
    batch_real: int = 256  # real images per class per iteration
    dsa: bool = True  # Siamese DSA on real and synthetic batches
    dsa_strategy: str = STRATEGY  # DM's strategy for every dataset
    init: str | None = "real"  # "real" (DM) or "noise"; None = follow SynthesisConfig.init

    name = "dm"
    RANGES = {"lr_img": ">0", "momentum": "[0,1)", "batch_real": ">=1"}
    protocol = "dc"  # evaluated like the DC/DM/MTT papers: hard labels, SGD, DSA
    cosine_lr = False  # DM keeps lr_img constant
    own_bank = True  # the bank comes from this iteration's network (see the module docstring)

    def setup(self, ctx: Context) -> None:
        cfg = ctx.config
        if cfg.ipc_per_unit < cfg.ipc:
            raise ValueError(
                f"DM matches the mean embedding of all of a class's images, so they must be optimised "
                f"together: set ipc_per_unit = ipc ({cfg.ipc}); got ipc_per_unit={cfg.ipc_per_unit}"
            )
        if self.batch_real < 1 or self.lr_img <= 0:
            raise ValueError(f"expected batch_real >= 1 and lr_img > 0; got {self.batch_real}, {self.lr_img}")
        if self.init not in (None, "real", "noise"):
            raise ValueError(f"init must be 'real', 'noise' or None; got {self.init!r}")
        self._augment = DSA(self.dsa_strategy) if self.dsa else None

    def init_images(self, ctx: Context, unit: Unit, generator: torch.Generator) -> torch.Tensor:
        if self.init == "real":
            return torch.cat([real_init(ctx, c, unit.slots) for c in unit.classes])
        if self.init == "noise":
            info = ctx.info
            return torch.randn(
                len(unit.classes) * len(unit.slots),
                info.channels,
                info.image_size,
                info.image_size,
                generator=generator,
            )
        return super().init_images(ctx, unit, generator)

    def optimizer(self, ctx: Context, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr_img, momentum=self.momentum)

    def real_batch(self, ctx: Context, cls: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_real`` random real images of ``cls`` (the whole class if it has fewer), on the device."""
        key = ("dm_real", cls, str(ctx.device))
        if key not in ctx.extra:
            ctx.extra[key] = ctx.dataset.class_images(cls).to(ctx.device)
        pool = ctx.extra[key]
        idx = torch.randperm(len(pool), generator=generator)[: self.batch_real]
        return pool[idx.to(pool.device)]

    def loss(
        self,
        ctx: Context,
        unit: Unit,
        images: torch.Tensor,
        labels: torch.Tensor,
        iteration: int,
        generator: torch.Generator,
    ) -> Step:
        net = fresh_network(self.model, ctx, generator)
        real = [self.real_batch(ctx, c, generator) for c in unit.classes]
        seeds = [int(torch.randint(2**62, (1,), generator=generator)) for _ in unit.classes]
        syn = list(images.split(len(unit.slots)))  # class-major: each class's slots are contiguous
        loss, z_syn, z_real = mean_embedding_loss(net, real, syn, seeds, self._augment)

        def bank() -> RealBank:
            return RealBank.from_dict({c: z for c, z in zip(unit.classes, z_real)}, num_classes=ctx.info.num_classes)

        return Step(loss, z_syn, bank=bank, logs={"dm": loss.detach()})
