"""The SRe2L family on the shared loop: what makes each method that method, and a digits run ± DiRe."""

import math

import pytest
import torch
import torch.nn.functional as F

from dire.data import from_uint8
from dire.metrics import intra_class_cosine
from dire.nets.models import embed_images
from dire.synthesis import DiReConfig, SynthesisConfig, build_method, synthesize
from dire.synthesis.base import Context, Unit
from dire.synthesis.cda import curriculum_min_scale
from dire.synthesis.delt import join_rounds, median_confidence_images
from dire.synthesis.dwa import perturb_weights


def _ctx(digits, **cfg):
    teacher, train, bank = digits
    return Context(teacher=teacher, dataset=train, config=SynthesisConfig(**cfg), device=torch.device("cpu"), bank=bank)


# --- CDA ---------------------------------------------------------------------------------------------------------


def test_cda_curricula_match_their_formulas():
    span = 1000
    for t in (0, 250, 500, 999):
        assert curriculum_min_scale(t, span, mode="cosine") == pytest.approx(
            0.08 + 0.92 * (1 + math.cos(math.pi * t / span)) / 2
        )
        assert curriculum_min_scale(t, span, mode="linear") == pytest.approx(0.08 + 0.92 * (1 - t / span))
        assert curriculum_min_scale(t, span, mode="step") == 1.0
    assert curriculum_min_scale(0, span) == pytest.approx(1.0)  # easy: the whole image first
    assert curriculum_min_scale(span, span, mode="step") == 0.08 == curriculum_min_scale(5000, span)  # hard after
    assert curriculum_min_scale(0, 0) == 0.08  # milestone 0: no curriculum


def test_cda_crop_scale_follows_the_curriculum_through_the_loop(digits, tmp_path, monkeypatch):
    """The crop scale passed to RandomResizedCrop at each iteration is (curriculum(t), 1), decreasing."""
    import dire.synthesis.sre2l as sre2l_module

    seen = []
    real_crop = sre2l_module.random_resized_crop
    monkeypatch.setattr(
        sre2l_module, "random_resized_crop", lambda x, g, scale: seen.append(scale) or real_crop(x, g, scale=scale)
    )
    method = build_method("cda", milestone=0.5, curriculum="linear")
    synthesize(method, _ctx(digits, ipc=1, iterations=10), out_dir=tmp_path, progress=False)
    lows = [lo for lo, hi in seen]
    assert all(hi == 1.0 for _, hi in seen) and len(seen) == 10
    assert lows == pytest.approx([0.08 + 0.92 * (1 - t / 5) for t in range(5)] + [0.08] * 5)


def test_cda_rejects_a_fixed_crop_and_unknown_curricula():
    with pytest.raises(ValueError, match="curriculum"):
        build_method("cda", crop_scale=(0.5, 1.0))
    with pytest.raises(ValueError, match="curriculum must be one of"):
        build_method("cda", curriculum="exp")


# --- DWA ---------------------------------------------------------------------------------------------------------


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_dwa_perturbation_has_radius_rho_ascends_ce_and_leaves_the_teacher_untouched(digits):
    teacher, train, _ = digits
    x, y = train.batch(torch.arange(0, 200, 7))
    before = _flat(teacher).clone()
    one = perturb_weights(teacher, x, y, rho=0.05, steps=1)
    assert float((_flat(one) - before).norm()) == pytest.approx(0.05, rel=1e-4)  # one normalised step: exactly rho
    many = perturb_weights(teacher, x, y, rho=0.05, steps=12)
    assert 0.5 * 0.05 < float((_flat(many) - before).norm()) <= 0.05 * (1 + 1e-5)  # K steps of rho/K: at most rho
    with torch.no_grad():
        assert F.cross_entropy(many(x), y) > F.cross_entropy(teacher(x), y)  # an ascent direction
    assert torch.equal(_flat(teacher), before)  # the cached teacher is never modified in place
    assert not teacher.training and not any(p.requires_grad for p in many.parameters())


