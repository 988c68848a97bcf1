"""Bad settings, bad devices, damaged cache files and diverging losses: each gives one line that names what
is wrong and how to fix it, and nothing is written."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest
import torch

from dire.checks import NonFiniteLoss, check_numbers, in_range
from dire.cli import main
from dire.experiments.config import make_experiment
from dire.runs import CacheError, atomic_write_text, load, read_json, run_dir

TINY = ["--dataset", "digits", "--ipc", "2", "--ipc-per-unit", "2", "--iterations", "3", "--student-epochs", "2",
        "--bank-per-class", "20", "--quiet"]  # fmt: skip


def cli_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()  # progress lines may come first
    errors = [line for line in lines if line.startswith("dire: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"not one error line at the end: {lines}"
    return errors[0]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--lr", "nan"], "SynthesisConfig.lr = nan is not allowed; expected a finite number >0"),
        (["--dire-weight", "nan"], "DiReConfig.weight = nan is not allowed"),
        (["--r-e", "-5"], "DiReConfig.r_e = -5.0 is not allowed; expected a finite number >=0"),
        (["--student-arg", "temperature=0"], "Recipe.temperature = 0 is not allowed; expected a finite number >0"),
        (["--student-arg", "mixup_alpha=-1"], "Recipe.mixup_alpha = -1 is not allowed"),
        (["--student-arg", "crop_padding=-3"], "Recipe.crop_padding = -3 is not allowed"),
        (["--student-arg", "lr=nan"], "Recipe.lr = nan is not allowed"),
        (["--seed", str(2**40)], "expected an integer seed in [0, 4294967296)"),
        (["--device", "gpu"], "device 'gpu' is not a device name; expected 'cpu', 'cuda' or 'cuda:N'"),
        (["--student-seeds", ""], "--student-seeds: expected comma-separated integers"),
    ],
)
def test_bad_settings_fail_before_anything_is_written(args, message, tmp_path, capsys):
    err = cli_error(["condense", *TINY, *args, "--runs-root", str(tmp_path / "runs")], capsys)
    assert message in err
    assert not (tmp_path / "runs").exists()  # not even a teacher folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")
def test_cuda_without_a_gpu(tmp_path, capsys):
    err = cli_error(["condense", *TINY, "--device", "cuda", "--runs-root", str(tmp_path / "runs")], capsys)
    assert "torch sees no CUDA GPU here; use --device cpu" in err and not (tmp_path / "runs").exists()


def test_empty_student_seeds_fail_when_the_experiment_is_built():
    with pytest.raises(ValueError, match="student_seeds is empty"):
        make_experiment(student_seeds=[])
    from dire.experiments.drivers import compare

    with pytest.raises(ValueError, match="seeds is empty"):
        compare(make_experiment(), seeds=[])


def test_ranges():
    assert in_range(0.5, "[0,1)") and not in_range(1.0, "[0,1)") and in_range(1.0, "[0,1]")
    assert in_range(3, "seed") and not in_range(-1, "seed") and not in_range(2.5, "seed")
    assert not in_range(0, ">0") and in_range(0, ">=0")
    from dire.synthesis import build_method

    with pytest.raises(ValueError, match=r"GVBSM.drop_rate = 1.0 is not allowed; expected a finite number in \[0,1\)"):
        build_method("gvbsm", drop_rate=1.0)
    with pytest.raises(ValueError, match="SRe2L.r_bn = inf"):
        build_method("sre2l", r_bn=math.inf)
    from dire.nets.experts import ExpertConfig

    with pytest.raises(ValueError, match="ExpertConfig.lr = 0 is not allowed"):
        ExpertConfig(lr=0)
    with pytest.raises(ValueError, match="x = "):  # tuples are checked element by element
        from dataclasses import dataclass

        @dataclass
        class Box:
            x: tuple = (1.0, float("nan"))

        check_numbers(Box())


@pytest.fixture(scope="module")
def cached_runs(tmp_path_factory):
    """A runs root with one tiny digits experiment in it, made through the CLI."""
    root = tmp_path_factory.mktemp("cached") / "runs"
    main(["condense", *TINY, "--runs-root", str(root)])
    return root


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(os.urandom(200))


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
@pytest.mark.parametrize("stage,name", [("teacher", "model.pt"), ("bank", "bank.pt"), ("teacher", "metrics.json")])
def test_damaged_cache_file_is_one_line_naming_it(cached_runs, tmp_path, capsys, how, stage, name):
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(cached_runs, root)
    (target,) = (root / stage).glob(f"*/{name}")
    _damage(target, how)
    err = cli_error(["condense", *TINY, "--runs-root", str(root)], capsys)
    assert str(target) in err and "dire runs clean" in err and "Traceback" not in err
    from dire.report import runs_folder

    problems = [p for r in runs_folder.verify(root) for p in r.problems]
    assert any(str(target) in p for p in problems)


def test_config_json_that_disagrees_is_refused(tmp_path):
    folder = run_dir("bank", {"a": 1}, root=tmp_path)
    atomic_write_text(folder / "config.json", json.dumps({"a": 2}))
    with pytest.raises(CacheError, match="holds another config than the one that hashes to this folder"):
        run_dir("bank", {"a": 1}, root=tmp_path)


def test_files_follow_the_umask(tmp_path):
    import matplotlib.pyplot as plt

    from dire.report.plots import save_figure

    fig = plt.figure()
    old = os.umask(0o002)
    try:
        path = atomic_write_text(tmp_path / "shared.json", "{}")
        figures = save_figure(fig, tmp_path / "chart", formats=("png",))  # tables and figures too
    finally:
        os.umask(old)
        plt.close(fig)
    for written in (path, *figures):
        assert stat.S_IMODE(written.stat().st_mode) == 0o664, written  # group-writable, as a shared runs/ needs


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CacheError, match=f"{bad}: unreadable"):
        load(bad)
    (tmp_path / "y.json").write_text("{")
    with pytest.raises(CacheError, match="y.json: not valid JSON"):
        read_json(tmp_path / "y.json")


def test_a_diverging_synthesis_stops_naming_the_unit_and_saves_nothing(digits, tmp_path):
    from dire.synthesis import SRe2L, SynthesisConfig, synthesize
    from dire.synthesis.base import Context, Step

    class Diverging(SRe2L):
        def loss(self, ctx, unit, images, labels, iteration, generator):
            step = super().loss(ctx, unit, images, labels, iteration, generator)
            return Step(step.loss * (math.nan if iteration == 2 else 1.0), step.embeddings)

    teacher, train, bank = digits
    config = SynthesisConfig(ipc=2, iterations=5)
    ctx = Context(teacher=teacher, dataset=train, config=config, device=torch.device("cpu"), bank=bank)
    with pytest.raises(
        NonFiniteLoss, match="synthesis: the loss is not finite at unit unit_0000_0000 of sre2l, iteration 3"
    ):
        synthesize(Diverging(), ctx, out_dir=tmp_path / "syn", progress=False)
    assert not list((tmp_path / "syn").glob("unit_*.pt"))


def test_a_diverging_student_stops_before_its_checkpoint(tmp_path):
    from dire.nets.models import build_model
    from dire.nets.train import EpochCheckpoint, Recipe, fit

    model = build_model("convnet", num_classes=3, in_channels=1, image_size=8)
    recipe = Recipe(epochs=3, batch_size=4, crop_padding=0, flip=False)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    saver = EpochCheckpoint(tmp_path / "ckpt.pt", model, g, seconds=0)

    def loss_fn(logits, _x, target):
        return torch.nn.functional.cross_entropy(logits, target) * math.inf

    with pytest.raises(NonFiniteLoss, match="student convnet: the loss is not finite at epoch 1 of 3"):
        fit(model, lambda e: iter([(x, y)]), recipe, loss_fn=loss_fn, steps_per_epoch=1, generator=g,
            on_epoch_end=saver, stage="student convnet")  # fmt: skip
    assert not (tmp_path / "ckpt.pt").exists()


def test_deterministic_flag_sets_deterministic_algorithms(tmp_path):
    assert not torch.are_deterministic_algorithms_enabled()
    try:
        main(["condense", *TINY, "--deterministic", "--runs-root", str(tmp_path / "runs")])
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        from dire.checks import set_deterministic

        set_deterministic(False)


@pytest.mark.slow
def test_notebook_reports_a_damaged_cache_file_in_one_line(cached_runs, tmp_path):
    """Through a notebook: the runner's error line names the damaged file."""
    import shutil

    from dire.report.reproduce import run_notebook

    root = tmp_path / "runs"
    shutil.copytree(cached_runs, root)
    (target,) = (root / "teacher").glob("*/model.pt")  # the digits teacher the smoke notebooks use too
    _damage(target, "truncated")
    run = run_notebook("00_quickstart", profile="smoke", build=tmp_path / "build", extra={"runs_root": str(root)})
    assert not run.ok and str(target) in run.error and "\n" not in run.error.strip()
