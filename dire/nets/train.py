"""One short training loop for teachers (CE on real data) and students (KD on synthetic data).

A :class:`Recipe` holds every hyperparameter with a documented default; presets
reproduce the references (DIL-IITH/DiRe squeeze and relabel scripts; VILA-Lab/SRe2L
``SRe2L/small_dataset``) and add short CPU
recipes. Data arrive as batches of normalized images; augmentation runs batched on
the device.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

import dire.distributed as distributed
from dire.checks import check_numbers, non_finite
from dire.data.augment import cutmix, mixup, random_crop_pad, random_flip, random_resized_crops
from dire.nets.speed import autocast, to_device
from dire.runs import added_field, atomic_save, config_dict, load, restore_rng, rng_state


@dataclass(frozen=True)
class Recipe:
    epochs: int = 200
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.1
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    warmup_epochs: int = 0  # linear warm-up before the cosine decay
    crop_padding: int = 4  # RandomCrop(size, padding); 0 = off
    flip: bool = True  # random horizontal flip
    mixup_alpha: float = 0.0  # Mixup Beta(α, α); 0 = off
    temperature: float = 1.0  # KD temperature (students only), KL without the T² factor
    loss: str = "kl"  # students: "kl" (SRe2L relabel) or "mse_ce" (G-VBSM: MSE to the teacher logits + ce_weight · CE)
    ce_weight: float = 0.15  # weight of the hard-label CE in "mse_ce"
    eval_every: int = 0  # test every this many epochs (0 = only at the end)
    # ImageNet-style augmentation (added after caches existed: in keys only when set)
    resized_crop: tuple[float, float] | None = added_field(
        None, "RandomResizedCrop scale per image instead of the padded crop (ImageNet, Tiny-ImageNet: (0.08, 1))"
    )
    cutmix_alpha: float = added_field(0.0, "CutMix Beta(α, α) after the crop (SRe2L's ImageNet relabel: 1); 0 = off")
    kd_t2: bool = added_field(False, "multiply the KL by T² (zeyuanyin/tiny-imagenet train_kd.py; SRe2L's does not)")

    def __post_init__(self) -> None:
        ranges = {"epochs": ">=1", "batch_size": ">=1", "lr": ">0", "momentum": "[0,1)", "temperature": ">0"}
        check_numbers(self, ranges, default=">=0")
        if self.resized_crop is not None and not 0 < self.resized_crop[0] <= self.resized_crop[1] <= 1:
            raise ValueError(
                f"Recipe.resized_crop must be (low, high) with 0 < low <= high <= 1; got {self.resized_crop}"
            )

    def validate(self) -> None:
        if self.loss not in ("kl", "mse_ce"):
            raise ValueError(f"loss must be 'kl' or 'mse_ce'; got {self.loss!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw'; got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(
                f"expected epochs >= 1, batch_size >= 1, lr > 0; got {self.epochs}, {self.batch_size}, {self.lr}"
            )


TEACHER_RECIPES: dict[str, Recipe] = {
    # the DiRe release's CIFAR teacher (DIL-IITH/DiRe squeeze script): SGD 0.1, mom 0.9, wd 5e-4, cosine,
    # 200 epochs, batch 128
    "cifar": Recipe(),
    # a few epochs on the CPU; enough for a usable Fashion-MNIST / digits teacher
    "cpu": Recipe(epochs=6, batch_size=128, lr=0.05, crop_padding=2, flip=False),
    # SRe2L's Tiny-ImageNet squeeze (zeyuanyin/tiny-imagenet script/train_rn18.sh, the "rn18E50" teacher): SGD 0.2,
    # mom 0.9, wd 1e-4, batch 256, 50 epochs, cosine after a 5-epoch linear warm-up (theirs starts at 0.01 x lr,
    # ours at 0), torchvision's RandomResizedCrop + flip
    "tiny-imagenet": Recipe(
        epochs=50,
        batch_size=256,
        lr=0.2,
        weight_decay=1e-4,
        warmup_epochs=5,
        crop_padding=0,
        resized_crop=(0.08, 1.0),
    ),
}

STUDENT_RECIPES: dict[str, Recipe] = {
    # SRe2L / DiRe relabel on CIFAR (DIL-IITH/DiRe relabel_cifar.py): AdamW 1e-3 wd 0.01, cosine, batch 128,
    # mixup 0.8, T = 30, 400 epochs
    "cifar": Recipe(
        epochs=400, optimizer="adamw", lr=1e-3, weight_decay=0.01, mixup_alpha=0.8, temperature=30.0, eval_every=10
    ),
    # SRe2L's Tiny-ImageNet relabel (zeyuanyin/tiny-imagenet script/train_kd.sh, classification/train_kd.py): SGD
    # 0.2, mom 0.9, wd 1e-4, batch 256, 100 epochs, 5-epoch warm-up, RandomResizedCrop + flip, KL at T 20 times T²
    "tiny-imagenet": Recipe(
        epochs=100,
        batch_size=256,
        lr=0.2,
        weight_decay=1e-4,
        warmup_epochs=5,
        crop_padding=0,
        resized_crop=(0.08, 1.0),
        temperature=20.0,
        kd_t2=True,
        eval_every=10,
    ),
    # SRe2L's ImageNet-1K post-training (VILA-Lab/SRe2L SRe2L/validate, train_FKD.py and its script): AdamW 1e-3,
    # wd 0.01, cosine, batch 1024, 300 epochs, RandomResizedCrop(0.08-1) + flip, CutMix 1.0, KL at T 20 without
    # T². Deviation: the teacher labels each batch on the fly (their train_KD.py, DWA's ImageNet evaluation)
    # instead of FKD's stored labels.
    "imagenet": Recipe(
        epochs=300,
        batch_size=1024,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.01,
        crop_padding=0,
        resized_crop=(0.08, 1.0),
        cutmix_alpha=1.0,
        temperature=20.0,
        eval_every=10,
    ),
    # the same loss for a CPU budget: ~300-600 steps instead of ~16k, so a 10x larger lr and smaller batches
    # (with lr 1e-3, T = 30 and mixup a student on 50 real digits is still at chance after 100 steps)
    "cpu": Recipe(
        epochs=300,
        batch_size=64,
        optimizer="adamw",
        lr=1e-2,
        weight_decay=0.01,
        crop_padding=2,
        flip=False,
        mixup_alpha=0.8,
        temperature=30.0,
        eval_every=100,
    ),
}


# the quick profile's students (Fashion-MNIST on a CPU): "cpu" with the changes `dire recipe-search` chose on a
# validation split (notebooks/params/recipe_search/fashion-mnist.yaml; its record, which a test holds this to:
# notebooks/params/selected/fashion-mnist-recipe.json)
STUDENT_RECIPES["fashion-mnist"] = replace(
    STUDENT_RECIPES["cpu"], resized_crop=(0.25, 1.0), cutmix_alpha=1.0, mixup_alpha=0.0
)


def get_recipe(name: str | Recipe, *, student: bool, **overrides) -> Recipe:
    table = STUDENT_RECIPES if student else TEACHER_RECIPES
    if isinstance(name, Recipe):
        recipe = name
    elif name in table:
        recipe = table[name]
    else:
        raise ValueError(
            f"unknown {'student' if student else 'teacher'} recipe {name!r}; expected one of {sorted(table)}"
        )
    known = {f.name for f in fields(Recipe)}
    if unknown := sorted(set(overrides) - known):
        raise ValueError(
            f"unknown recipe setting(s) {unknown}; expected fields of dire.nets.train.Recipe: {sorted(known)}"
        )
    recipe = replace(recipe, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    recipe.validate()
    return recipe


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def lr_at(recipe: Recipe, epoch: float) -> float:
    """Linear warm-up, then cosine to 0 over the remaining epochs (evaluated per step)."""
    if epoch < recipe.warmup_epochs:
        return recipe.lr * (epoch + 1e-8) / recipe.warmup_epochs
    span = max(recipe.epochs - recipe.warmup_epochs, 1e-8)
    return 0.5 * (1 + math.cos(math.pi * (epoch - recipe.warmup_epochs) / span)) * recipe.lr


def augment_batch(x: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    if recipe.resized_crop is not None:
        x = random_resized_crops(x, generator, scale=recipe.resized_crop)
    else:
        x = random_crop_pad(x, recipe.crop_padding, generator)
    return random_flip(x, generator) if recipe.flip else x


def recipe_key(recipe: Recipe) -> dict:
    """The recipe as cache keys hold it: every field, less the added ones at their defaults."""
    return config_dict(recipe)


class _Batches(Dataset):
    """Indexes a dataset by whole batches, so in-memory data is gathered in one operation per batch."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices):
        if hasattr(self.dataset, "batch"):
            return self.dataset.batch(indices)
        items = [self.dataset[i] for i in indices]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


