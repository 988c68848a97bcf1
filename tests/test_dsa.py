"""DSA: differentiable, Siamese under one seed, exact where the transform is known."""

import math

import pytest
import torch

from dire.data.dsa import DSA, GROUPS, STRATEGY, DSAParams, apply_group, dsa, parse_strategy


def _images(n=4, c=3, size=12, seed=0):
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_is_differentiable_with_finite_nonzero_grads(group):
    x = _images().requires_grad_()
    y = apply_group(x, group, seed=3)
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("group", ["scale", "rotate", "color"])
def test_gradcheck_smooth_groups(group):
    x = _images(n=2, c=1, size=6).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: apply_group(t, group, seed=5), (x,))


def test_siamese_same_seed_same_transform_for_batches_of_any_size():
    real, syn = _images(n=9, seed=1), _images(n=3, seed=2)
    for seed in range(30):
        # the synthetic batch equal to the first real images gets exactly their augmentation
        both_real = dsa(real, seed=seed)
        both_syn = dsa(real[:3].clone(), seed=seed)
        assert torch.equal(both_real[:3], both_syn), seed
        assert torch.equal(dsa(syn, seed=seed), dsa(syn, seed=seed))


def test_different_seeds_give_different_transforms():
    x = _images()
    outs = [dsa(x, seed=s) for s in range(10)]
    assert sum(not torch.equal(outs[0], o) for o in outs[1:]) >= 8


def test_siamese_applies_one_transform_per_batch_per_sample_mode_does_not():
    same = _images(n=1, c=1).repeat(6, 1, 1, 1)
    for seed in range(20):  # identical inputs + one shared transform = identical outputs
        y = apply_group(same, "rotate", seed=seed)
        assert torch.allclose(y, y[:1].expand_as(y))
    y = apply_group(same, "rotate", generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(y, y[:1].expand_as(y))


def test_flip_twice_is_identity_and_identity_params_preserve_images():
    x = _images()
    for seed in range(10):
        assert torch.allclose(apply_group(apply_group(x, "flip", seed=seed), "flip", seed=seed), x, atol=1e-5)
    always = DSAParams(flip=1.0)
    assert torch.allclose(apply_group(x, "flip", seed=0, params=always), x.flip(3), atol=1e-5)
    # rotation by 0°, scale 1, no translation, brightness 0 / saturation x1 / contrast x1 are identities
    identity = DSAParams(rotate=0.0, scale=1.0, crop=0.0, brightness=0.0)
    for group in ("rotate", "scale", "crop"):
        assert torch.allclose(apply_group(x, group, seed=1, params=identity), x, atol=1e-5), group


def test_crop_translates_by_whole_pixels_and_cutout_zeroes_a_square():
    x = torch.arange(64.0).view(1, 1, 8, 8) + 1
    for seed in range(10):
        y = apply_group(x, "crop", seed=seed)
        kept = y[y != 0]
        # a shifted window of x: the surviving values keep their row/column spacing
        assert set(kept.tolist()) <= set(x.flatten().tolist()) and len(kept) >= 7 * 7
        z = apply_group(x, "cutout", seed=seed)
        zeroed = int((z == 0).sum())
        assert 0 < zeroed <= 16 and torch.equal(z[z != 0], x[z != 0])


def test_saturation_is_a_noop_on_one_channel():
    x = _images(c=1)
    g = torch.Generator().manual_seed(0)
    y = apply_group(x, "color", generator=g, params=DSAParams(brightness=0.0, saturation=0.0, contrast=0.5))
    g = torch.Generator().manual_seed(0)
    z = apply_group(x, "color", generator=g, params=DSAParams(brightness=0.0, saturation=2.0, contrast=0.5))
    assert torch.allclose(y, z, atol=1e-6)  # the same draws, only the saturation factor differs
    rgb = _images(c=3)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert not torch.allclose(
        apply_group(rgb, "color", generator=g1, params=DSAParams(saturation=0.0)),
        apply_group(rgb, "color", generator=g2, params=DSAParams(saturation=2.0)),
    )


def test_rotation_angle_range():
    # a single bright pixel off-centre moves along a circle by at most 15 degrees
    x = torch.zeros(1, 1, 33, 33)
    x[0, 0, 16, 28] = 1.0
    for seed in range(20):
        y = apply_group(x, "rotate", seed=seed)
        idx = int(y.flatten().argmax())
        r, c = divmod(idx, 33)
        angle = math.degrees(math.atan2(-(r - 16), c - 16))
        assert abs(angle) <= 16.0 and y.sum() > 0.5


def test_dsa_class_and_errors():
    assert parse_strategy(STRATEGY) == GROUPS and parse_strategy("none") == ()
    x = _images()
    assert torch.equal(DSA("none")(x, seed=0), x)
    assert torch.equal(DSA()(x, seed=4), dsa(x, seed=4))
    with pytest.raises(ValueError, match="unknown DSA group"):
        DSA("color_blur")
    with pytest.raises(ValueError, match="exactly one of seed"):
        dsa(x)
    with pytest.raises(ValueError, match="exactly one of seed"):
        dsa(x, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        dsa(x[0], seed=1)
