"""MTT: expert caching and resume, the normalised loss, syn_lr saved with the set, a digits run ± DiRe."""

import pytest
import torch

import dire.nets.experts as mtt_module
from dire.data import from_uint8, load_dataset
from dire.nets.experts import ExpertConfig, Experts, train_experts
from dire.nets.models import MODELS, build_model
from dire.synthesis import MTT, DiReConfig, SynthesisConfig, build_method, synthesize
from dire.synthesis.base import Context, Unit
from dire.synthesis.mtt import MTT_SETTINGS, method_settings, mtt_settings

CPU = torch.device("cpu")
EXPERT = ExpertConfig(
    epochs=4, batch_size=32, model="convnet_nn"
)  # digits are few: small batches give 45 steps an epoch


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits"), load_dataset("digits", split="test")


@pytest.fixture(scope="module")
def experts_dir(digits, tmp_path_factory):
    train, test = digits
    return train_experts(
        train, num_experts=2, config=EXPERT, test_set=test, runs_root=tmp_path_factory.mktemp("runs"), progress=False
    )


def _ctx(train, **cfg):
    return Context(teacher=None, dataset=train, config=SynthesisConfig(**cfg), device=CPU)


def test_experts_are_cached_with_one_trajectory_row_per_epoch(digits, experts_dir, monkeypatch):
    train, test = digits
    experts = Experts(experts_dir)
    net = build_model("convnet_nn", num_classes=10, in_channels=1, image_size=8)
    p = sum(t.numel() for t in net.parameters())
    assert len(experts) == 2 and experts.trajectory(0).shape == (EXPERT.epochs + 1, p)
    steps = (experts.trajectory(0)[1:] - experts.trajectory(0)[:-1]).norm(dim=1)
    assert (steps > 0).all()  # the expert moves every epoch
    assert not torch.equal(experts.trajectory(0)[0], experts.trajectory(1)[0])  # different inits
    assert all(0 <= acc <= 100 for acc in experts.test_acc())  # recorded (4 epochs without a norm stay near chance)
    # the same settings find the cache: nothing is trained again
    monkeypatch.setattr(mtt_module, "build_model", lambda *a, **k: pytest.fail("experts should come from the cache"))
    assert (
        train_experts(train, num_experts=2, config=EXPERT, runs_root=experts_dir.parent.parent, progress=False)
        == experts_dir
    )


