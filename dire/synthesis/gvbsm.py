"""G-VBSM: generalized various backbone and statistical matching (Shao et al., CVPR 2024;
shaoshitong/G_VBSM_Dataset_Condensation ``Branch_CIFAR_100/recover``).

Delta from SRe2L (read in shaoshitong/G_VBSM_Dataset_Condensation, ``Branch_CIFAR_100/recover``):

1. **Several teachers, round-robin**: iteration t matches teacher ``t mod M`` (the
   release: ResNet-18, ConvNet-W128, MobileNetV2, WRN-16-2, ShuffleNetV2-0.5 on CIFAR-100).
2. **Statistics matching on BN and Conv inputs.** Every BN layer's input is matched to
   its running mean/variance; every Conv2d layer's input to the real data's channel
   mean/variance *and patch statistics*: the feature map is resized (bilinear) to the
   next multiple of 4 and cut into 4×4 blocks; mean and variance per block location
   are taken over (batch, channel, the block's 16 pixels). The real targets are the
   batch-size-weighted average of batch statistics over the training set, computed
   once per teacher and cached (:func:`conv_statistics`). Each Conv term is dropped
   with probability ``drop_rate`` per forward. On the synthetic side each statistic is
   an EMA over iterations, ``ema = α·ema + (1 − α)·current``, whose *value* is matched
   while the gradient flows through the current batch (``ema + cur − cur.detach()``);
   BN terms use the same trick. A layer's term is the sum of plain L2 norms of the
   gaps; the first hooked layer is weighted ×``first_multiplier``.
3. **Data densification (DD)**: per class in the batch, the eigenvalues λ of the Gram
   matrix of the flattened images (adaptive-pooled to 32×32) are pushed towards a
   flatter spectrum: ``KL(softmax(λ/τ) ‖ softmax(λ))`` with the target detached, τ = 4,
   summed over classes, weight ``dd_weight``.
4. **Class-major batches**: 100/IPC classes × all IPC images (``ipc_per_unit = ipc``,
   ``classes_per_unit = 100 // ipc``), needed by DD.
5. Augmentation: one RandomCrop(pad 4) and one horizontal flip for the whole batch (as
   torchvision applies them to a batched tensor), then a roll by U{0..jitter}.

Release settings (CIFAR-100): lr 0.05, 4000 iterations (``SynthesisConfig``), r_loss 0.01,
jitter 32, α 0.8, drop rate 0.4, DD weight 1.0, τ 4, noise init; students are trained
with ``MSE(student logits, mean teacher logits) + 0.15·CE`` (:meth:`GVBSM.student_settings`).

Deviations: the EMA state restarts with each unit (the release keeps it across batches),
so units are independent and resumable; the round-robin counter restarts too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dire.nets.models import features_and_logits
from dire.runs import atomic_save, load
from dire.synthesis.base import Context, Method, Step, Unit, register

STATS = ("mean", "var", "patch_mean", "patch_var")


def feature_statistics(x: torch.Tensor, *, patch: int = 4) -> dict[str, torch.Tensor]:
    """Channel mean/variance over (N, H, W) and per-block-location mean/variance over (N, C, patch²)
    of a feature map [N, C, H, W] resized (bilinear) to the next multiple of ``patch``."""
    n, c, h, w = x.shape
    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    hh, ww = patch * math.ceil(h / patch), patch * math.ceil(w / patch)
    if (hh, ww) != (h, w):
        x = F.interpolate(x, size=(hh, ww), mode="bilinear", align_corners=False)
    blocks = (
        x.reshape(n, c, hh // patch, patch, ww // patch, patch)
        .permute(2, 4, 0, 1, 3, 5)
        .reshape((hh // patch) * (ww // patch), -1)
    )
    return {"mean": mean, "var": var, "patch_mean": blocks.mean(1), "patch_var": blocks.var(1, unbiased=False)}


def _conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def conv_statistics(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 64,
    max_images: int | None = None,
    device: str | torch.device = "cpu",
    cache: str | Path | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Real-data targets of every Conv2d input of ``model``: batch statistics averaged over the training set
    (weighted by batch size), in module order; cached at ``cache`` when given."""
    if cache is not None and Path(cache).exists():
        return load(cache)
    layers = _conv_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer to match statistics on")
    sums: list[dict | None] = [None] * len(layers)
    count = 0

    def hook(i):
        def fn(_m, inputs, _out):
            stats = feature_statistics(inputs[0])
            b = len(inputs[0])
            sums[i] = (
                {k: v * b for k, v in stats.items()}
                if sums[i] is None
                else {k: sums[i][k] + v * b for k, v in stats.items()}
            )

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        total = len(dataset) if max_images is None else min(max_images, len(dataset))
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:total]
        for start in range(0, total, batch_size):
            x, _ = dataset.batch(order[start : start + batch_size])
            model(x.to(device))
            count += len(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    result = [{k: (v / count).cpu() for k, v in s.items()} for s in sums]
    if cache is not None:
        atomic_save(result, cache)
    return result


class StatisticsMatcher:
    """Hooks on one teacher's BN and Conv2d inputs that score the next forward against the targets,
    with the EMA straight-through trick and random dropping of Conv terms."""

    def __init__(
        self,
        model: nn.Module,
        conv_targets: list[dict[str, torch.Tensor]],
        *,
        momentum: float = 0.8,
        drop_rate: float = 0.4,
    ):
        self.layers = [
            (m, "bn") if isinstance(m, nn.BatchNorm2d) else (m, "conv")
            for m in model.modules()
            if isinstance(m, (nn.BatchNorm2d, nn.Conv2d))
        ]
        convs = [m for m, kind in self.layers if kind == "conv"]
        if len(convs) != len(conv_targets):
            raise ValueError(f"got statistics for {len(conv_targets)} conv layers but the model has {len(convs)}")
        conv_index = {id(m): i for i, m in enumerate(convs)}
        self.targets = [conv_targets[conv_index[id(m)]] if kind == "conv" else None for m, kind in self.layers]
        self.momentum, self.drop_rate = momentum, drop_rate
        self.ema: list[dict | None] = [None] * len(self.layers)
        self.terms: list[torch.Tensor] = []
        self.keep: list[bool] = [True] * len(self.layers)
        self._handles = []

    def reset(self) -> None:
        self.ema = [None] * len(self.layers)

    def _term(self, i: int, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.layers[i][1] == "bn":
            current = {"mean": x.mean(dim=(0, 2, 3)), "var": x.var(dim=(0, 2, 3), unbiased=False)}
            target = {"mean": module.running_mean, "var": module.running_var}
        else:
            current = feature_statistics(x)
            target = {k: v.to(x.device) for k, v in self.targets[i].items()}
        with torch.no_grad():
            prev = self.ema[i]
            self.ema[i] = {
                k: v.detach() if prev is None else self.momentum * prev[k] + (1 - self.momentum) * v.detach()
                for k, v in current.items()
            }
        return sum(torch.linalg.vector_norm(target[k] - (self.ema[i][k] + v - v.detach())) for k, v in current.items())

    def __enter__(self) -> StatisticsMatcher:
        self.terms = [torch.zeros(())] * len(self.layers)

        def hook(i):
            def fn(module, inputs, _out):
                if self.keep[i]:
                    self.terms[i] = self._term(i, module, inputs[0])

            return fn

        self._handles = [m.register_forward_hook(hook(i)) for i, (m, _) in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def draw_drops(self, generator: torch.Generator) -> None:
        """Drop each Conv term with probability ``drop_rate`` for the next forward (BN terms are always kept)."""
        u = torch.rand(len(self.layers), generator=generator)
        self.keep = [kind == "bn" or float(u[i]) >= self.drop_rate for i, (_, kind) in enumerate(self.layers)]

    def loss(self, *, first_multiplier: float = 10.0) -> torch.Tensor:
        weights = [first_multiplier] + [1.0] * (len(self.terms) - 1)
        return sum(w * t for w, t in zip(weights, self.terms))


def densification_loss(x: torch.Tensor, labels: torch.Tensor, *, tau: float = 4.0, size: int = 32) -> torch.Tensor:
    """Σ_c KL(softmax(λ_c/τ) ‖ softmax(λ_c)) over the classes in the batch, λ_c the eigenvalues of the Gram
    matrix of class c's images pooled to ``size``×``size`` and flattened; the flatter target is detached."""
    flat = F.adaptive_avg_pool2d(x, size).flatten(1)
    total = x.new_zeros(())
    for c in labels.unique():
        xc = flat[labels == c]
        if len(xc) < 2:
            continue
        lam = torch.linalg.eigvalsh(xc @ xc.T)
        target = (lam / tau).softmax(0).detach()
        total = total + F.kl_div(lam.log_softmax(0), target, reduction="sum")
    return total


@register
@dataclass
class GVBSM(Method):
    r_loss: float = 0.01  # weight of the BN + Conv statistics terms
    first_multiplier: float = 10.0  # weight of the first hooked layer
    momentum: float = 0.8  # α: EMA of the synthetic statistics across iterations
    drop_rate: float = 0.4  # probability of dropping each Conv term per forward
    dd_weight: float = 1.0  # data-densification weight (the release's nuc_norm for CIFAR-100)
    tau: float = 4.0  # DD temperature
    jitter: int = 32  # roll by U{0..jitter} px
    crop_padding: int = 4  # one RandomCrop(size, padding) for the whole batch; 0 = off
    flip: bool = True  # one horizontal flip with p 0.5 for the whole batch
    stats_images: int | None = None  # real images used for the Conv targets (None = the whole training set)

    name = "gvbsm"
    RANGES = {"momentum": "[0,1]", "drop_rate": "[0,1)", "tau": ">0", "stats_images": ">=1"}
    default_teacher_set = "gvbsm-paper"

    def setup(self, ctx: Context) -> None:
        cache = None if ctx.cache_dir is None else Path(ctx.cache_dir)
        self.matchers = []
        for i, teacher in enumerate(ctx.teachers):
            path = None if cache is None else cache / f"gvbsm_conv_statistics_{i}_{self.stats_images}.pt"
            targets = conv_statistics(teacher, ctx.dataset, max_images=self.stats_images, device=ctx.device, cache=path)
            self.matchers.append(StatisticsMatcher(teacher, targets, momentum=self.momentum, drop_rate=self.drop_rate))

    def start_unit(
        self, ctx: Context, unit: Unit, images: torch.Tensor, generator: torch.Generator
    ) -> list[torch.Tensor]:
        for m in self.matchers:
            m.reset()
        return super().start_unit(ctx, unit, images, generator)

    def unit_state(self, ctx: Context, unit: Unit) -> dict:
        return {"ema": [m.ema for m in self.matchers]}  # the running statistics of each teacher's matcher

    def load_unit_state(self, ctx: Context, unit: Unit, state: dict) -> None:
        for matcher, ema in zip(self.matchers, state["ema"]):
            matcher.ema = ema

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.crop_padding > 0:
            p, (h, w) = self.crop_padding, x.shape[-2:]
            dy, dx = (int(v) for v in torch.randint(0, 2 * p + 1, (2,), generator=generator))
            x = F.pad(x, (p, p, p, p))[..., dy : dy + h, dx : dx + w]
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            x = x.flip(3)
        shifts = tuple(int(v) for v in torch.randint(0, self.jitter + 1, (2,), generator=generator))
        return torch.roll(x, shifts=shifts, dims=(2, 3))

    def loss(
        self,
        ctx: Context,
        unit: Unit,
        images: torch.Tensor,
        labels: torch.Tensor,
        iteration: int,
        generator: torch.Generator,
    ) -> Step:
        k = iteration % len(ctx.teachers)  # round-robin over the teachers
        teacher, matcher = ctx.teachers[k], self.matchers[k]
        x = self.augment(images, generator)
        matcher.draw_drops(generator)
        with matcher:
            z, logits = features_and_logits(teacher, x)
            stats = matcher.loss(first_multiplier=self.first_multiplier)
        ce = F.cross_entropy(logits, labels)
        dd = densification_loss(x, labels, tau=self.tau) if self.dd_weight else x.new_zeros(())
        loss = ce + self.r_loss * stats + self.dd_weight * dd
        return Step(loss, z, bank=ctx.bank_of(k), logs={"ce": ce.detach(), "stats": stats.detach(), "dd": dd.detach()})

    def student_settings(self, num_teachers: int) -> dict:
        return {"ensemble": True, "loss": "mse_ce"}
