"""Training pieces: schedule, KD loss, augmentations; a teacher and a student on digits."""

import math

import pytest
import torch

from dire.data import load_dataset
from dire.data.augment import mixup, random_flip, random_resized_crop, random_roll
from dire.evaluation.common import summarize
from dire.evaluation.soft import evaluate_synthetic
from dire.nets.train import Recipe, get_recipe, kd_loss, lr_at


def test_cosine_schedule_with_warmup():
    r = Recipe(epochs=10, lr=0.2, warmup_epochs=2)
    assert lr_at(r, 0) == pytest.approx(0.0, abs=1e-6) and lr_at(r, 1) == pytest.approx(0.1)
    assert (
        lr_at(r, 2) == pytest.approx(0.2) and lr_at(r, 6) == pytest.approx(0.1) and lr_at(r, 10) == pytest.approx(0.0)
    )


def test_kd_loss_against_float64_formula():
    s, t = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    T = 3.0
    p, log_q = torch.softmax(t / T, 1), torch.log_softmax(s / T, 1)
    want = float((p * (torch.log(p) - log_q)).sum() / 4)  # KL(p || q), batch mean, no T^2
    assert float(kd_loss(s, t, T)) == pytest.approx(want, rel=1e-12)


def test_augmentations():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 8, 8, requires_grad=True)
    rolled = random_roll(x, 3, torch.Generator().manual_seed(1))
    shifts = [(a, b) for a in range(4) for b in range(4) if torch.equal(rolled, torch.roll(x, (a, b), (2, 3)))]
    assert len(shifts) == 1  # exactly one circular shift in U{0..3}^2
    flipped = random_flip(x, g)
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(2)) for f, o in zip(flipped, x))
    crop = random_resized_crop(x, g, scale=(0.3, 0.6))
    crop.sum().backward()  # differentiable
    assert crop.shape == x.shape and x.grad is not None
    a = torch.stack([torch.zeros(2, 8, 8), torch.ones(2, 8, 8)])
    m = mixup(a, 0.8, g)
    lam = float(m[0].mean())  # every pixel of a mixed image is one λ-combination
    assert torch.allclose(m[0], torch.full_like(m[0], lam)) and 0 <= lam <= 1
    assert torch.equal(mixup(a, 0.0, g), a)


def test_recipes():
    assert get_recipe("cifar", student=True).temperature == 30 and get_recipe("cifar", student=True).epochs == 400
    assert get_recipe("cifar", student=False).lr == 0.1
    with pytest.raises(ValueError, match="unknown student recipe 'x'"):
        get_recipe("x", student=True)
    with pytest.raises(ValueError, match="optimizer must be"):
        get_recipe("cpu", student=True, optimizer="lamb")
    with pytest.raises(
        ValueError, match=r"unknown recipe setting\(s\) \['learning_rate'\].*fields of dire.nets.train.Recipe"
    ):
        get_recipe("cpu", student=True, learning_rate=1e-3)


def test_teacher_and_student_learn_digits(digits_teacher, runs_root):
    teacher, record = digits_teacher
    assert record["test_acc"] > 90  # measured: ~98% after 6 CPU epochs
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    idx = torch.cat([train.class_indices(c)[:5] for c in range(10)])
    subset = {"images": (train.pixels[idx] * 255).round().to(torch.uint8), "labels": train.targets[idx]}
    out = evaluate_synthetic(
        subset, teacher=teacher, test_set=test, seeds=(0, 1), cache_key={"what": "real5"}, runs_root=runs_root
    )
    assert out["final"]["n"] == 2 and out["best"]["mean"] >= out["final"]["mean"]
    assert out["final"]["mean"] > 50  # 5 real images per class + teacher soft labels; chance is 10%
    again = evaluate_synthetic(
        subset, teacher=teacher, test_set=test, seeds=(0, 1), cache_key={"what": "real5"}, runs_root=runs_root
    )
    assert again == out  # cached per seed


def test_summarize():
    s = summarize([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["n"] == 3
    assert summarize([5.0])["std"] == 0.0 and math.isfinite(summarize([5.0])["mean"])


def test_loader_yields_every_item_once_in_batches():
    from dire.nets.train import loader

    ds = load_dataset("digits", split="test")
    batches = list(loader(ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [64] * 5 + [40]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    all_x, all_y = ds.tensors()
    # same multiset of (image, label) pairs as the dataset, in a shuffled order
    key = lambda imgs, labels: sorted(zip(imgs.flatten(1).sum(1).tolist(), labels.tolist()))  # noqa: E731
    assert key(x, y) == key(all_x, all_y) and not torch.equal(y, all_y)