def test_an_interrupted_expert_resumes_to_the_same_trajectory(digits, experts_dir, tmp_path, monkeypatch):
    train, _ = digits
    saves = []
    real_save = mtt_module.atomic_save

    def crash_after_two_epochs(obj, path):
        real_save(obj, path)
        saves.append(path.name)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(mtt_module, "atomic_save", crash_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        train_experts(train, num_experts=1, config=EXPERT, runs_root=tmp_path, progress=False)
    monkeypatch.setattr(mtt_module, "atomic_save", real_save)
    folder = train_experts(train, num_experts=1, config=EXPERT, runs_root=tmp_path, progress=False)
    assert saves == ["expert_0000.partial.pt"] * 2 and not list(folder.glob("*.partial.pt"))
    assert torch.equal(Experts(folder).trajectory(0), Experts(experts_dir).trajectory(0))


def _mtt(experts_dir, **kw):
    return MTT(experts_dir=str(experts_dir), **{**method_settings("digits", 5), **kw})


def test_loss_is_exactly_one_when_the_student_does_not_move(digits, experts_dir):
    train, _ = digits
    ctx = _ctx(train, ipc=5, ipc_per_unit=5)
    method = _mtt(experts_dir, syn_steps=3)
    method.setup(ctx)
    unit = Unit(0, 0, tuple(range(10)), tuple(range(5)))
    images = method.init_images(ctx, unit, torch.Generator().manual_seed(0)).requires_grad_()
    for expert in (0, 1):
        for t in (0, 1):
            loss, z, y, _ = method.trajectory_loss(
                images, unit.labels(), torch.tensor(0.0), expert, t, torch.Generator().manual_seed(t)
            )
            assert loss.item() == 1.0 and z.shape == (50, 128) and len(y) == 50
    # a moving student (the experts' own lr) ends nearer the target than it started
    loss, *_ = method.trajectory_loss(
        images, unit.labels(), torch.tensor(0.01, requires_grad=True), 0, 0, torch.Generator().manual_seed(0)
    )
    loss.backward()
    assert loss.item() < 1.0 and images.grad.abs().sum() > 0


def test_settings_table_and_errors(digits, experts_dir, tmp_path):
    assert mtt_settings("cifar10", 10)["syn_steps"] == 30 and mtt_settings("cifar100", 50)["batch_syn"] == 125
    assert all(row["model"] in MODELS for row in MTT_SETTINGS.values())
    assert set(method_settings("fashion-mnist", 10)) <= set(MTT.__dataclass_fields__)
    with pytest.raises(ValueError, match="no MTT settings"):
        mtt_settings("mnist", 10)
    train, _ = digits
    # one unit of the whole set, whatever layout the shared settings give the SRe2L family
    units = _mtt(experts_dir).units(_ctx(train, ipc=2, ipc_per_unit=1, classes_per_unit=3))
    assert len(units) == 1 and units[0].slots == (0, 1) and units[0].classes == tuple(range(10))
    with pytest.raises(ValueError, match="exceeds the experts' 4 epochs"):
        synthesize(
            _mtt(experts_dir, max_start_epoch=5),
            _ctx(train, ipc=1, ipc_per_unit=1),
            out_dir=tmp_path / "b",
            progress=False,
        )
    with pytest.raises(FileNotFoundError, match="train_experts"):
        synthesize(_mtt(tmp_path), _ctx(train, ipc=1, ipc_per_unit=1), out_dir=tmp_path / "c", progress=False)
    assert isinstance(build_method("mtt", experts_dir=str(experts_dir)), MTT)


def _mean_loss(method, images, labels, syn_lr):
    losses = [
        method.trajectory_loss(images, labels, torch.tensor(syn_lr), e, t, torch.Generator().manual_seed(s))[0]
        for e in (0, 1)
        for t in (0, 1)
        for s in (0, 1)
    ]
    return torch.stack(losses).mean().item()


def test_mtt_on_digits_with_and_without_dire(digits, experts_dir, tmp_path):
    """Integration: the set and its learned syn_lr are saved; the trajectory loss falls below that of the
    real initial images; DiRe (on the first unrolled step, bank in θ*_t) changes the result."""
    train, _ = digits
    cfg = dict(ipc=5, ipc_per_unit=5, iterations=15, seed=0)
    base = synthesize(_mtt(experts_dir), _ctx(train, **cfg), out_dir=tmp_path / "base", progress=False)
    reg = synthesize(
        _mtt(experts_dir),
        _ctx(train, **cfg),
        out_dir=tmp_path / "dire",
        dire=DiReConfig(enabled=True, weight=1.0),
        progress=False,
    )
    labels = torch.arange(10).repeat_interleave(5)
    assert base["images"].shape == (50, 1, 8, 8) and torch.equal(base["labels"], labels)
    assert base["syn_lr"].shape == () and float(base["syn_lr"]) != 0.01  # learned, and saved with the set
    assert not torch.equal(base["images"], reg["images"])
    probe = _mtt(experts_dir, dsa=False)
    probe.setup(_ctx(train, **cfg))
    init = probe.init_images(_ctx(train, **cfg), Unit(0, 0, tuple(range(10)), tuple(range(5))), None)
    before = _mean_loss(probe, init, labels, 0.01)
    after = _mean_loss(probe, from_uint8(base["images"], train.info), labels, float(base["syn_lr"]))
    assert after < 0.9 * before, (before, after)  # measured: 0.77 -> 0.5
