"""The ImageNet-scale data path: file datasets decode in worker processes, banks and synthetic sets stream a batch at
a time, and every streamed value equals the one the stacking code computed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from dire.data import from_uint8, load_dataset, to_uint8
from dire.data.datasets import validation_split
from dire.evaluation import common, dc, soft
from dire.nets.bank import real_embedding_bank
from dire.nets.models import Classifier, embed_images, features_and_logits
from dire.nets.train import default_workers, loader
from dire.regularizer import RealBank


def write_noise_imagenet(root: Path, *, per_class: tuple[int, ...] = (5, 3, 6), seed: int = 0) -> None:
    """An ImageNet folder (``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``) of random-content JPEGs of varying
    sizes: unlike solid colours, any mix-up of images or of their order shows in the decoded pixels."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c, count in enumerate(per_class):
            folder = root / "imagenet" / split / f"n{c:04d}"
            folder.mkdir(parents=True)
            for k in range(count if split == "train" else 2):
                size = tuple(int(v) for v in rng.integers(24, 48, size=2))
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"n{c:04d}_{k}.JPEG", quality=90)


@pytest.fixture(scope="module")
def noise_imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    write_noise_imagenet(root)
    return load_dataset("imagenet", root=root, expect_classes=3)


def tiny_embedder(num_classes: int = 3) -> Classifier:
    """A cheap 224-px embedding network (a strided conv, BN, pooling): the tests need its exact values, not its
    accuracy."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 16, stride=16), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
    return Classifier(nn.Sequential(body, nn.Flatten()), 16, num_classes).eval()


# --------------------------------------------------------------------------- loader


def test_default_workers_decode_files_in_parallel_and_leave_tensors_in_process(noise_imagenet):
    cores = len(os.sched_getaffinity(0))
    assert default_workers(noise_imagenet) == min(8, cores)
    assert default_workers(validation_split(noise_imagenet, 1)[0]) == min(8, cores)  # a subset decodes files too
    assert default_workers(load_dataset("digits", split="test")) == 0
    assert default_workers(torch.utils.data.TensorDataset(torch.zeros(3))) == 0  # a plain dataset: as before


def test_worker_processes_give_the_batches_of_one_process(noise_imagenet):
    def batches(workers):
        order = torch.Generator().manual_seed(3)
        return list(loader(noise_imagenet, batch_size=4, shuffle=True, generator=order, workers=workers))

    alone, pooled = batches(0), batches(2)
    assert [len(y) for _, y in alone] == [4, 4, 4, 2]
    assert len(alone) == len(pooled)
    for (x0, y0), (x2, y2) in zip(alone, pooled):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert sorted(torch.cat([y for _, y in alone]).tolist()) == sorted(noise_imagenet.targets.tolist())


@pytest.mark.parametrize("device,pinned", [("cpu", False), ("cuda", True), ("cuda:1", True), ("meta", False)])
def test_pin_memory_is_requested_only_for_cuda(device, pinned):
    ds = load_dataset("digits", split="test")
    assert loader(ds, batch_size=8, shuffle=False, device=device).pin_memory is pinned
    assert loader(ds, batch_size=8, shuffle=False, device=torch.device(device)).pin_memory is pinned