#: most DataLoader worker processes a file-backed dataset gets by default (one per available core below that)
DEFAULT_WORKERS = 8


def default_workers(dataset: Dataset) -> int:
    """Worker processes for ``dataset``'s loader: 0 for in-memory data (a batch is one indexing operation, which a
    worker would only slow down by pickling it back), ``min(DEFAULT_WORKERS, available cores)`` for a dataset whose
    ``in_memory`` is False (each image a JPEG to decode, the bottleneck at ImageNet scale)."""
    if getattr(dataset, "in_memory", True):
        return 0
    return min(DEFAULT_WORKERS, len(os.sched_getaffinity(0)))


def batch_loader(
    dataset: Dataset,
    batches: Iterable[Sequence[int]],
    *,
    workers: int | None = None,
    device: torch.device | str = "cpu",
) -> DataLoader:
    """``(images [B, C, H, W], labels [B])`` for each index batch of ``batches``, in that order.

    ``workers``: decoding processes (None: :func:`default_workers`); they change only speed, never the batches
    (the index order is fixed here, workers fill it in order). On a CUDA ``device`` batches come in pinned
    memory, so ``.to(device, non_blocking=True)`` copies overlap the next batch's work; at most
    ``2 * workers`` batches are in flight, which bounds host memory whatever the dataset's size."""
    workers = default_workers(dataset) if workers is None else workers
    return DataLoader(
        _Batches(dataset),
        sampler=batches,
        batch_size=None,
        num_workers=workers,
        pin_memory=torch.device(device).type == "cuda",
    )


def loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    workers: int | None = None,
    device: torch.device | str = "cpu",
) -> DataLoader:
    """Batches ``(images [B, C, H, W], labels [B])``; shuffled with ``generator`` when ``shuffle``. ``workers`` and
    ``device`` as in :func:`batch_loader`."""
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return batch_loader(dataset, BatchSampler(order, batch_size, drop_last=False), workers=workers, device=device)


@torch.no_grad()
def accuracy(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    workers: int | None = None,
    precision: str = "fp32",
) -> float:
    """Top-1 accuracy (%) in eval mode over the whole dataset (``workers`` as in :func:`batch_loader`;
    ``precision`` as in :func:`dire.nets.speed.autocast`)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in loader(dataset, batch_size=batch_size, shuffle=False, workers=workers, device=device):
        with autocast(device, precision):
            pred = model(to_device(x, device)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)), batch mean, no T² factor (SRe2L relabel)."""
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
    )


def soft_label_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, recipe: Recipe
) -> torch.Tensor:
    """The student's loss against the teacher's logits: KL at T (SRe2L) or MSE on logits + weighted CE (G-VBSM,
    whose CE uses the label of the batch's first mixup term)."""
    if recipe.loss == "mse_ce":
        return F.mse_loss(student_logits, teacher_logits) + recipe.ce_weight * F.cross_entropy(student_logits, labels)
    kl = kd_loss(student_logits, teacher_logits, recipe.temperature)
    return kl * recipe.temperature**2 if recipe.kd_t2 else kl


CHECKPOINT_SECONDS = 60.0  # training time between epoch checkpoints of students (a kill loses at most this much)


