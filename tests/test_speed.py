"""GPU efficiency options (dire.nets.speed): precision names and cache keys, bf16 against fp32 within stated
tolerances, fp32 on the CPU exactly as before, and the CUDA-only switches (channels_last, cuDNN autotuning,
datasets held on the GPU) through what can run on a CPU plus CUDA tests where a GPU is present.

Tolerances. bf16 keeps 8 significant bits, so each rounding of an activation or weight is off by at most
u = 2**-8 (0.39 %) relative; matmuls and convolutions accumulate in float32, so the error of a forward pass
grows with the number of rounded layers, not with their width. Measured on the CPU: the relative error of
ConvNet-BN and ResNet-18 embeddings is 0.34-0.41 % (about one u) and their cosine similarity is at least
0.99997. The bounds below (relative error <= 2 %, about 5 u; cosine >= 0.999) leave a 5x and 30x margin for
other kernels (oneDNN versions, a GPU's cuDNN) while still failing if a layer ran in a coarser format (fp16
overflow, int8) or embeddings came back in bf16. Training bends rounding errors into other trajectories, so
its bounds are empirical: same-seed bf16 and fp32 differed by 0.3 points (teacher) and <= 0.9 points
(students) on the 360 digits test images; the tests allow 3 and 5 points.
"""

import pytest
import torch
import torch.nn.functional as F

from dire.checks import set_deterministic
from dire.data import load_dataset, to_uint8, validation_split
from dire.experiments.config import Experiment, make_experiment
from dire.nets import speed
from dire.nets.models import build_model, embed_images, features_and_logits
from dire.nets.speed import (
    DeviceData,
    autocast,
    hold_on_device,
    precision_key,
    prepare_model,
    resolve_precision,
    to_device,
)
from dire.nets.teacher import get_teacher, teacher_config
from dire.nets.train import get_recipe, loader
from dire.runs import config_hash, read_json

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
EMBED_REL_ERR, EMBED_COS = 0.02, 0.999  # see the module docstring
TEACHER_POINTS, STUDENT_POINTS = 3.0, 5.0


# ------------------------------------------------------------------ names and keys


def test_resolve_precision():
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cuda:0") == "fp32"
    with pytest.raises(ValueError, match="precision 'fp16' is not known; expected one of auto, bf16, fp32"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="expected one of auto, bf16, fp32"):
        Experiment(precision="half")
    with pytest.raises(ValueError, match="synthesis_precision.*expected one of auto, bf16, fp32"):
        Experiment(synthesis_precision="BF16")


def test_precision_key_only_for_bf16():
    assert precision_key("fp32", "cuda") == {} and precision_key("auto", "cpu") == {}
    assert precision_key("auto", "cuda") == {"precision": "bf16"} == precision_key("bf16", "cpu")


def test_default_experiment_keys_are_unchanged():
    """The hashes below were computed by the code before precision existed (commit 7f3cf77)."""
    exp = Experiment()
    assert "precision" not in exp.config() and "synthesis_precision" not in exp.config()
    assert config_hash(exp.config()) == "1c772ddf7aa0"
    assert config_hash(Experiment(validation_per_class=5).config()) == "69dee167a7d9"
    assert config_hash(make_experiment(dataset="fashion-mnist", method="dm", dire=True).config()) == "607baef68e6e"
    # explicit settings do enter the experiment's own key
    assert Experiment(precision="bf16").config()["precision"] == "bf16"


def test_teacher_key_is_unchanged_in_fp32():
    """The hash below was computed by the code before precision existed (commit 7f3cf77)."""
    recipe = get_recipe("cpu", student=False)
    assert config_hash(teacher_config("digits", "convnet_bn", recipe, 0)) == "12298c7816a8"
    assert teacher_config("digits", "convnet_bn", recipe, 0, precision="auto", device="cpu") == teacher_config(
        "digits", "convnet_bn", recipe, 0
    )


