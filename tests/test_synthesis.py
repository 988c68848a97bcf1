"""The shared synthesis loop: unit layouts, resume, clamping, determinism; SRe2L on digits."""

import pytest
import torch

from dire.data import from_uint8, load_dataset
from dire.metrics import intra_class_cosine
from dire.nets.models import embed_images
from dire.synthesis import DiReConfig, SRe2L, SynthesisConfig, plan_units, synthesize
from dire.synthesis import base as synthesis_base
from dire.synthesis.base import Context


def test_plan_units_layouts():
    sre2l = plan_units(SynthesisConfig(ipc=3, ipc_per_unit=1), 10)
    assert len(sre2l) == 3 and all(u.classes == tuple(range(10)) and len(u.slots) == 1 for u in sre2l)
    assert [int(x) for x in sre2l[0].labels()] == list(range(10))  # one image per class
    release = plan_units(SynthesisConfig(ipc=25, ipc_per_unit=10, classes_per_unit=4), 10)
    # 3 class blocks (4, 4, 2 classes) x 3 chunks (10, 10, 5 slots)
    assert len(release) == 9
    assert [len(u.classes) for u in release[::3]] == [4, 4, 2] and [len(u.slots) for u in release[:3]] == [10, 10, 5]
    assert release[0].labels().tolist() == [0] * 10 + [1] * 10 + [2] * 10 + [3] * 10  # class-major blocks
    # every (class, slot) pair exactly once
    pairs = {(c, s) for u in release for c in u.classes for s in u.slots}
    assert len(pairs) == 250 == sum(len(u.classes) * len(u.slots) for u in release)


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(ipc=0), r"SynthesisConfig.ipc = 0 is not allowed; expected a finite number >=1"),
        (dict(classes_per_unit=11), "classes_per_unit must be in 1..10"),
        (dict(init="zeros"), "init must be 'noise' or 'real'"),
        (dict(lr=float("nan")), r"SynthesisConfig.lr = nan is not allowed; expected a finite number >0"),
        (dict(seed=2**40), r"expected an integer seed in \[0, 4294967296\)"),
    ],
)
def test_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        SynthesisConfig(**bad).validate(10)


def _ctx(digits, **cfg):
    teacher, train, bank = digits
    return Context(teacher=teacher, dataset=train, config=SynthesisConfig(**cfg), device=torch.device("cpu"), bank=bank)


def test_resume_skips_finished_units_and_reproduces_the_rest(digits, tmp_path, monkeypatch):
    cfg = dict(ipc=3, iterations=5, ipc_per_unit=1, seed=7)
    first = synthesize(SRe2L(), _ctx(digits, **cfg), out_dir=tmp_path / "a", progress=False)
    # interrupted run: one unit missing, no assembled file
    (tmp_path / "a" / "synthetic.pt").unlink()
    (tmp_path / "a" / "unit_0000_0001.pt").unlink()
    calls = []
    real_run_unit = synthesis_base.run_unit
    monkeypatch.setattr(synthesis_base, "run_unit", lambda *a, **k: calls.append(a[2].name) or real_run_unit(*a, **k))
    resumed = synthesize(SRe2L(), _ctx(digits, **cfg), out_dir=tmp_path / "a", progress=False)
    assert calls == ["unit_0000_0001"]
    assert torch.equal(first["images"], resumed["images"]) and torch.equal(first["labels"], resumed["labels"])
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_images_stay_in_valid_range_and_real_init_starts_from_real_images(digits, tmp_path):
    teacher, train, _ = digits
    out = synthesize(
        SRe2L(), _ctx(digits, ipc=2, iterations=1, init="real", ipc_per_unit=2), out_dir=tmp_path, progress=False
    )
    assert out["images"].dtype == torch.uint8 and out["images"].shape == (20, 1, 8, 8)
    assert torch.bincount(out["labels"]).tolist() == [2] * 10
    # one tiny Adam step from real images: still close to real images of the right class
    x = from_uint8(out["images"], train.info)
    assert float((teacher(x).argmax(1) == out["labels"]).float().mean()) >= 0.9


def test_dire_needs_a_bank(digits, tmp_path):
    ctx = _ctx(digits, ipc=1, iterations=1)
    ctx.bank = None
    with pytest.raises(ValueError, match="no real embedding bank"):
        synthesize(SRe2L(), ctx, out_dir=tmp_path, dire=DiReConfig(enabled=True), progress=False)


def test_sre2l_with_and_without_dire_on_digits(digits, tmp_path):
    """Integration: SRe2L recovers images the teacher classifies as their labels; in the release layout
    (a class's images optimised together) DiRe lowers their intra-class cosine similarity."""
    teacher, train, _ = digits
    cfg = dict(ipc=5, iterations=60, ipc_per_unit=5, lr=0.25, seed=0)
    base = synthesize(SRe2L(), _ctx(digits, **cfg), out_dir=tmp_path / "base", progress=False)
    reg = synthesize(
        SRe2L(), _ctx(digits, **cfg), out_dir=tmp_path / "dire", dire=DiReConfig(enabled=True), progress=False
    )
    cos = {}
    for name, out in (("base", base), ("dire", reg)):
        x = from_uint8(out["images"], train.info)
        assert float((teacher(x).argmax(1) == out["labels"]).float().mean()) >= 0.9, name
        cos[name] = intra_class_cosine(embed_images(teacher, x), out["labels"])["mean"]
    assert cos["dire"] < cos["base"] - 0.05, cos  # measured here: 0.88 -> 0.76 at the release weight


class _Toy(synthesis_base.Method):
    """A teacher-free method: pulls pixels to 0, its own bank per step (as DM/MTT), one learned extra."""

    name = "toy"
    own_bank = True

    def __init__(self):
        self.bank_calls = 0

    def start_unit(self, ctx, unit, images, generator):
        return [images.requires_grad_(), torch.tensor(2.0, requires_grad=True)]

    def loss(self, ctx, unit, images, labels, iteration, generator):
        def bank():
            self.bank_calls += 1
            from dire.regularizer import RealBank

            return RealBank.from_dict({c: torch.randn(4, images[0].numel(), generator=generator) for c in unit.classes})

        return synthesis_base.Step((images**2).mean(), images.flatten(1), bank=bank)

    def extras(self, ctx, unit, params):
        return {"scale": params[1] * (unit.chunk + 1)}


def test_teacher_free_method_with_its_own_bank_and_extras(tmp_path):
    train = load_dataset("digits")
    ctx = Context(
        teacher=None,
        dataset=train,
        config=SynthesisConfig(ipc=2, iterations=3, ipc_per_unit=1),
        device=torch.device("cpu"),
    )
    assert ctx.teachers == [] and ctx.bank is None
    toy = _Toy()
    out = synthesize(toy, ctx, out_dir=tmp_path / "on", dire=DiReConfig(enabled=True), progress=False)
    assert toy.bank_calls == 2 * 3  # the bank function runs only because DiRe is on: every step of both units
    # extras of two units are stacked in unit order, in the unit files and in synthetic.pt
    assert torch.equal(out["scale"], torch.tensor([2.0, 4.0]))
    assert torch.equal(synthesis_base.load(tmp_path / "on" / "unit_0000_0001.pt")["extras"]["scale"], torch.tensor(4.0))
    toy_off = _Toy()
    synthesize(toy_off, ctx, out_dir=tmp_path / "off", progress=False)
    assert toy_off.bank_calls == 0


def test_extras_may_not_shadow_the_synthetic_set():
    with pytest.raises(ValueError, match="would overwrite"):
        synthesis_base._assemble_extras([{"extras": {"labels": torch.zeros(1)}}])