class EpochCheckpoint:
    """A training run's state at the end of an epoch, in one file: model, optimiser, augmentation generator,
    global RNG, epoch and evaluation history. Pass it as ``fit``'s ``on_epoch_end``; it saves at most every
    ``seconds`` (0: every epoch). :meth:`restore` puts a saved state back and returns where to continue, so a
    killed run resumes and ends as an uninterrupted one would."""

    def __init__(
        self, path: Path | None, model: nn.Module, generator: torch.Generator, *, seconds: float | None = None
    ):
        self.path, self.model, self.generator = path, model, generator
        self.seconds = CHECKPOINT_SECONDS if seconds is None else seconds
        self._last = time.perf_counter()

    def restore(self, optimizer: torch.optim.Optimizer, device: torch.device | str) -> tuple[int, list]:
        """``(start_epoch, history)``: ``(0, [])`` when there is no checkpoint."""
        if self.path is None or not self.path.exists():
            return 0, []
        ckpt = load(self.path, map_location=device)
        self.model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        self.generator.set_state(ckpt["generator"].cpu())  # generator states are CPU tensors, whatever the device
        if "rng" in ckpt:  # the global RNG (dropout, stochastic depth), so the resumed epochs draw the same
            restore_rng(ckpt["rng"])
        return int(ckpt["epoch"]) + 1, list(ckpt["history"])

    def __call__(self, epoch: int, optimizer: torch.optim.Optimizer, history: list) -> None:
        if self.path is None or time.perf_counter() - self._last < self.seconds:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rng": rng_state(),
            "epoch": epoch,
            "history": history,
        }
        atomic_save(state, self.path)
        self._last = time.perf_counter()

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def fit(
    model: nn.Module,
    batches: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]],
    recipe: Recipe,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    steps_per_epoch: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    evaluate: Callable[[], float] | None = None,
    start_epoch: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    on_epoch_end: Callable[[int, torch.optim.Optimizer, list], None] | None = None,
    history: list | None = None,
    progress: Callable[[int], None] | None = None,
    stage: str = "training",
    on_batch: Callable[[], None] | None = None,
    precision: str = "fp32",
    ddp: bool = False,
) -> list[dict]:
    """Train ``model`` for ``recipe.epochs``: ``batches(epoch)`` yields (x, y) on ``device``;
    ``loss_fn(logits, x_aug, y)`` gives the loss. Returns the evaluation history
    ``[{"epoch": e, "acc": a}, ...]`` (every ``eval_every`` epochs and at the end). ``progress(epoch)`` runs after
    each epoch, ``on_batch()`` after each optimiser step. ``precision`` (:func:`dire.nets.speed.autocast`): the
    forward pass and ``loss_fn`` run under it, on float32 logits; backward and the step stay outside (float32
    weights and optimiser state).

    A loss that is not finite stops training with :class:`dire.checks.NonFiniteLoss` (naming ``stage`` and
    the epoch) before that epoch's ``on_epoch_end``, so no checkpoint of a diverged model is written.

    ``ddp`` (under torchrun; ignored outside it): the ranks train ``model`` together as one DDP model
    (:func:`dire.distributed.ddp_model`; its BatchNorm layers are made global in place). Every rank must get
    the same ``batches`` and ``generator``: each augments the whole global batch, as one process would, then
    trains on its slice (:func:`dire.distributed.batch_slice`), its loss weighted by its share of the batch so
    that DDP's gradient average is the gradient of the whole batch's mean loss."""
    optimizer = optimizer or make_optimizer(model, recipe)
    history = list(history or [])
    model.train()
    ddp = ddp and distributed.active()
    net = distributed.ddp_model(model, device) if ddp else model
    for epoch in range(start_epoch, recipe.epochs):
        finite = torch.ones((), dtype=torch.bool, device=device)  # checked once per epoch: no sync per step
        for i, (x, y) in enumerate(batches(epoch)):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(recipe, epoch + i / steps_per_epoch)
            x = augment_batch(x, recipe, generator)
            if recipe.mixup_alpha > 0:
                x = mixup(x, recipe.mixup_alpha, generator)
            if recipe.cutmix_alpha > 0:
                x = cutmix(x, recipe.cutmix_alpha, generator)
            if ddp:
                x, y, weight = distributed.my_part(x, y)
            with autocast(device, precision):
                loss = loss_fn(net(x).float(), x, y)  # .float(): the loss in float32 (a no-op in fp32)
            if ddp:
                loss = loss * weight
            finite &= torch.isfinite(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_batch is not None:
                on_batch()
        if not (distributed.all_true(bool(finite)) if ddp else bool(finite)):  # every rank stops, or none
            raise non_finite(stage, f"epoch {epoch + 1} of {recipe.epochs}", lr=recipe.lr)
        last = epoch + 1 == recipe.epochs
        if evaluate is not None and (last or (recipe.eval_every and (epoch + 1) % recipe.eval_every == 0)):
            history.append({"epoch": epoch + 1, "acc": evaluate()})
        if on_epoch_end is not None:
            on_epoch_end(epoch, optimizer, history)
        if progress is not None:
            progress(epoch)
    return history
