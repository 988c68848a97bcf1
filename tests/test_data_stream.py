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
from dire.nets.models import Classifier, embed_batches, embed_images, features_and_logits
from dire.nets.train import default_workers, loader
from dire.regularizer import DiRe, RealBank
from dire.synthesis.delt import median_confidence_class, median_confidence_images


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


# --------------------------------------------------------------------------- decoding


def test_a_batch_is_decoded_into_one_tensor_with_the_values_of_stack_then_normalize(noise_imagenet):
    idx = torch.tensor([4, 0, 13, 7, 7])
    listed = noise_imagenet.info.normalize(torch.stack([noise_imagenet._pixels(int(i)) for i in idx]))
    assert torch.equal(noise_imagenet.batch(idx)[0], listed)
    assert noise_imagenet.batch([])[0].shape == (0, 3, 224, 224)


def test_file_paths_are_kept_as_one_byte_array(noise_imagenet):
    # no Python object per image, whose reference counts a worker would write (copying the pages of the list)
    assert isinstance(noise_imagenet._paths, np.ndarray) and noise_imagenet._paths.dtype.kind == "S"
    pairs = noise_imagenet.samples
    assert [y for _, y in pairs] == noise_imagenet.targets.tolist()
    assert all(p.is_file() and p.parent.name == f"n{y:04d}" for p, y in pairs)
    assert noise_imagenet.path(3) == pairs[3][0]


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


# --------------------------------------------------------------------------- banks


def stacked_bank(model, dataset, *, per_class: int, seed: int, batch_size: int) -> RealBank:
    """The bank as it was computed before streaming: stack each class's draw, then embed it in slices."""
    model.eval()
    per = {}
    with torch.no_grad():
        for c in range(dataset.info.num_classes):
            g = torch.Generator().manual_seed(seed * 1_000_003 + c)
            images = dataset.class_images(c, limit=per_class, generator=g)
            if len(images):
                per[c] = torch.cat(
                    [
                        features_and_logits(model, images[i : i + batch_size])[0]
                        for i in range(0, len(images), batch_size)
                    ]
                )
    return RealBank.from_dict(per, num_classes=dataset.info.num_classes)


def assert_same_bank(a: RealBank, b: RealBank) -> None:
    assert torch.equal(a.count, b.count) and torch.equal(a.emb, b.emb)


@pytest.mark.parametrize("per_class,batch_size", [(100, 64), (1000, 256), (7, 3)])
def test_streamed_bank_equals_the_stacked_one_on_digits(digits_teacher, per_class, batch_size):
    teacher, _ = digits_teacher
    train = load_dataset("digits")
    streamed = real_embedding_bank(teacher, train, per_class=per_class, seed=2, batch_size=batch_size)
    assert_same_bank(streamed, stacked_bank(teacher, train, per_class=per_class, seed=2, batch_size=batch_size))
    if per_class == 1000:  # larger than any class: the whole class
        assert streamed.count.tolist() == torch.bincount(train.targets).tolist()


def test_streamed_bank_equals_the_stacked_one_on_a_jpeg_folder(noise_imagenet):
    model = tiny_embedder()
    for per_class in (4, 100):  # a draw, then whole classes; batches of 2 split every class
        streamed = real_embedding_bank(model, noise_imagenet, per_class=per_class, seed=1, batch_size=2, workers=2)
        assert_same_bank(streamed, stacked_bank(model, noise_imagenet, per_class=per_class, seed=1, batch_size=2))
    assert streamed.count.tolist() == [5, 3, 6]


def test_bank_of_the_first_classes_keeps_their_rows_and_refuses_the_others(digits_teacher):
    teacher, _ = digits_teacher
    train = load_dataset("digits")
    full = real_embedding_bank(teacher, train, per_class=20, seed=3)
    part = real_embedding_bank(teacher, train, per_class=20, seed=3, classes=3)
    assert part.classes == (0, 1, 2) and part.count[3:].sum() == 0
    assert torch.equal(part.emb[:3], full.emb[:3]) and torch.equal(part.count[:3], full.count[:3])
    z = torch.randn(2, full.emb.shape[-1])
    with pytest.raises(ValueError, match=r"no real embeddings for classes \[5\]"):
        DiRe()(z, torch.tensor([0, 5]), part)
    with pytest.raises(ValueError, match="classes must be >= 1"):
        real_embedding_bank(teacher, train, classes=0)