def test_auto_on_cuda_keys_teacher_bank_and_students_as_bf16(monkeypatch, tmp_path):
    """No GPU needed: the keys are built before any CUDA work, which is stubbed out here."""
    from dire.evaluation import dc, soft
    from dire.nets import bank as bank_module

    recipe = get_recipe("cpu", student=False)
    assert teacher_config("digits", "convnet_bn", recipe, 0, precision="auto", device="cuda")["precision"] == "bf16"

    record = {"config": teacher_config("digits", "convnet_bn", recipe, 0)}
    monkeypatch.setattr(bank_module, "real_embedding_bank", lambda *a, **kw: None)
    _, folder = bank_module.cached_bank(
        None, record, None, per_class=3, device="cuda", precision="auto", runs_root=tmp_path
    )
    assert read_json(folder / "config.json")["precision"] == "bf16"
    _, plain = bank_module.cached_bank(
        None, record, None, per_class=3, device="cpu", precision="auto", runs_root=tmp_path
    )
    assert "precision" not in read_json(plain / "config.json")

    synthetic = {"images": torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "labels": torch.tensor([0, 1])}
    done = {"final": 50.0, "best": 50.0, "history": [{"epoch": 1, "acc": 50.0}]}
    monkeypatch.setattr(soft, "train_student", lambda *a, **kw: done)
    monkeypatch.setattr(dc, "train_dc", lambda *a, **kw: {**done, "lr": 0.01})
    key = {"synthetic": "abc"}
    for precision, device, expected in (("auto", "cuda", "bf16"), ("auto", "cpu", None), ("fp32", "cuda", None)):
        where = {"seeds": [0], "device": device, "cache_key": key, "runs_root": tmp_path, "precision": precision}
        soft.evaluate_synthetic(synthetic, teacher=None, test_set=None, **where)
        dc.evaluate_dc(synthetic, test_set=None, epochs=1, **where)
        for stage in ("student", "student_dc"):
            assert expected in {read_json(p).get("precision") for p in (tmp_path / stage).glob("*/config.json")}
    for stage in ("student", "student_dc"):  # auto on the CPU and fp32 on CUDA share the key of before
        assert sorted(read_json(p).get("precision", "") for p in (tmp_path / stage).glob("*/config.json")) == [
            "",
            "bf16",
        ]


def test_default_pipeline_run_keeps_its_folders(runs_root):
    """A default experiment on the CPU lands in the folders the code before precision made (names from commit
    7f3cf77), and no key of it mentions precision."""
    from dire.experiments.pipeline import run_experiment

    result = run_experiment(
        make_experiment(iterations=2, student_epochs=1, bank_per_class=10),
        runs_root=runs_root,
        progress=False,
        log=lambda _m: None,
    )
    assert result["precision"] == {"train": "fp32", "synthesis": "fp32"}
    folders = ["teacher/12298c7816a8", "bank/99f43a567086", "synthetic/3f61978c9f92", "student/15555dc0f0b2"]
    folders.append("experiment/60d303423e57")
    for folder in folders:
        assert "precision" not in (runs_root / folder / "config.json").read_text(), folder


def test_bf16_pipeline_run_keys_every_bf16_stage(runs_root):
    from dire.experiments.pipeline import run_experiment

    flat = {"iterations": 2, "student_epochs": 1, "bank_per_class": 10, "dire": True}
    exp = make_experiment(**flat, precision="bf16", synthesis_precision="bf16")  # the flat names of notebooks, CLI
    result = run_experiment(exp, runs_root=runs_root, progress=False, log=lambda _m: None)
    syn_dir = runs_root / "synthetic" / result["dirs"]["synthetic"].split("/")[-1]
    syn = read_json(syn_dir / "config.json")
    teacher = read_json(runs_root / "teacher" / syn["teacher"] / "config.json")
    bank = read_json(runs_root / "bank" / syn["bank"] / "config.json")
    students = [
        c for c in map(read_json, (runs_root / "student").glob("*/config.json")) if c["synthetic"] == syn_dir.name
    ]
    assert syn["precision"] == teacher["precision"] == bank["precision"] == "bf16"
    assert students and all(s["precision"] == "bf16" for s in students)
    assert result["precision"] == {"train": "bf16", "synthesis": "bf16"}


