"""Squeeze: train or load a cached teacher per (dataset, architecture, recipe, seed).

The run folder ``<runs>/teacher/<hash>/`` holds ``config.json``, a per-epoch
``checkpoint.pt`` while training (an interrupted run resumes from it: model, optimiser,
augmentation generator and the global RNG), then ``model.pt`` and ``metrics.json`` (test
accuracy of the last epoch), written in that order: ``metrics.json`` marks a finished teacher.
Processes asking for the same teacher wait on the folder's lock; one trains. Under torchrun with ``ddp``
the ranks train it together instead (:func:`get_teacher`).

The release keeps the checkpoint with the best *test* accuracy; that selects on
the test split, so this project keeps the last epoch (as SRe2L does).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm  # text on stderr, in kernels too: `dire reproduce` streams it (a widget would not)

import dire.distributed as distributed
from dire.data import load_dataset, validation_split
from dire.nets import pretrained
from dire.nets.models import Classifier, build_model
from dire.nets.speed import DeviceData, hold_on_device, precision_key, prepare_model, resolve_precision, to_device
from dire.nets.train import EpochCheckpoint, Recipe, accuracy, fit, get_recipe, loader, make_optimizer, recipe_key
from dire.runs import atomic_save, load, read_json, run_dir, write_json

# Recipe fields that only concern students; left out of a teacher's cache key so adding them kept old teachers valid
_STUDENT_ONLY = ("loss", "ce_weight", "kd_t2")


def teacher_config(
    dataset: str,
    arch: str,
    recipe: Recipe,
    seed: int,
    holdout: tuple[int, int] | None = None,
    *,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
) -> dict:
    """A trained teacher's cache key; ``precision`` (resolved for ``device``) enters it only as bf16."""
    fields = {k: v for k, v in recipe_key(recipe).items() if k not in _STUDENT_ONLY}
    config = {"stage": "teacher", "dataset": dataset, "arch": arch, "recipe": fields, "seed": seed}
    if holdout is not None:  # only when set, so teachers cached before holdouts existed keep their keys
        config["holdout"] = {"per_class": holdout[0], "seed": holdout[1]}
    return {**config, **precision_key(precision, device)}  # fp32 adds nothing: older teachers keep their keys


def training_split(
    dataset: str, *, holdout: tuple[int, int] | None = None, data_root: str | Path = "data", download: bool = False
):
    """``(train, evaluation)`` splits: the training and test splits, or with ``holdout = (per_class, seed)``
    the training split less a per-class validation split, and that validation split
    (:func:`dire.data.validation_split`)."""
    train = load_dataset(dataset, split="train", root=data_root, download=download)
    if holdout is None:
        return train, load_dataset(dataset, split="test", root=data_root, download=download)
    return validation_split(train, holdout[0], seed=holdout[1])


def get_teacher(
    dataset: str,
    arch: str = "convnet_bn",
    *,
    recipe: str | Recipe = "cpu",
    seed: int = 0,
    data_root: str | Path = "data",
    runs_root: str | Path | None = None,
    device: str | torch.device = "cpu",
    workers: int | None = None,
    progress: bool = True,
    download: bool = False,
    holdout: tuple[int, int] | None = None,
    weights: str | None = None,
    precision: str = "fp32",
    ddp: bool = False,
    **recipe_overrides,
) -> tuple[Classifier, dict]:
    """Return the trained teacher (eval mode, on ``device``) and its record
    ``{"dir", "config", "test_acc"}``; trains it first if no cached copy exists.

    ``workers``: data-loading processes (None: :func:`dire.nets.train.default_workers`, decoding file datasets in
    parallel); they change speed only, so they are not part of the teacher's key.

    ``holdout = (per_class, seed)`` trains it without that validation split (see :func:`training_split`), so
    settings chosen on the split never saw it; its reported accuracy is still on the test split, and no
    choice is made from that number.

    ``weights``: a pretrained teacher instead of training one, a torchvision weights name or a state-dict file
    (:mod:`dire.nets.pretrained`); its key records the weights and their SHA-256, not a recipe.

    ``precision`` ("fp32", "bf16" or "auto"; :mod:`dire.nets.speed`): autocast of training and its test
    evaluations; bf16 enters the key. A pretrained teacher is measured in fp32 (its key has no precision).

    ``ddp`` (under torchrun, every rank calling at once; ignored outside it and for pretrained weights): the ranks
    train the teacher together as one DDP model (:func:`dire.nets.train.fit`: each rank reads and augments the
    whole global batch, then trains on its slice; BatchNorm over the global batch) instead of one rank training
    it while the others wait. Rank 0 holds the lock, writes the checkpoints and the teacher; every rank resumes
    from the checkpoint and loads the result. The key records ``"ddp": world size``, since such a teacher
    matches the one-process teacher to a tolerance only (docs/distributed.md)."""
    recipe = get_recipe(recipe, student=False, **recipe_overrides)
    precision = resolve_precision(precision, device)
    if weights is not None:
        if holdout is not None:
            raise ValueError(
                "a pretrained teacher has seen the whole training split, so no validation split can be held out "
                "of it; choose settings with a teacher trained here (no --teacher-weights)"
            )
        source, record = pretrained.resolve(weights, download=download)
        config = {"stage": "teacher", "dataset": dataset, "arch": arch, "pretrained": record}
    else:
        config = teacher_config(dataset, arch, recipe, seed, holdout, precision=precision)
    ddp = ddp and weights is None and distributed.active()
    if ddp:
        config = {**config, "ddp": distributed.world_size()}
    folder = run_dir("teacher", config, root=runs_root)
    train_set = load_dataset(dataset, split="train", root=data_root, download=download)
    if holdout is not None:  # the test split is loaded only if training is needed
        train_set = validation_split(train_set, holdout[0], seed=holdout[1])[0]
    info = train_set.info

    def build() -> Classifier:
        torch.manual_seed(seed)
        net = build_model(arch, num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size)
        return prepare_model(net, device)  # channels_last and cuDNN autotuning on CUDA; .to(device) on the CPU

    model = build()
    # one process trains while the others wait on the lock, then load what it saved; under DDP rank 0 alone holds
    # the lock and its view decides, so all ranks load, or train together
    with distributed.main_decides(folder, (folder / "metrics.json").exists, together=ddp) as done:  # written last
        if done:
            (folder / "checkpoint.pt").unlink(missing_ok=True)  # left if a kill came right after metrics.json
            model.load_state_dict(load(folder / "model.pt", map_location=device))
            metrics = read_json(folder / "metrics.json")
            return model.eval(), {"dir": str(folder), "config": config, **metrics}
        if weights is not None:  # nothing to train: load, measure on the test split, commit
            pretrained.load_into(model, source)
            test_set = load_dataset(dataset, split="test", root=data_root, download=download)
            metrics = {"test_acc": accuracy(model, test_set, device=device, workers=workers), "history": []}
            _commit(model, folder, metrics)
            return model.eval(), {"dir": str(folder), "config": config, **metrics}
        metrics = _train(
            model,
            folder,
            train_set,
            recipe=recipe,
            seed=seed,
            dataset=dataset,
            arch=arch,
            data_root=data_root,
            device=device,
            workers=workers,
            progress=progress,
            download=download,
            precision=precision,
            ddp=ddp,
        )
    if ddp:  # every rank takes the saved teacher, in plain BatchNorm layers (DDP made them global ones)
        model = build()
        model.load_state_dict(load(folder / "model.pt", map_location=device))
    return model.eval(), {"dir": str(folder), "config": config, **metrics}