def test_embedding_batches_must_hold_the_count_announced():
    model = tiny_embedder()
    x = torch.zeros(4, 3, 224, 224)
    assert embed_batches(model, [x[:3], x[3:]], 4).shape == (4, 16)
    with pytest.raises(ValueError, match="expected 5 images"):
        embed_batches(model, [x], 5)


def test_uint8_embedding_decodes_per_batch_to_the_same_values(digits_teacher):
    teacher, _ = digits_teacher
    info = load_dataset("digits").info
    pixels = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = embed_images(teacher, from_uint8(pixels, info), batch_size=16)
    assert torch.equal(embed_images(teacher, pixels, batch_size=16, info=info), whole)


def test_delt_scores_a_class_in_batches_and_picks_what_the_stacked_class_gave(digits_teacher, noise_imagenet):
    teacher, _ = digits_teacher
    train = load_dataset("digits")
    for c, k in ((3, 4), (7, 1)):
        want = median_confidence_images(teacher, train.class_images(c), c, k, batch_size=64)
        assert torch.equal(median_confidence_class(teacher, train, c, k, batch_size=64), want)
    model = tiny_embedder()
    for c in range(3):  # batches of 2 split every class; two workers decode them
        want = median_confidence_images(model, noise_imagenet.class_images(c), c, 3, batch_size=2)
        assert torch.equal(median_confidence_class(model, noise_imagenet, c, 3, batch_size=2, workers=2), want)
    with pytest.raises(ValueError, match="fewer than ipc=4"):
        median_confidence_class(model, noise_imagenet, 1, 4)


# --------------------------------------------------------------------------- students on synthetic sets


class FloatSet:
    """The synthetic set as the students held it before: decoded to float whole, then indexed."""

    def __init__(self, pixels, info, device="cpu"):
        self.images = from_uint8(pixels, info).to(device)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx):
        return self.images[idx]


def digits_subset(per_class: int = 3) -> dict:
    train = load_dataset("digits")
    idx = torch.cat([train.class_indices(c)[:per_class] for c in range(10)])
    return {"images": to_uint8(train.batch(idx)[0], train.info), "labels": train.targets[idx]}


def test_synthetic_pixels_stay_uint8_and_decode_to_the_whole_set_values():
    set_ = digits_subset()
    info = load_dataset("digits").info
    staged = common.SyntheticPixels(set_["images"], info, "cpu", fraction=0.0)  # a CPU holds them whatever the share
    assert staged.pixels.dtype == torch.uint8 and staged.pixels.data_ptr() == set_["images"].data_ptr()
    whole = from_uint8(set_["images"], info)
    for seed in range(3):
        idx = torch.randperm(len(staged), generator=torch.Generator().manual_seed(seed))[:7]
        assert torch.equal(staged.batch(idx), whole[idx])
    with pytest.raises(TypeError, match="uint8"):
        common.SyntheticPixels(whole, info)


def recording(fit, log: list):
    """``fit`` that also records every batch it is given, epoch by epoch."""

    def wrapped(model, batches, recipe, **kw):
        def logged(epoch):
            for x, y in batches(epoch):
                log.append((x.clone(), y.clone()))
                yield x, y

        return fit(model, batches=logged, recipe=recipe, **kw)

    return wrapped


def test_soft_label_student_sees_the_inputs_and_gets_the_result_of_the_float_set(digits_teacher, monkeypatch):
    teacher, _ = digits_teacher
    test = load_dataset("digits", split="test")
    set_ = digits_subset()

    def run(store):
        log = []
        with monkeypatch.context() as m:
            m.setattr(soft, "SyntheticPixels", store)
            m.setattr(soft, "fit", recording(soft.fit, log))
            result = soft.train_student(set_, teacher=teacher, test_set=test, arch="convnet_bn", epochs=3, batch_size=8)
        return result, log

    (new, new_log), (old, old_log) = run(common.SyntheticPixels), run(FloatSet)
    assert len(new_log) == 3 * 4 and len(new_log) == len(old_log)
    for (xn, yn), (xo, yo) in zip(new_log, old_log):
        assert torch.equal(xn, xo) and torch.equal(yn, yo)
    assert new == old


def test_dc_student_gets_the_result_of_the_float_set(monkeypatch):
    test = load_dataset("digits", split="test")
    set_ = digits_subset()
    protocol = dc.DCProtocol(epochs=3, batch_size=8)
    new = dc.train_dc(set_, test_set=test, protocol=protocol, arch="convnet_bn")
    monkeypatch.setattr(dc, "SyntheticPixels", FloatSet)
    assert dc.train_dc(set_, test_set=test, protocol=protocol, arch="convnet_bn") == new