# ------------------------------------------------------------------ fp32 on the CPU: exactly the old code


def test_fp32_is_no_autocast_and_cpu_switches_are_no_ops():
    assert isinstance(autocast("cpu", "fp32"), type(autocast("cuda", "fp32")))
    assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "auto"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    x = torch.randn(2, 1, 8, 8)
    assert to_device(x, "cpu") is x
    benchmark = torch.backends.cudnn.benchmark
    model = build_model("convnet_bn", num_classes=10, in_channels=1, image_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert prepare_model(model, "cpu") is model
    assert all(torch.equal(v, before[k]) and v.is_contiguous() for k, v in model.state_dict().items())
    assert torch.backends.cudnn.benchmark == benchmark
    meta = prepare_model(build_model("convnet", num_classes=10, in_channels=1, image_size=8), "meta")
    assert all(p.is_meta and p.is_contiguous() for p in meta.parameters())


def test_fp32_embeddings_are_the_plain_forward_pass(digits_teacher):
    teacher, _ = digits_teacher
    x = load_dataset("digits", split="test").tensors()[0][:100]
    with torch.no_grad():
        plain = features_and_logits(teacher.eval(), x)[0]
    assert torch.equal(embed_images(teacher, x, precision="fp32"), plain)
    assert torch.equal(embed_images(teacher, x, precision="auto"), plain)  # auto is fp32 on the CPU


# ------------------------------------------------------------------ bf16 against fp32


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert b.dtype == torch.float32 and a.shape == b.shape
    assert F.cosine_similarity(a, b, dim=1).min() >= EMBED_COS
    assert (a - b).norm() / a.norm() <= EMBED_REL_ERR


def test_bf16_embeddings_and_logits_agree_with_fp32(digits_teacher):
    teacher, _ = digits_teacher
    x = load_dataset("digits", split="test").tensors()[0]
    _close(embed_images(teacher, x), embed_images(teacher, x, precision="bf16"))
    with torch.no_grad():
        fp32 = teacher(x).argmax(1)
        with autocast("cpu", "bf16"):
            bf16 = teacher(x).argmax(1)
    assert (fp32 == bf16).float().mean() >= 0.99  # measured: all 360 agree

    torch.manual_seed(0)
    resnet = build_model("resnet18", num_classes=10, in_channels=3, image_size=32).eval()
    images = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    _close(embed_images(resnet, images), embed_images(resnet, images, precision="bf16"))


def test_bf16_teacher_trains_to_fp32_accuracy(digits_teacher, runs_root):
    _, record = digits_teacher
    _, bf16 = get_teacher(
        "digits", "convnet_bn", recipe="cpu", seed=0, runs_root=runs_root, progress=False, precision="bf16"
    )
    assert bf16["config"]["precision"] == "bf16" and bf16["dir"] != record["dir"]
    assert abs(bf16["test_acc"] - record["test_acc"]) <= TEACHER_POINTS


def test_bf16_students_agree_with_fp32(digits_teacher):
    from dire.evaluation.dc import DCProtocol, train_dc
    from dire.evaluation.soft import train_student

    teacher, _ = digits_teacher
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    images = torch.cat([train.class_images(c, limit=5, generator=torch.Generator().manual_seed(c)) for c in range(10)])
    synthetic = {"images": to_uint8(images, train.info), "labels": torch.arange(10).repeat_interleave(5)}
    acc = {}
    for precision in ("fp32", "bf16"):
        soft = train_student(
            synthetic, teacher=teacher, test_set=test, arch="convnet_bn", seed=1, epochs=30, precision=precision
        )
        dc = train_dc(
            synthetic, test_set=test, arch="convnet_bn", seed=0, protocol=DCProtocol(epochs=30), precision=precision
        )
        acc[precision] = soft["final"], dc["final"]
    for fp32, bf16 in zip(acc["fp32"], acc["bf16"]):
        assert fp32 > 50 and abs(fp32 - bf16) <= STUDENT_POINTS, acc


# ------------------------------------------------------------------ CUDA switches, tested where a CPU can


@pytest.fixture
def cudnn_flags():
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
    )
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
    torch.use_deterministic_algorithms(saved[2])


