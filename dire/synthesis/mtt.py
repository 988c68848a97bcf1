"""MTT: Matching Training Trajectories (Cazenavette et al., CVPR 2022;
GeorgeCazenavette/mtt-distillation ``distill.py``).

Each iteration picks a random expert (see :mod:`dire.nets.experts`) and a start epoch
t ~ U{0..max_start_epoch-1}, starts a student at the expert's θ*_t and unrolls
``syn_steps`` SGD steps on synthetic minibatches (per-sample DSA) with a learnable
step size ``syn_lr``; the loss is

    ||θ̂_N - θ*_{t+M}||² / ||θ*_t - θ*_{t+M}||²,   M = expert_epochs,

back-propagated through the unrolled steps (``torch.func.functional_call`` on a flat
parameter vector) into the pixels and ``syn_lr``. Pixels: SGD(lr_img, momentum 0.5);
``syn_lr``: SGD(lr_lr, momentum 0.5); both at a constant lr. The learned ``syn_lr`` is
saved with the set (``synthetic["syn_lr"]``) and is the lr the DC evaluation uses.

Layout: the student trains on the whole synthetic set, so MTT is one unit holding
every class and every image (``ipc_per_unit = ipc``, ``classes_per_unit = None``).

DiRe acts on the embeddings of the **first** unrolled step's forward pass: the
synthetic minibatch (augmented) in the expert's own network θ*_t, the one network of
the unroll that is a well-defined point of the expert's trajectory (later steps sit
on the student's path, which changes as the images change). Its real bank is in that
same network: a fixed random sample of ``bank_per_class`` real images per class
(drawn once per run from the synthesis seed) is embedded with θ*_t every iteration,
because θ*_t changes from one iteration to the next. The bank costs one extra forward
pass of C × bank_per_class images, done only when DiRe is on.

With the experts' ZCA (``ExpertConfig.zca``), images are synthesised in whitened space
(as MTT does, unclamped) and stored un-whitened, as 8-bit pixels like every set here;
evaluate them with ``evaluate_dc(..., zca=Experts(...).zca())``. Without ZCA pixels are
clamped to the valid range after each step (the loop's convention; MTT does not clamp).

The settings table :data:`MTT_SETTINGS` holds the published per-dataset values (§8.2)
and rows of our own for Fashion-MNIST and digits (no published MTT path; see there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from dire.data.dsa import DSA, STRATEGY
from dire.nets.experts import Experts
from dire.nets.models import build_model, features_and_logits
from dire.regularizer import RealBank
from dire.synthesis.base import Context, Method, Step, Unit, pixel_bounds, plan_units, real_init, register

_KEYS = ("syn_steps", "expert_epochs", "max_start_epoch", "lr_img", "lr_lr", "lr_teacher", "zca", "batch_syn", "model")


def _row(*values) -> dict:
    return dict(zip(_KEYS, values))


# (dataset, IPC) -> settings; batch_syn None = all images. Published rows: DC-BENCH's author-provided
# commands (CIFAR, Tiny) and mtt#1 (ImageNet subsets: not a dataset here). lr_teacher is syn_lr's init.
MTT_SETTINGS: dict[tuple[str, int], dict] = {
    ("cifar10", 1): _row(50, 2, 2, 100, 1e-7, 0.01, True, None, "convnet"),
    ("cifar10", 10): _row(30, 2, 20, 100, 1e-5, 0.001, True, None, "convnet"),  # lr_img: 100-1000 stable (mtt#31)
    ("cifar10", 50): _row(30, 2, 40, 1000, 1e-5, 0.001, False, None, "convnet"),
    ("cifar100", 1): _row(20, 3, 20, 1000, 1e-5, 0.01, True, None, "convnet"),
    ("cifar100", 10): _row(20, 2, 20, 1000, 1e-5, 0.01, False, None, "convnet"),
    ("cifar100", 50): _row(80, 2, 40, 1000, 1e-5, 0.01, True, 125, "convnet"),
    ("tiny-imagenet", 1): _row(10, 2, 10, 10000, 1e-4, 0.01, False, None, "convnet_d4"),
    ("tiny-imagenet", 10): _row(20, 2, 40, 10000, 1e-4, 0.01, False, 200, "convnet_d4"),
    ("tiny-imagenet", 50): _row(20, 2, 40, 10000, 1e-4, 0.01, False, 300, "convnet_d4"),
    # Our own choice (MTT has no MNIST-like path): CIFAR-10's row at the same IPC, without ZCA (MNIST-like
    # results, e.g. FRePo's, use none), lr_img 100 (the stable end of mtt#31) and syn_lr starting at the
    # experts' own lr 0.01.
    ("fashion-mnist", 1): _row(50, 2, 2, 100, 1e-7, 0.01, False, None, "convnet"),
    ("fashion-mnist", 10): _row(30, 2, 20, 100, 1e-5, 0.01, False, None, "convnet"),
    ("fashion-mnist", 50): _row(30, 2, 40, 100, 1e-5, 0.01, False, None, "convnet"),
    # Our own choice for 8-px digits (tests, smoke runs): short unrolls over short experts (>= 2 epochs), and
    # the ConvNet without normalisation: with instance norm on the last block's 2×2 maps the unrolled
    # gradients are erratic (a step along -grad does not lower the loss) and MTT does not learn.
    **{("digits", ipc): _row(5, 1, 2, 100, 1e-5, 0.01, False, None, "convnet_nn") for ipc in (1, 5, 10)},
}


def mtt_settings(dataset: str, ipc: int) -> dict:
    """The row of :data:`MTT_SETTINGS`; ``zca`` and ``model`` are expert settings (``ExpertConfig``), the rest
    are :class:`MTT` fields."""
    if (dataset, ipc) not in MTT_SETTINGS:
        raise ValueError(f"no MTT settings for {dataset!r} at IPC {ipc}; rows exist for {sorted(MTT_SETTINGS)}")
    return dict(MTT_SETTINGS[(dataset, ipc)])


def method_settings(dataset: str, ipc: int) -> dict:
    """The :class:`MTT` fields of a settings row."""
    return {k: v for k, v in mtt_settings(dataset, ipc).items() if k not in ("zca", "model")}


class _EmbedAndLogits(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return features_and_logits(self.net, x)


@register
@dataclass
class MTT(Method):
    experts_dir: str = ""  # folder written by dire.nets.experts.train_experts; the pipeline passes ctx.experts instead
    num_experts: int | None = None  # use the first k experts; None = all finished ones
    syn_steps: int = 20  # unrolled student steps N per iteration
    expert_epochs: int = 2  # M: target = θ*_{t+M}
    max_start_epoch: int = 20  # t ~ U{0..max_start_epoch-1}
    lr_img: float = 1000.0  # SGD lr on pixels
    lr_lr: float = 1e-5  # SGD lr on syn_lr
    lr_teacher: float = 0.01  # initial syn_lr
    batch_syn: int | None = None  # student minibatch; None = all synthetic images
    momentum: float = 0.5  # SGD momentum for pixels and syn_lr
    dsa: bool = True  # per-sample DSA on every student batch
    dsa_strategy: str = STRATEGY
    bank_per_class: int = 64  # real images per class embedded with θ*_t for DiRe's bank
    init: str | None = "real"  # "real" (MTT pix_init) or "noise"; None = follow SynthesisConfig.init

    name = "mtt"
    RANGES = {
        "num_experts": ">=1",
        "syn_steps": ">=1",
        "expert_epochs": ">=1",
        "max_start_epoch": ">=1",
        "lr_img": ">0",
        "lr_teacher": ">0",
        "momentum": "[0,1)",
        "batch_syn": ">=1",
        "bank_per_class": ">=1",
    }
    protocol = "dc"  # evaluated like the DC/DM/MTT papers: hard labels, SGD, DSA
    cosine_lr = False
    needs_experts = True  # the pipeline trains (or loads) the experts and passes them in ctx.experts
    own_bank = True  # the bank is embedded with each iteration's θ*_t (see the module docstring)

    @classmethod
    def dataset_defaults(cls, dataset: str, ipc: int) -> dict:
        """The :data:`MTT_SETTINGS` row's method fields, where the table has one."""
        return method_settings(dataset, ipc) if (dataset, ipc) in MTT_SETTINGS else {}

    def units(self, ctx: Context) -> list[Unit]:
        """One unit, the whole set: the student unrolls over all synthetic images, whatever layout the shared
        settings give the SRe2L family."""
        whole = dataclasses.replace(ctx.config, ipc_per_unit=ctx.config.ipc, classes_per_unit=None)
        return plan_units(whole, ctx.info.num_classes)

    def setup(self, ctx: Context) -> None:
        if self.syn_steps < 1 or self.expert_epochs < 1 or self.max_start_epoch < 1:
            raise ValueError(
                f"expected syn_steps, expert_epochs, max_start_epoch >= 1; got {self.syn_steps}, "
                f"{self.expert_epochs}, {self.max_start_epoch}"
            )
        if self.init not in (None, "real", "noise"):
            raise ValueError(f"init must be 'real', 'noise' or None; got {self.init!r}")
        if ctx.experts is not None:
            self._experts = ctx.experts
        elif self.experts_dir:
            self._experts = Experts(self.experts_dir, limit=self.num_experts)
        else:
            raise ValueError(
                "MTT needs expert trajectories: pass ctx.experts (dire.nets.experts.Experts) or set "
                "experts_dir to a folder written by dire.nets.experts.train_experts"
            )
        if self._experts.dataset != ctx.info.name:
            raise ValueError(
                f"the experts in {self._experts.folder} were trained on {self._experts.dataset!r}, "
                f"not {ctx.info.name!r}"
            )
        if self.max_start_epoch - 1 + self.expert_epochs > self._experts.epochs:
            raise ValueError(
                f"max_start_epoch - 1 + expert_epochs = {self.max_start_epoch - 1 + self.expert_epochs} "
                f"exceeds the experts' {self._experts.epochs} epochs; train longer experts or lower them"
            )
        info = ctx.info
        net = build_model(
            self._experts.config.model,
            num_classes=info.num_classes,
            in_channels=info.channels,
            image_size=info.image_size,
        )
        self._wrapper = _EmbedAndLogits(net).to(ctx.device).train().requires_grad_(False)
        named = list(self._wrapper.named_parameters())
        self._names = [n for n, _ in named]
        self._shapes = [p.shape for _, p in named]
        self._numels = [p.numel() for _, p in named]
        if sum(self._numels) != self._experts.trajectory(0).shape[1]:
            raise ValueError(
                f"the experts have {self._experts.trajectory(0).shape[1]} parameters but "
                f"{self._experts.config.model} has {sum(self._numels)}"
            )
        zca = self._experts.zca()
        self._zca = zca.to(ctx.device) if zca is not None else None
        self._augment = DSA(self.dsa_strategy) if self.dsa else None
        self._bank_images, self._bank_labels = self._real_sample(ctx)

    def _real_sample(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """``bank_per_class`` random real images per class (fixed for the run), whitened like the experts' data."""
        xs, ys = [], []
        for c in range(ctx.info.num_classes):
            g = torch.Generator().manual_seed(ctx.config.seed * 1_000_003 + 7919 + c)
            x = ctx.dataset.class_images(c, limit=self.bank_per_class, generator=g)
            xs.append(x)
            ys.append(torch.full((len(x),), c))
        x = torch.cat(xs).to(ctx.device)
        return (self._zca(x) if self._zca is not None else x), torch.cat(ys).to(ctx.device)

    def init_images(self, ctx: Context, unit: Unit, generator: torch.Generator) -> torch.Tensor:
        if self.init == "real":
            x = torch.cat([real_init(ctx, c, unit.slots) for c in unit.classes])
        elif self.init == "noise":
            info = ctx.info
            x = torch.randn(
                len(unit.classes) * len(unit.slots),
                info.channels,
                info.image_size,
                info.image_size,
                generator=generator,
            )
        else:
            x = super().init_images(ctx, unit, generator)
        return self._zca(x.to(ctx.device)) if self._zca is not None else x

    def start_unit(
        self, ctx: Context, unit: Unit, images: torch.Tensor, generator: torch.Generator
    ) -> list[torch.Tensor]:
        # the optimiser updates syn_lr in place, so loss() reads the current value through this reference
        self._syn_lr = torch.tensor(float(self.lr_teacher), device=images.device).requires_grad_()
        return [images.requires_grad_(), self._syn_lr]

    def optimizer(self, ctx: Context, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            [{"params": [params[0]], "lr": self.lr_img}, {"params": [params[1]], "lr": self.lr_lr}],
            lr=self.lr_img,
            momentum=self.momentum,
        )

    @torch.no_grad()
    def after_step(self, ctx: Context, params: Sequence[torch.Tensor]) -> None:
        if self._zca is None:  # whitened images have no pixel range to clamp to
            lo, hi = pixel_bounds(ctx, params[0].device)
            params[0].copy_(torch.maximum(torch.minimum(params[0], hi), lo))

    def stored(
        self, ctx: Context, unit: Unit, params: Sequence[torch.Tensor], labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = params[0]
        return (self._zca.inverse(images) if self._zca is not None else images), labels

    def extras(self, ctx: Context, unit: Unit, params: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"syn_lr": params[1].detach().clone()}

    def _forward(self, flat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tensors = flat.split(self._numels)
        params = {n: t.view(s) for n, t, s in zip(self._names, tensors, self._shapes)}
        return functional_call(self._wrapper, params, (x,))

    def trajectory_loss(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        syn_lr: torch.Tensor,
        expert: int,
        start_epoch: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The normalised trajectory-matching loss from expert ``expert``'s epoch ``start_epoch``.

        Returns (loss, embeddings and labels of the first unrolled step's batch, θ*_t).
        """
        trajectory = self._experts.trajectory(expert)
        start = trajectory[start_epoch].to(images.device)
        target = trajectory[start_epoch + self.expert_epochs].to(images.device)
        with torch.enable_grad():  # the unroll differentiates even when the caller only evaluates
            return self._unroll(images, labels, syn_lr, start, target, expert, start_epoch, generator)

    def _unroll(self, images, labels, syn_lr, start, target, expert, start_epoch, generator):
        n = len(images)
        batch = min(self.batch_syn or n, n)
        w = start.clone().requires_grad_(True)
        order = torch.empty(0, dtype=torch.long)
        first = None
        for _ in range(self.syn_steps):
            if len(order) < batch:  # a fresh permutation once the current one is used up
                order = torch.cat([order, torch.randperm(n, generator=generator)])
            idx, order = order[:batch].to(images.device), order[batch:]
            x, y = images[idx], labels[idx]
            if self._augment is not None:
                x = self._augment(x, generator=generator)
            z, logits = self._forward(w, x)
            if first is None:
                first = (z, y)
            grad = torch.autograd.grad(F.cross_entropy(logits, y), w, create_graph=True)[0]
            w = w - syn_lr * grad
        span = ((start - target) ** 2).sum()
        if not span > 0:
            raise ValueError(
                f"expert {expert} did not move between epochs {start_epoch} and "
                f"{start_epoch + self.expert_epochs}; check the experts"
            )
        return ((w - target) ** 2).sum() / span, first[0], first[1], start

    def loss(
        self,
        ctx: Context,
        unit: Unit,
        images: torch.Tensor,
        labels: torch.Tensor,
        iteration: int,
        generator: torch.Generator,
    ) -> Step:
        expert = int(torch.randint(len(self._experts), (1,), generator=generator))
        start_epoch = int(torch.randint(self.max_start_epoch, (1,), generator=generator))
        loss, z, y, theta = self.trajectory_loss(images, labels, self._syn_lr, expert, start_epoch, generator)
        return Step(
            loss,
            z,
            labels=y,
            bank=lambda: self.bank(ctx, theta),
            logs={"mtt": loss.detach(), "syn_lr": self._syn_lr.detach().clone()},
        )

    def bank(self, ctx: Context, theta: torch.Tensor) -> RealBank:
        """The fixed real sample embedded with θ (no gradient), grouped by class."""
        with torch.no_grad():
            z, _ = self._forward(theta, self._bank_images)
        return RealBank.from_dict(
            {c: z[self._bank_labels == c] for c in range(ctx.info.num_classes)}, num_classes=ctx.info.num_classes
        )
