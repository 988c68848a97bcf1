"""DM: the matching loss, its Siamese augmentation, reproducibility, and a digits run with and without DiRe."""

import pytest
import torch

from dire.data import TensorImageDataset, dataset_info, from_uint8, load_dataset
from dire.data.dsa import DSA
from dire.metrics import intra_class_cosine
from dire.nets.models import embed_images
from dire.synthesis import DM, DiReConfig, SynthesisConfig, build_method, synthesize
from dire.synthesis.base import Context, Unit
from dire.synthesis.dm import fresh_network, mean_embedding_loss

CPU = torch.device("cpu")


def _ctx(dataset, **cfg):
    return Context(teacher=None, dataset=dataset, config=SynthesisConfig(**cfg), device=CPU)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_loss_is_zero_when_the_synthetic_batch_is_the_real_batch(digits):
    net = fresh_network("convnet", _ctx(digits), torch.Generator().manual_seed(0))
    real = [digits.class_images(c, limit=7) for c in range(3)]
    for seed in range(5):
        seeds = [seed, seed + 10, seed + 20]
        loss, z, z_real = mean_embedding_loss(net, real, [r.clone() for r in real], seeds, DSA())
        assert float(loss) == 0.0 and z.shape == (21, net.feature_dim) and len(z_real) == 3
        # not Siamese (another seed for the synthetic side): different transforms, a nonzero loss
        aug = DSA()
        other, _, _ = mean_embedding_loss(
            net, [aug(r, seed=seed) for r in real], [aug(r, seed=seed + 100) for r in real], [0, 0, 0], None
        )
        assert float(other) > 0


def test_dm_step_is_zero_when_the_class_holds_only_the_synthetic_images():
    """Through the method: a dataset with exactly IPC images per class, batch_real >= IPC and real init, so
    real and synthetic batches are the same images (in another order) under one Siamese transform."""
    info = dataset_info("digits")
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (30, 1, 8, 8), generator=g, dtype=torch.uint8)
    data = TensorImageDataset(info, pixels, torch.arange(10).repeat_interleave(3), [str(c) for c in range(10)])
    ctx = _ctx(data, ipc=3, ipc_per_unit=3, seed=1)
    dm = DM(batch_real=8)
    dm.setup(ctx)
    unit = Unit(0, 0, tuple(range(10)), (0, 1, 2))
    images = dm.init_images(ctx, unit, g)
    for it in range(3):
        step = dm.loss(ctx, unit, images, unit.labels(), it, torch.Generator().manual_seed(it))
        assert float(step.loss) < 1e-8 * float((step.embeddings**2).sum())
        bank = step.bank()
        assert bank.emb.shape == (10, 3, step.embeddings.shape[1]) and bank.count.tolist() == [3] * 10


def test_fresh_network_is_seeded_frozen_and_leaves_the_global_rng_alone(digits):
    ctx = _ctx(digits)
    state = torch.random.get_rng_state()
    a = fresh_network("convnet", ctx, torch.Generator().manual_seed(5))
    b = fresh_network("convnet", ctx, torch.Generator().manual_seed(5))
    c = fresh_network("convnet", ctx, torch.Generator().manual_seed(6))
    assert torch.equal(torch.random.get_rng_state(), state)
    wa, wb, wc = (next(n.parameters()) for n in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.training and not any(p.requires_grad for p in a.parameters())


def test_dm_settings_errors(digits, tmp_path):
    with pytest.raises(ValueError, match="set ipc_per_unit = ipc"):
        synthesize(DM(), _ctx(digits, ipc=2, ipc_per_unit=1), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="no setting"):
        build_method("dm", lr=1.0)
    assert isinstance(build_method("dm", lr_img=10.0), DM)


def _score(net_seeds, digits, images, labels):
    """DM's own objective without augmentation, full classes, averaged over held-out fresh networks."""
    ctx, total = _ctx(digits), 0.0
    real = [digits.class_images(c) for c in range(10)]
    for s in net_seeds:
        net = fresh_network("convnet", ctx, torch.Generator().manual_seed(s))
        total += float(mean_embedding_loss(net, real, [images[labels == c] for c in range(10)], [0] * 10, None)[0])
    return total / len(net_seeds)


def test_dm_on_digits_with_and_without_dire(digits, digits_teacher, tmp_path):
    """Integration: DM moves real-initialised images towards the class mean embedding of held-out random
    networks; DiRe (through the per-iteration bank) changes the result and lowers intra-class cosine
    in the trained teacher's space."""
    teacher, _ = digits_teacher
    cfg = dict(ipc=5, iterations=30, ipc_per_unit=5, seed=0)
    method = dict(batch_real=64, lr_img=10.0)  # 8-px digits have 128-d embeddings, so smaller gradients than FMNIST
    base = synthesize(DM(**method), _ctx(digits, **cfg), out_dir=tmp_path / "base", progress=False)
    reg = synthesize(
        DM(**method),
        _ctx(digits, **cfg),
        out_dir=tmp_path / "dire",
        dire=DiReConfig(enabled=True, weight=1.0),
        progress=False,
    )
    init = DM().init_images(_ctx(digits, **cfg), Unit(0, 0, tuple(range(10)), tuple(range(5))), None)
    labels = torch.arange(10).repeat_interleave(5)
    assert base["images"].shape == (50, 1, 8, 8) and torch.equal(base["labels"], labels)
    x_base, x_reg = from_uint8(base["images"], digits.info), from_uint8(reg["images"], digits.info)
    held_out = [1000, 1001, 1002, 1003]
    assert _score(held_out, digits, x_base, labels) < 0.9 * _score(held_out, digits, init, labels)
    assert not torch.equal(base["images"], reg["images"])
    cos = {
        name: intra_class_cosine(embed_images(teacher, x), labels)["mean"]
        for name, x in (("base", x_base), ("dire", x_reg))
    }
    assert cos["dire"] < cos["base"] - 0.002, cos  # measured: 0.837 -> 0.833
    for x in (x_base, x_reg):
        assert float((teacher(x).argmax(1) == labels).float().mean()) >= 0.9