def test_dwa_perturbs_a_fresh_copy_per_unit_and_starts_from_real_images(digits, tmp_path):
    teacher, train, _ = digits
    before = _flat(teacher).clone()
    ctx = _ctx(digits, ipc=2, iterations=3, ipc_per_unit=1)
    method = build_method("dwa")
    seen = []
    real_teacher = method.teacher
    method.teacher = lambda c: seen.append(id(real_teacher(c))) or real_teacher(c)
    out = synthesize(method, ctx, out_dir=tmp_path, progress=False)
    assert torch.equal(_flat(teacher), before) and "dwa_teacher" not in ctx.extra
    assert len(set(seen)) == 2 and len(seen) == 6  # one perturbed copy per unit, kept for all its iterations
    x = from_uint8(out["images"], train.info)
    assert float((teacher(x).argmax(1) == out["labels"]).float().mean()) >= 0.9


# --- DELT --------------------------------------------------------------------------------------------------------


def test_delt_groups_join_round_by_round():
    joins = join_rounds(50, 4000, 500)  # the release's example: 8 rounds
    assert [joins.count(g) for g in range(8)] == [7, 7, 6, 6, 6, 6, 6, 6]
    assert joins == sorted(joins)
    assert join_rounds(1, 4000, 500) == [0]  # IPC 1: no EarlyLate
    assert join_rounds(3, 100, 500) == [0, 0, 0]  # one round: everyone from the start


def test_delt_optimises_only_the_active_subset(digits, tmp_path):
    """With 3 images per class and 3 rounds of 2 iterations, image j is in the batch from iteration 2j on;
    an image that never joined keeps its (median-confidence) initial pixels exactly."""
    teacher, train, _ = digits
    method = build_method("delt", round_iterations=2)
    ctx = _ctx(digits, ipc=3, iterations=6, ipc_per_unit=3, classes_per_unit=2)
    unit = Unit(0, 0, (0, 1), (0, 1, 2))
    sizes = [len(method.active(ctx, unit, it)) for it in range(6)]
    assert sizes == [2, 2, 4, 4, 6, 6]
    batches = []
    real_loss = method.loss
    method.loss = lambda *a: batches.append(len(a[3][method.active(ctx, a[1], a[4])])) or real_loss(*a)
    short = _ctx(digits, ipc=3, iterations=6, ipc_per_unit=3, classes_per_unit=2)
    short.config.iterations = 6
    out = synthesize(method, short, out_dir=tmp_path, progress=False)
    assert batches[:6] == [2, 2, 4, 4, 6, 6]
    init = median_confidence_images(teacher, train.class_images(0), 0, 3)
    assert not torch.equal(out["images"][0], out["images"][2])
    # the last group joined at iteration 4 and was stepped twice; the first group six times: further from its start
    moved = (from_uint8(out["images"][:3], train.info) - init).flatten(1).norm(dim=1)
    assert moved[0] > moved[2] > 0


def test_delt_init_is_the_median_of_the_teacher_ranking(digits):
    teacher, train, _ = digits
    images = train.class_images(3)
    with torch.no_grad():
        p = teacher(images).softmax(1)[:, 3]
    picked = median_confidence_images(teacher, images, 3, 4)
    with torch.no_grad():
        q = teacher(picked).softmax(1)[:, 3]
    ranks = [(p < v).sum().item() for v in q]  # position of each pick in the sorted scores
    mid = (len(images) - 4) // 2
    assert sorted(ranks) == list(range(mid, mid + 4))


# --- every SRe2L-family method: a digits run with and without DiRe ------------------------------------------------


@pytest.mark.parametrize("name,settings", [("cda", {}), ("dwa", {}), ("delt", {"round_iterations": 20})])
def test_family_runs_on_digits_with_and_without_dire(digits, tmp_path, name, settings):
    teacher, train, _ = digits
    cfg = dict(ipc=5, iterations=60, ipc_per_unit=5, lr=0.25, seed=0)
    cos = {}
    for tag, dire in (("base", DiReConfig()), ("dire", DiReConfig(enabled=True))):
        out = synthesize(
            build_method(name, **settings), _ctx(digits, **cfg), out_dir=tmp_path / tag, dire=dire, progress=False
        )
        assert out["images"].shape == (50, 1, 8, 8) and torch.bincount(out["labels"]).tolist() == [5] * 10
        x = from_uint8(out["images"], train.info)
        # crops down to 8 % of an 8x8 image (CDA, DELT) make the full view a little harder than plain SRe2L
        assert float((teacher(x).argmax(1) == out["labels"]).float().mean()) >= 0.8, (name, tag)
        cos[tag] = intra_class_cosine(embed_images(teacher, x), out["labels"])["mean"]
    assert cos["dire"] < cos["base"], cos
