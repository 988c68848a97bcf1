"""The real embedding bank: per-class penultimate embeddings of real training images.

Embeddings come from the teacher in eval mode and are grouped **by label** (the
release takes consecutive blocks of the unshuffled training set, which mixes
classes on CIFAR-100; DIL-IITH/DiRe, its embedding-extraction script).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm  # text on stderr, in kernels too: `dire reproduce` streams it (a widget would not)

import dire.distributed as distributed
from dire.data import ImageDataset
from dire.nets.models import embed_batches
from dire.nets.speed import precision_key
from dire.nets.train import batch_loader
from dire.regularizer import RealBank
from dire.runs import atomic_save, load


def class_samples(dataset: ImageDataset, per_class: int, *, seed: int = 0) -> list[torch.Tensor]:
    """For every class, the indices of up to ``per_class`` of its images, drawn with the class's own generator
    (seeded ``seed * 1_000_003 + c``): the images ``dataset.class_images(c, limit=per_class, generator=...)``
    stacks, without decoding them."""
    return [
        dataset.class_indices(c, limit=per_class, generator=torch.Generator().manual_seed(seed * 1_000_003 + c))
        for c in range(dataset.info.num_classes)
    ]


def embed_samples(
    model: nn.Module,
    dataset: ImageDataset,
    samples: list[torch.Tensor],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    workers: int | None = None,
    progress: bool = False,
    precision: str = "fp32",
    share: bool = False,
) -> dict[int, torch.Tensor] | None:
    """Embeddings of ``samples[c]`` (indices of class ``c``) for each class that has any, decoded and embedded a
    batch at a time through one loader (``workers`` as in :func:`dire.nets.train.batch_loader`): host memory holds
    a few batches of images, not a class. Batches never span two classes and split each class at multiples of
    ``batch_size``, as :func:`dire.nets.models.embed_images` on the stacked class does, so the values are the same.

    ``share`` (under torchrun, every rank calling at once; ignored outside it): each rank embeds its static share
    of those batches (:func:`dire.distributed.my_share`) and rank 0 gathers them back in order, so every batch is
    embedded once, with the very computation one process does; rank 0 returns the embeddings, the others None."""
    chunks = [idx[i : i + batch_size] for idx in samples for i in range(0, len(idx), batch_size)]
    share = share and distributed.active()
    mine = distributed.my_share(chunks) if share else chunks
    z = _embed_chunks(model, dataset, mine, device, workers, progress, precision)
    if share:
        blocks = distributed.gather_to_main(list(z.split([len(idx) for idx in mine])) if mine else [])
        if blocks is None:
            return None
        ordered = [None] * len(chunks)
        for rank, rank_blocks in enumerate(blocks):  # rank r embedded batches r, r + world, ...
            ordered[rank :: len(blocks)] = rank_blocks
        z = torch.cat(ordered) if ordered else torch.zeros(0, 0)
    return {c: part for c, part in enumerate(z.split([len(idx) for idx in samples])) if len(part)}


def _embed_chunks(model, dataset, chunks, device, workers, progress, precision) -> torch.Tensor:
    """The embeddings of the index batches ``chunks``, in order, one loader batch each."""
    images = (x for x, _ in batch_loader(dataset, chunks, workers=workers, device=device))
    bar = tqdm(images, total=len(chunks), desc="real embeddings", unit="batch", disable=not progress)
    return embed_batches(model, bar, sum(len(idx) for idx in chunks), device=device, precision=precision)


def real_embedding_bank(
    teacher: nn.Module,
    dataset: ImageDataset,
    *,
    per_class: int = 500,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    workers: int | None = None,
    cache: str | Path | None = None,
    progress: bool = False,
    precision: str = "fp32",
    classes: int | None = None,
    share: bool = False,
) -> RealBank | None:
    """Embed up to ``per_class`` random real images of every class (seeded, :func:`class_samples`), cached at
    ``cache`` if given. Images are decoded a batch at a time (:func:`embed_samples`), ``workers`` processes at once;
    ``precision``: the forward pass's (:func:`dire.nets.speed.autocast`), embeddings are float32 either way.
    ``classes``: only the first ``classes`` classes (a run that condenses only those, ``condense_classes``); the
    others get no rows, and using them is refused. None: all. ``share``: the ranks of torchrun split the batches
    (:func:`embed_samples`); rank 0 returns (and saves) the bank, the others None."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1; got {per_class}")
    if classes is not None and classes < 1:
        raise ValueError(f"classes must be >= 1 or None (all); got {classes}")
    if cache is not None and Path(cache).exists():
        saved = load(cache)
        return RealBank.from_padded(saved["emb"], saved["count"])
    samples = class_samples(dataset, per_class, seed=seed)
    if classes is not None:  # the same draw for the classes kept, so their rows equal the full bank's
        samples = [idx if c < classes else idx[:0] for c, idx in enumerate(samples)]
    per = embed_samples(
        teacher,
        dataset,
        samples,
        device=device,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        precision=precision,
        share=share,
    )
    if per is None:  # another rank than 0, which has the bank
        return None
    bank = RealBank.from_dict(per, num_classes=dataset.info.num_classes)
    if cache is not None:
        atomic_save({"emb": bank.emb, "count": bank.count}, cache)
    return bank


def bank_embeddings(bank: RealBank) -> tuple[torch.Tensor, torch.Tensor]:
    """All real embeddings as one [M, d] tensor with labels [M] (for the diversity metrics)."""
    per = bank.as_dict()
    z = torch.cat([per[c] for c in bank.classes])
    y = torch.cat([torch.full((len(per[c]),), c) for c in bank.classes])
    return z, y


def cached_bank(
    teacher: nn.Module,
    teacher_record: dict,
    dataset: ImageDataset,
    *,
    per_class: int = 500,
    device: str | torch.device = "cpu",
    runs_root: str | Path | None = None,
    progress: bool = False,
    precision: str = "fp32",
    classes: int | None = None,
) -> tuple[RealBank, Path]:
    """The bank of a cached teacher (``get_teacher``'s model and record), stored in its run folder
    ``<runs>/bank/<hash of (teacher config, per_class[, precision][, classes])>/bank.pt``; returns the bank and
    that folder. ``precision`` enters the key only when it resolves to bf16 (:func:`dire.nets.speed.precision_key`),
    ``classes`` (:func:`real_embedding_bank`) only when set. Under torchrun every rank calls it together and the
    ranks split the embedding batches (one process's bank, each batch embedded once)."""
    from dire.runs import config_hash, lock, run_dir

    key = {"teacher": config_hash(teacher_record["config"]), "per_class": per_class}
    if classes is not None:
        key["classes"] = classes
    folder = run_dir("bank", {**key, **precision_key(precision, device)}, root=runs_root)
    make = dict(per_class=per_class, device=device, progress=progress, precision=precision, classes=classes)
    cache = folder / "bank.pt"
    if not distributed.active():
        with lock(folder):  # one process embeds; the others wait, then read bank.pt
            return real_embedding_bank(teacher, dataset, cache=cache, **make), folder
    # under torchrun every rank calls this at once: rank 0 holds the lock (other processes sharing runs/ wait on
    # it) and its view decides whether the ranks embed their shares of the batches together
    bank = None
    with distributed.main_decides(folder, cache.exists) as ready:
        if not ready:
            bank = real_embedding_bank(teacher, dataset, cache=cache, share=True, **make)  # rank 0's, saved; else None
    distributed.barrier()  # bank.pt is written: the ranks without the bank in hand read it
    return bank if bank is not None else real_embedding_bank(teacher, dataset, cache=cache, **make), folder
