"""Soft-label evaluation: train a student on a synthetic set with teacher soft labels.

The teacher (eval mode; for G-VBSM and UFC the mean of several teachers) labels
each augmented, mixed batch online; the student minimises KL at temperature T (no
T² factor), AdamW, cosine (SRe2L relabel; DIL-IITH/DiRe ``relabel_cifar.py``), or G-VBSM's MSE on logits +
0.15 CE (``Recipe.loss``). The release leaves the CIFAR teacher in train mode while relabelling;
here it is in eval mode (as UFC does), so soft labels do not depend on the batch.
Reports the final and the best test accuracy over evaluations; several seeds give
mean ± std.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm  # text on stderr, in kernels too: `dire reproduce` streams it (a widget would not)

import dire.distributed as distributed
from dire.data import ImageDataset
from dire.evaluation.common import SyntheticPixels, check_synthetic, ddp_key, per_seed, synthetic_digest
from dire.nets.models import build_model
from dire.nets.speed import precision_key, prepare_model, to_device
from dire.nets.train import (
    EpochCheckpoint,
    Recipe,
    accuracy,
    fit,
    get_recipe,
    make_optimizer,
    recipe_key,
    soft_label_loss,
)


def train_student(
    synthetic: dict,
    *,
    teacher: nn.Module,
    test_set: ImageDataset,
    arch: str = "convnet",
    recipe: str | Recipe = "cpu",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    checkpoint: Path | None = None,
    precision: str = "fp32",
    ddp: bool = False,
    **recipe_overrides,
) -> dict:
    """One student: returns ``{"final": acc, "best": acc, "history": [...]}`` (accuracy in %). With
    ``checkpoint`` (a file) it saves its state at epoch ends (:class:`dire.nets.train.EpochCheckpoint`) and
    resumes from it. ``precision``: autocast of the student's and the teacher's forward passes and of the test
    evaluations (:func:`dire.nets.speed.autocast`). ``ddp`` (under torchrun; ignored outside it): every rank
    calls this with the same arguments and they train one student together (:func:`dire.nets.train.fit`), each
    labelling its slice of every batch with the teacher; rank 0 alone writes ``checkpoint``, every rank
    resumes from it."""
    recipe = get_recipe(recipe, student=True, **recipe_overrides)
    info = test_set.info
    images, labels = check_synthetic(synthetic, info)
    ddp = ddp and distributed.active()
    if ddp:
        distributed.check_batch_split(len(images), recipe.batch_size)
    torch.manual_seed(seed)
    student = build_model(arch, num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size)
    student = prepare_model(student, device)
    teacher = prepare_model(teacher, device).eval()
    x_all = SyntheticPixels(images, info, device)  # uint8 kept, decoded per batch: float would be 4x the bytes
    y_all = to_device(labels, device)
    generator = torch.Generator().manual_seed(seed)

    def batches(epoch: int):
        order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for i in range(0, len(order), recipe.batch_size):
            idx = order[i : i + recipe.batch_size].to(device)
            yield x_all.batch(idx), y_all[idx]

    def loss_fn(logits: torch.Tensor, x_aug: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft = teacher(x_aug).float()  # labels for the very batch the student sees (augmented + mixed)
        return soft_label_loss(logits, soft, y, recipe)

    optimizer = make_optimizer(student, recipe)
    saver = EpochCheckpoint(checkpoint, student, generator)
    start, history = saver.restore(optimizer, device)
    bar = tqdm(
        total=recipe.epochs, initial=start, desc=f"student {arch} seed {seed}", unit="epoch", disable=not progress
    )
    history = fit(
        student,
        batches,
        recipe,
        loss_fn=loss_fn,
        steps_per_epoch=-(-len(x_all) // recipe.batch_size),
        generator=generator,
        device=device,
        evaluate=lambda: accuracy(student, test_set, device=device, precision=precision),
        start_epoch=start,
        optimizer=optimizer,
        on_epoch_end=saver if distributed.is_main() or not ddp else None,  # one writer of a shared student
        history=history,
        progress=lambda _e: bar.update(),
        stage=f"student {arch} seed {seed}",
        precision=precision,
        ddp=ddp,
    )
    bar.close()
    return {"final": history[-1]["acc"], "best": max(h["acc"] for h in history), "history": history}


def evaluate_synthetic(
    synthetic: dict,
    *,
    teacher: nn.Module,
    test_set: ImageDataset,
    seeds: Sequence[int] = (0, 1, 2),
    arch: str = "convnet",
    recipe: str | Recipe = "cpu",
    device: str | torch.device = "cpu",
    cache_key: dict | None = None,
    runs_root: str | Path | None = None,
    progress: bool = False,
    precision: str = "fp32",
    ddp: bool = False,
    **recipe_overrides,
) -> dict:
    """Students over ``seeds``; with ``cache_key`` each seed's result is cached, so a rerun resumes.
    ``precision`` (:func:`dire.nets.speed.autocast`) enters the cache key only when it resolves to bf16.
    ``ddp`` (under torchrun; ignored outside it): all ranks train each seed's student together, one seed after
    another, instead of splitting the seeds (:func:`train_student`); the key then records ``"ddp": world size``,
    since such a student matches the one-process student only to a tolerance (docs/distributed.md).

    Returns ``{"final": {mean, std, n}, "best": {mean, std, n}, "runs": [...]}``.
    """
    recipe = get_recipe(recipe, student=True, **recipe_overrides)
    config = (
        None
        if cache_key is None
        else {
            "stage": "student",
            **cache_key,
            "arch": arch,
            "recipe": recipe_key(recipe),
            **precision_key(precision, device),
            **ddp_key(ddp),
        }
    )
    return per_seed(
        seeds,
        lambda seed, checkpoint: train_student(
            synthetic,
            teacher=teacher,
            test_set=test_set,
            arch=arch,
            recipe=recipe,
            seed=seed,
            device=device,
            progress=progress,
            checkpoint=checkpoint,
            precision=precision,
            ddp=ddp,
        ),
        stage="student",
        digest=synthetic_digest(synthetic),
        config=config,
        runs_root=runs_root,
        together=ddp,
    )
