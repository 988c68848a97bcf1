"""DC-style evaluation (VICO-UoE/DatasetCondensation ``utils.py`` ``evaluate_synset``; MTT's evaluation in
GeorgeCazenavette/mtt-distillation ``distill.py``).

A fresh network (default the DC ConvNet) is trained on the synthetic set with hard
labels: cross-entropy, SGD (lr 0.01, momentum 0.9, weight decay 5e-4), batch 256,
DSA on every batch (per-sample, not Siamese), ``epochs`` epochs (published: 1000)
with the lr ×0.1 from epoch ⌊E/2⌋+1 on (epochs counted from 0), then tested once on
the whole test set. Several seeds give mean ± std (the papers: 100 models for
DC/DSA/DM). A set that carries MTT's learned ``syn_lr`` is trained with it as lr
unless ``lr`` is given, as MTT evaluates.

This sits beside the soft-label protocol of :mod:`dire.evaluation.soft` (teacher KD); the
two measure different things and their numbers must not be mixed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm  # text on stderr, in kernels too: `dire reproduce` streams it (a widget would not)

import dire.distributed as distributed
from dire.checks import check_numbers, non_finite
from dire.data import ImageDataset, from_uint8
from dire.data.dsa import DSA, STRATEGY
from dire.data.zca import ZCA
from dire.evaluation.common import SyntheticPixels, check_synthetic, ddp_key, per_seed, synthetic_digest
from dire.nets.models import build_model
from dire.nets.speed import autocast, precision_key, prepare_model, to_device
from dire.nets.train import EpochCheckpoint, accuracy


@dataclass(frozen=True)
class DCProtocol:
    epochs: int = 1000  # training epochs on the synthetic set (DC without augmentation: 300)
    lr: float | None = None  # None: the set's learned syn_lr (MTT) if it has one, else 0.01 (lr_net)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa: bool = True  # DSA augmentation on every training batch
    dsa_strategy: str = STRATEGY
    eval_every: int = 0  # also test every this many epochs (0 = only at the end, as published)

    def __post_init__(self) -> None:
        check_numbers(self, {"epochs": ">=1", "lr": ">0", "momentum": "[0,1)", "batch_size": ">=1"}, default=">=0")

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or (self.lr is not None and self.lr <= 0):
            raise ValueError(
                f"expected epochs >= 1, batch_size >= 1 and lr > 0 (or None); "
                f"got {self.epochs}, {self.batch_size}, {self.lr}"
            )


def learning_rate(synthetic: dict, protocol: DCProtocol) -> float:
    """The lr a set is trained with: ``protocol.lr``, else its learned ``syn_lr``, else 0.01."""
    if protocol.lr is not None:
        return protocol.lr
    if "syn_lr" in synthetic:
        lr = float(synthetic["syn_lr"])
        if not lr > 0:
            raise ValueError(f"the set's learned syn_lr is {lr}, not a usable lr; pass lr= explicitly")
        return lr
    return 0.01


def lr_at_epoch(lr: float, epoch: int, epochs: int) -> float:
    """The DC schedule: ``lr`` for epochs 0..⌊E/2⌋, then ``lr / 10``."""
    return lr * (0.1 if epoch >= epochs // 2 + 1 else 1.0)


class _Float32(nn.Module):
    """``module`` run in float32 even inside an autocast region."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


