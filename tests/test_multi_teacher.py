"""G-VBSM and UFC: the multi-teacher methods; their statistics, losses and layouts against hand computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dire.data import from_uint8, to_uint8
from dire.metrics import intra_class_cosine
from dire.nets.bank import real_embedding_bank
from dire.nets.models import embed_images
from dire.synthesis import DiReConfig, SynthesisConfig, build_method, synthesize
from dire.synthesis.base import Context
from dire.synthesis.gvbsm import StatisticsMatcher, conv_statistics, densification_loss, feature_statistics
from dire.synthesis.ufc import ufc_ipc_init


@pytest.fixture(scope="module")
def two_teachers(digits, runs_root):
    """The shared digits ConvNet-BN teacher and a narrower ConvNet-BN, with their banks."""
    from dire.nets.teacher import get_teacher

    teacher, train, bank = digits
    second, _ = get_teacher("digits", "convnet_bn_w32", recipe="cpu", seed=1, runs_root=runs_root, progress=False)
    return [teacher, second], train, [bank, real_embedding_bank(second, train, per_class=100)]


def _ctx(two_teachers, tmp_path=None, **cfg):
    teachers, train, banks = two_teachers
    return Context(
        teacher=teachers[0],
        dataset=train,
        config=SynthesisConfig(**cfg),
        device=torch.device("cpu"),
        bank=banks[0],
        teachers=teachers,
        banks=banks,
        cache_dir=tmp_path,
    )


# --- G-VBSM statistics -------------------------------------------------------------------------------------------


def test_feature_statistics_match_a_float64_loop():
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    stats = feature_statistics(x)
    assert torch.allclose(stats["mean"], x.mean(dim=(0, 2, 3))) and torch.allclose(
        stats["var"], x.var(dim=(0, 2, 3), unbiased=False)
    )
    blocks = [x[:, :, 4 * u : 4 * u + 4, 4 * v : 4 * v + 4].flatten().numpy() for u in range(2) for v in range(2)]
    assert np.allclose(stats["patch_mean"].numpy(), [b.mean() for b in blocks])
    assert np.allclose(stats["patch_var"].numpy(), [b.var() for b in blocks])
    # 6x6 maps are resized to 8x8 first (bilinear)
    y = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    up = F.interpolate(y, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(feature_statistics(y)["patch_mean"], feature_statistics(up)["patch_mean"])


def test_conv_statistics_are_batch_weighted_averages_and_cached(digits, tmp_path):
    teacher, train, _ = digits
    stats = conv_statistics(teacher, train, batch_size=100, cache=tmp_path / "s.pt")
    x, _ = train.tensors()
    # the first conv sees the images themselves: the average of batch means is the dataset's channel mean
    assert torch.allclose(stats[0]["mean"], x.mean(dim=(0, 2, 3)), atol=1e-5)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    per_batch = [feature_statistics(x[order[i : i + 100]]) for i in range(0, len(x), 100)]
    weights = [len(order[i : i + 100]) for i in range(0, len(x), 100)]
    expected = sum(w * b["patch_var"] for w, b in zip(weights, per_batch)) / sum(weights)
    assert torch.allclose(stats[0]["patch_var"], expected, atol=1e-5)
    assert len(stats) == sum(isinstance(m, torch.nn.Conv2d) for m in teacher.modules())
    again = conv_statistics(teacher, train, batch_size=7, cache=tmp_path / "s.pt")  # from the cache
    assert torch.equal(again[1]["mean"], stats[1]["mean"])


def test_matcher_matches_the_ema_value_and_drops_conv_terms(digits):
    teacher, train, _ = digits
    targets = conv_statistics(teacher, train, max_images=200)
    matcher = StatisticsMatcher(teacher, targets, momentum=0.8, drop_rate=0.0)
    a, _ = train.batch(torch.arange(0, 20))
    b, _ = train.batch(torch.arange(20, 40))
    with matcher:
        teacher(a)
    with matcher:
        teacher(b)
    first_conv = [m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d)][0]
    assert matcher.layers[0][0] is first_conv
    ema = {k: 0.8 * feature_statistics(a)[k] + 0.2 * feature_statistics(b)[k] for k in targets[0]}
    expected = sum(torch.linalg.vector_norm(targets[0][k] - ema[k]) for k in ema)
    assert float(matcher.terms[0]) == pytest.approx(float(expected), rel=1e-5)
    matcher.drop_rate = 1.0
    matcher.draw_drops(torch.Generator().manual_seed(0))
    with matcher:
        teacher(a)
    kinds = [k for _, k in matcher.layers]
    assert all(float(t) == 0 for t, k in zip(matcher.terms, kinds) if k == "conv")
    assert all(float(t.detach()) > 0 for t, k in zip(matcher.terms, kinds) if k == "bn")


def test_densification_matches_a_float64_eigen_reference():
    x = 0.03 * torch.randn(6, 1, 8, 8)  # eigenvalues of order 1, so both softmaxes are far from one-hot
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    expected = 0.0
    for c in (0, 1):
        flat = F.adaptive_avg_pool2d(x[labels == c].double(), 32).flatten(1).numpy()
        lam = np.linalg.eigvalsh(flat @ flat.T)
        p = np.exp(lam / 4 - (lam / 4).max())
        p /= p.sum()
        log_q = lam - lam.max() - np.log(np.exp(lam - lam.max()).sum())
        expected += float((p * (np.log(p) - log_q)).sum())
    assert float(densification_loss(x, labels, tau=4.0)) == pytest.approx(expected, rel=1e-3)
    x.requires_grad_()
    densification_loss(x, labels).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gvbsm_uses_the_teachers_round_robin(two_teachers, tmp_path):
    teachers, _, _ = two_teachers
    calls = []
    handles = [t.head.register_forward_hook(lambda *_a, i=i: calls.append(i)) for i, t in enumerate(teachers)]
    try:
        synthesize(
            build_method("gvbsm"),
            _ctx(two_teachers, tmp_path, ipc=2, iterations=5, ipc_per_unit=2),
            out_dir=tmp_path / "out",
            progress=False,
        )
    finally:
        for h in handles:
            h.remove()
    assert calls[-5:] == [0, 1, 0, 1, 0]  # after the statistics pass of each teacher in setup
    assert len(list(tmp_path.glob("gvbsm_conv_statistics_*.pt"))) == 2  # computed once per teacher, cached


# --- UFC ---------------------------------------------------------------------------------------------------------


def test_ufc_budget_matches_the_release_example():
    assert ufc_ipc_init(10, 4, 100) == 9  # CIFAR-100, IPC 10, 4 teachers: 9 real, 45 training images per class
    assert ufc_ipc_init(10, 2, 10) == 8
    with pytest.raises(ValueError, match="leaves no real image"):
        ufc_ipc_init(1, 4, 10)


def test_ufc_optimises_only_one_shared_compensator_per_teacher(two_teachers, tmp_path):
    teachers, train, _ = two_teachers
    method = build_method("ufc")
    captured = []
    start = method.start_unit
    method.start_unit = lambda *a: captured.append(start(*a)) or captured[-1]
    out = synthesize(method, _ctx(two_teachers, ipc=3, iterations=20), out_dir=tmp_path, progress=False)
    n = ufc_ipc_init(3, 2, 10)
    assert n == 2 and len(captured) == n  # one unit per real slot
    for params in captured:
        assert len(params) == 2 and all(p.shape == (1, 1, 8, 8) and p.abs().sum() > 0 for p in params)
    # each unit stores the plain real images, then real + U_m for each teacher, all classes sharing U_m
    unit = torch.load(tmp_path / "unit_0000_0000.pt")
    real = method.real if len(captured) == 1 else None
    assert unit["images"].shape == (30, 1, 8, 8) and unit["labels"].tolist() == list(range(10)) * 3
    g = torch.Generator().manual_seed(0 * 1_000_003 + 4)
    real4 = train.class_images(4, limit=3, generator=g)[0]
    assert torch.equal(unit["images"][4], to_uint8(real4[None], train.info)[0])
    u0 = captured[0][0].detach()
    assert torch.equal(unit["images"][14], to_uint8(real4[None] + u0, train.info)[0])
    assert out["images"].shape == (n * 3 * 10, 1, 8, 8) and real is None


@pytest.mark.parametrize("name", ["gvbsm", "ufc"])
def test_multi_teacher_methods_run_on_digits_with_and_without_dire(two_teachers, tmp_path, name, monkeypatch):
    """Both keep the images recognisable with DiRe on, and DiRe acts on every teacher's embeddings against that
    teacher's own bank. G-VBSM's class-major batches let DiRe lower intra-class cosine; UFC optimises one image per
    class per unit (a shared compensator), so only DiRe's EDM term has something to act on there."""
    from dire.regularizer import DiRe

    teachers, train, banks = two_teachers
    cfg = dict(ipc=5, iterations=40, ipc_per_unit=5, lr=0.25, seed=0, init="real" if name == "ufc" else "noise")
    # G-VBSM's CIFAR shifts (roll 32, crop padding 4) scaled to 8-px digits
    settings = {"jitter": 2, "crop_padding": 1} if name == "gvbsm" else {}
    seen = []
    real_forward = DiRe.forward
    monkeypatch.setattr(
        DiRe, "forward", lambda self, z, y, bank: seen.append((z.shape[1], id(bank))) or real_forward(self, z, y, bank)
    )
    cos, images = {}, {}
    for tag, dire in (("base", DiReConfig()), ("dire", DiReConfig(enabled=True))):
        out = synthesize(
            build_method(name, **settings),
            _ctx(two_teachers, tmp_path / f"c{tag}", **cfg),
            out_dir=tmp_path / tag,
            dire=dire,
            progress=False,
        )
        x = from_uint8(out["images"], train.info)
        acc = float((teachers[0](x).argmax(1) == out["labels"]).float().mean())
        assert acc >= 0.8, (name, tag, acc)
        cos[tag] = intra_class_cosine(embed_images(teachers[0], x), out["labels"])["mean"]
        images[tag] = out["images"]
    expected = {(t.feature_dim, id(b)) for t, b in zip(teachers, banks)}
    assert set(seen) == expected  # each teacher's embeddings with its own bank
    assert not torch.equal(images["base"], images["dire"])
    if name == "gvbsm":
        assert cos["dire"] < cos["base"], cos