def _train(
    model,
    folder: Path,
    train_set,
    *,
    recipe: Recipe,
    seed: int,
    dataset: str,
    arch: str,
    data_root,
    device,
    workers: int | None,
    progress: bool,
    download: bool,
    precision: str = "fp32",
    ddp: bool = False,
) -> dict:
    """Train ``model`` from scratch or from ``checkpoint.pt``; commits ``model.pt`` then ``metrics.json`` (the
    completion mark, written last), then drops the checkpoint. A kill between the two final writes leaves
    the checkpoint of the last epoch, from which a rerun finishes with the same bytes. ``ddp``: all ranks train
    it together (:func:`get_teacher`); rank 0 alone writes, and every rank returns after its commit."""
    test_set = load_dataset(dataset, split="test", root=data_root, download=download)
    optimizer = make_optimizer(model, recipe)
    generator = torch.Generator().manual_seed(seed)
    checkpoint = EpochCheckpoint(folder / "checkpoint.pt", model, generator, seconds=0)  # every epoch
    start, history = checkpoint.restore(optimizer, device)
    if ddp:
        distributed.check_batch_split(len(train_set), recipe.batch_size)

    # on CUDA a small in-memory training set is copied to the GPU once and cut there (the loader's batches,
    # without a loader); the CPU keeps the loader
    held = DeviceData(train_set, device) if hold_on_device(train_set, device) else None

    def batches(epoch: int):
        order = torch.Generator().manual_seed(seed * 100_003 + epoch)
        if held is not None:
            yield from held.batches(batch_size=recipe.batch_size, generator=order)
            return
        stream = loader(
            train_set, batch_size=recipe.batch_size, shuffle=True, generator=order, workers=workers, device=device
        )
        for x, y in stream:
            yield to_device(x, device), to_device(y, device)

    steps = -(-len(train_set) // recipe.batch_size)
    # counted in batches: a teacher epoch on a real training set can take a minute on a CPU
    bar = tqdm(
        total=recipe.epochs * steps,
        initial=start * steps,
        desc=f"teacher {arch} on {dataset} ({recipe.epochs} epochs)",
        unit="batch",
        disable=not progress or (ddp and not distributed.is_main()),  # one bar for a DDP teacher
    )
    history = fit(
        model,
        batches,
        recipe,
        loss_fn=lambda logits, _x, y: F.cross_entropy(logits, y),
        steps_per_epoch=steps,
        generator=generator,
        device=device,
        evaluate=lambda: accuracy(model, test_set, device=device, workers=workers, precision=precision),
        start_epoch=start,
        optimizer=optimizer,
        on_epoch_end=checkpoint if not ddp or distributed.is_main() else None,  # one writer of a shared teacher
        history=history,
        on_batch=bar.update,
        stage=f"teacher {arch} on {dataset} ({folder})",
        precision=precision,
        ddp=ddp,
    )
    bar.close()
    metrics = {"test_acc": history[-1]["acc"], "history": history}
    if not ddp or distributed.is_main():
        _commit(model, folder, metrics)
        checkpoint.discard()
    if ddp:
        distributed.barrier()  # the teacher is on disk for every rank
    return metrics


def _commit(model, folder: Path, metrics: dict) -> None:
    """A finished teacher: ``model.pt``, then ``metrics.json``, whose presence marks the teacher complete."""
    atomic_save(model.state_dict(), folder / "model.pt")
    write_json(folder / "metrics.json", metrics)