def train_dc(
    synthetic: dict,
    *,
    test_set: ImageDataset,
    arch: str = "convnet",
    seed: int = 0,
    protocol: DCProtocol = DCProtocol(),
    zca: ZCA | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    checkpoint: Path | None = None,
    precision: str = "fp32",
    ddp: bool = False,
) -> dict:
    """One network: returns ``{"final": acc, "best": acc, "history": [...], "lr": lr}`` (accuracy in %).

    ``zca``: the whitening the set was synthesised under (MTT with ZCA); training images and test images
    are whitened with it. ``checkpoint``: a file for epoch checkpoints (:class:`~dire.nets.train.EpochCheckpoint`),
    from which a killed run resumes. ``precision``: autocast of the forward pass and loss, and of the test
    evaluations (:func:`dire.nets.speed.autocast`); ZCA whitening (training and test images) and DSA stay
    float32. ``ddp`` (under torchrun; ignored outside it): every rank calls this with the same arguments and
    they train one network together, as :func:`dire.nets.train.fit` does (DSA on the whole batch, then each
    rank its slice); rank 0 alone writes ``checkpoint``.
    """
    protocol.validate()
    ddp = ddp and distributed.active()
    info = test_set.info
    images, labels = check_synthetic(synthetic, info)
    lr = learning_rate(synthetic, protocol)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(arch, num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size)
    net = prepare_model(net, device).train()
    # uint8 kept and decoded per batch (float is 4x the bytes); a ZCA set is whitened once, as float, since
    # whitening is a matrix product whose rounding could depend on how many rows it gets (MTT's sets are small)
    x_all = SyntheticPixels(images, info, device)
    y_all = to_device(labels, device)
    tested: nn.Module = net
    if zca is not None:
        zca = zca.to(device)
        with torch.no_grad():
            whitened = zca(from_uint8(images, info).to(device))
        x_all = _Whitened(whitened)
        tested = nn.Sequential(_Float32(zca), net)  # test images whitened as the training set was: in float32
    if ddp:
        distributed.check_batch_split(len(x_all), protocol.batch_size)
    augment = DSA(protocol.dsa_strategy) if protocol.dsa else None
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay)
    saver = EpochCheckpoint(checkpoint, net, generator)
    start, history = saver.restore(optimizer, device)
    trained = distributed.ddp_model(net, device) if ddp else net  # after restore: DDP starts from rank 0's weights
    epochs = range(start, protocol.epochs)
    for epoch in tqdm(epochs, desc=f"dc eval {arch} seed {seed}", unit="epoch", disable=not progress):
        finite = torch.ones((), dtype=torch.bool, device=device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at_epoch(lr, epoch, protocol.epochs)
        order = torch.randperm(len(x_all), generator=generator).to(device)
        for i in range(0, len(order), protocol.batch_size):
            idx = order[i : i + protocol.batch_size]
            x, y = x_all.batch(idx), y_all[idx]
            if augment is not None:
                x = augment(x, generator=generator)
            if ddp:
                x, y, weight = distributed.my_part(x, y)
            with autocast(device, precision):
                loss = F.cross_entropy(trained(x).float(), y)
            if ddp:
                loss = loss * weight
            finite &= torch.isfinite(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if not (distributed.all_true(bool(finite)) if ddp else bool(finite)):  # every rank stops, or none
            raise non_finite(f"DC student {arch} seed {seed}", f"epoch {epoch + 1} of {protocol.epochs}", lr=lr)
        last = epoch + 1 == protocol.epochs
        if last or (protocol.eval_every and (epoch + 1) % protocol.eval_every == 0):
            history.append({"epoch": epoch + 1, "acc": accuracy(tested, test_set, device=device, precision=precision)})
        if distributed.is_main() or not ddp:  # one writer of a shared network
            saver(epoch, optimizer, history)
    return {"final": history[-1]["acc"], "best": max(h["acc"] for h in history), "history": history, "lr": lr}


class _Whitened:
    """A whitened synthetic set (float, on the device) with :class:`SyntheticPixels`'s ``batch``."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]


def evaluate_dc(
    synthetic: dict,
    *,
    test_set: ImageDataset,
    seeds: Sequence[int] = (0, 1, 2),
    arch: str = "convnet",
    protocol: DCProtocol | None = None,
    zca: ZCA | None = None,
    device: str | torch.device = "cpu",
    cache_key: dict | None = None,
    runs_root: str | Path | None = None,
    progress: bool = False,
    precision: str = "fp32",
    ddp: bool = False,
    **protocol_overrides,
) -> dict:
    """Networks over ``seeds`` with the DC protocol; with ``cache_key`` each seed's result is cached under
    ``run_dir("student_dc", ...)``, so a rerun resumes. ``protocol_overrides`` replace fields of
    ``protocol`` (e.g. ``epochs=300``). ``precision`` (:func:`dire.nets.speed.autocast`) enters the cache key
    only when it resolves to bf16. ``ddp``: all ranks of torchrun train each seed's network together
    (:func:`train_dc`), recorded in the key as :func:`dire.evaluation.soft.evaluate_synthetic` does.

    Returns ``{"final": {mean, std, n}, "best": {mean, std, n}, "runs": [...], "protocol": "dc"}``.
    """
    protocol = dataclasses.replace(protocol or DCProtocol(), **protocol_overrides)
    protocol.validate()
    config = (
        None
        if cache_key is None
        else {
            "stage": "student_dc",
            **cache_key,
            "arch": arch,
            "protocol": dataclasses.asdict(protocol),
            "lr": learning_rate(synthetic, protocol),
            "zca": zca is not None,
            **precision_key(precision, device),
            **ddp_key(ddp),
        }
    )
    result = per_seed(
        seeds,
        lambda seed, checkpoint: train_dc(
            synthetic,
            test_set=test_set,
            arch=arch,
            seed=seed,
            protocol=protocol,
            zca=zca,
            device=device,
            progress=progress,
            checkpoint=checkpoint,
            precision=precision,
            ddp=ddp,
        ),
        stage="student_dc",
        digest=synthetic_digest(synthetic),
        config=config,
        runs_root=runs_root,
        together=ddp,
    )
    return {**result, "protocol": "dc"}