def test_cudnn_benchmark_respects_deterministic(cudnn_flags):
    # setting the flag needs no GPU, so the logic is tested here; prepare_model calls it on CUDA only
    assert not speed.enable_cudnn_benchmark("cpu")
    set_deterministic(True)
    assert not speed.enable_cudnn_benchmark("cuda") and not torch.backends.cudnn.benchmark
    set_deterministic(False)
    assert speed.enable_cudnn_benchmark("cuda") and torch.backends.cudnn.benchmark
    set_deterministic(True)  # asked for later: autotuning goes off again
    assert not torch.backends.cudnn.benchmark


def test_which_datasets_are_held_on_the_device():
    train = load_dataset("digits")
    rest, _ = validation_split(train, 5, seed=0)
    assert hold_on_device(train, "cuda") and hold_on_device(rest, "cuda")
    assert not hold_on_device(train, "cpu") and not hold_on_device(rest, "cpu")  # the CPU keeps the loader
    assert not hold_on_device(train, "cuda", max_bytes=train.pixels.numel() - 1)

    class Files:  # a dataset read from files has no stored pixels
        info, targets = train.info, train.targets

    assert speed.stored_pixels(Files()) is None and not hold_on_device(Files(), "cuda")
    with pytest.raises(TypeError, match="only in-memory datasets"):
        DeviceData(Files(), "cpu")


def test_device_held_batches_are_the_loaders_batches():
    """The held path run on the CPU: bit for bit the data loader's batches (order and values)."""
    train = load_dataset("digits")
    for dataset in (train, validation_split(train, 5, seed=0)[0]):
        held = DeviceData(dataset, "cpu")
        for epoch in range(2):
            got = list(held.batches(batch_size=128, generator=torch.Generator().manual_seed(epoch)))
            want = list(loader(dataset, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(epoch)))
            assert len(got) == len(want)
            assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, want))


@CUDA
def test_cuda_model_and_batches_are_channels_last(cudnn_flags):
    set_deterministic(False)
    model = prepare_model(build_model("convnet_bn", num_classes=10, in_channels=1, image_size=8), "cuda")
    weight = model.body[0].weight
    assert weight.is_cuda and weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.backends.cudnn.benchmark
    x = to_device(torch.randn(4, 1, 8, 8), "cuda")
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    train = load_dataset("digits")
    held = DeviceData(train, "cuda")
    got = list(held.batches(batch_size=256, generator=torch.Generator().manual_seed(0)))
    want = list(loader(train, batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a.cpu(), c) and torch.equal(b.cpu(), d) for (a, b), (c, d) in zip(got, want))


@CUDA
def test_cuda_auto_teacher_is_bf16_and_close_to_fp32(tmp_path):
    _, fp32 = get_teacher("digits", "convnet_bn", recipe="cpu", runs_root=tmp_path, progress=False, device="cuda")
    teacher, bf16 = get_teacher(
        "digits", "convnet_bn", recipe="cpu", runs_root=tmp_path, progress=False, device="cuda", precision="auto"
    )
    assert bf16["config"]["precision"] == "bf16" and "precision" not in fp32["config"]
    assert abs(bf16["test_acc"] - fp32["test_acc"]) <= TEACHER_POINTS
    x = load_dataset("digits", split="test").tensors()[0]
    _close(embed_images(teacher, x, device="cuda"), embed_images(teacher, x, device="cuda", precision="auto"))
