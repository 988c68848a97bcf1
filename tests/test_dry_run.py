"""The paper profile's dry run: stand-in datasets read by the real loaders at true shapes and class counts,
budget cuts that reach nested settings, stand-in pretrained weights in torchvision's layout, and (slow) the
whole paper profile end to end on them."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dire.data import load_dataset
from dire.data.standin import write_standin
from dire.nets.models import build_model
from dire.nets.pretrained import load_into, resolve
from dire.report.dry_run import CUTS, STATS_IMAGES, cut_budgets, dry_run_params, standin_weights

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "name,classes,size",
    [("cifar10", 10, 32), ("cifar100", 100, 32), ("tiny-imagenet", 200, 64), ("imagenet", 1000, 224)],
)
def test_standins_load_at_true_shape_and_class_count(tmp_path, name, classes, size):
    write_standin(name, tmp_path, per_class=1, rich_classes=2, rich_per_class=4, test_images=6)
    train = load_dataset(name, split="train", root=tmp_path)
    test = load_dataset(name, split="test", root=tmp_path)
    assert train.info.num_classes == classes and test.info.num_classes == classes
    assert len(train) == classes - 2 + 2 * 4
    assert [len(train.class_indices(c)) for c in (0, 1, 2)] == [4, 4, 1]
    x, y = train[0]
    assert x.shape == (3, size, size) and y == 0
    assert len(test) == 6 and set(test.targets.tolist()) == {0, 1}


def test_cut_budgets_caps_every_level_and_keeps_the_rest():
    params = {
        "iterations": 1000,
        "lr": 0.1,
        "student_epochs": None,
        "seeds": [3, 4, 5],
        "ipcs": [10, 50],
        "method_overrides": {"delt": {"round_iterations": 500, "jitter": 0}, "dm": {"iterations": 20000}},
        "dataset_overrides": {"imagenet": {"iterations": 4000, "method_overrides": {"dwa": {"iterations": 1}}}},
    }
    cut = cut_budgets(params)
    assert cut["iterations"] == CUTS["iterations"] and cut["lr"] == 0.1
    assert cut["student_epochs"] == CUTS["student_epochs"]  # None (the recipe's 400) is capped too
    assert cut["seeds"] == [3] and cut["ipcs"] == [10]
    assert cut["method_overrides"] == {"delt": {"round_iterations": 1, "jitter": 0}, "dm": {"iterations": 2}}
    assert cut["dataset_overrides"]["imagenet"]["iterations"] == 2
    assert cut["dataset_overrides"]["imagenet"]["method_overrides"]["dwa"]["iterations"] == 1  # below the cap


def test_dry_run_params_move_every_output_under_the_dry_run_folder(tmp_path):
    known = {"iterations", "data_root", "runs_root", "figures_root", "condense_classes", "teacher_overrides"}
    out = dry_run_params({"iterations": 500, "teacher_overrides": {"lr": 0.3}}, known, tmp_path)
    assert out["iterations"] == 2 and out["condense_classes"] == 2
    assert out["teacher_overrides"] == {"lr": 0.3, "epochs": 1, "batch_size": 32}
    for key in ("data_root", "runs_root", "figures_root"):
        assert Path(out[key]).is_relative_to(tmp_path)
    assert "selection_out" not in out and "download" not in out  # only the notebook's own parameters


def test_dry_run_caps_the_budgets_methods_take_from_their_own_rows(tmp_path):
    from dire.synthesis.dwa import DWA
    from dire.synthesis.mtt import MTT, mtt_settings

    assert mtt_settings("tiny-imagenet", 10)["syn_steps"] > CUTS["syn_steps"] and DWA().steps > CUTS["steps"]
    params = {"method_overrides": {"dwa": {"steps": 1, "lr": 0.3}, "cda": {"r_bn": 0.05}}}
    out = dry_run_params(params, {"method_overrides"}, tmp_path)["method_overrides"]
    assert out["dwa"] == {"steps": 1, "lr": 0.3}  # below the cap: kept
    assert out["mtt"]["syn_steps"] == CUTS["syn_steps"] and out["mtt"]["max_start_epoch"] == CUTS["max_start_epoch"]
    assert out["mtt"]["lr_lr"] == 0.0 and out["gvbsm"]["stats_images"] == STATS_IMAGES
    assert out["cda"] == {"r_bn": 0.05} and "sre2l" not in out  # methods without such settings are left alone
    assert {f for f in out["mtt"] if f in CUTS} <= {f.name for f in dataclasses.fields(MTT)}


def test_standin_weights_have_torchvisions_layout_and_load_into_our_model(tmp_path):
    path = standin_weights("ResNet18_Weights.IMAGENET1K_V1", tmp_path)
    model = build_model("resnet18", num_classes=1000, in_channels=3, image_size=224)
    load_into(model, resolve(str(path))[0])
    state = torch.load(path, weights_only=True)
    torch.testing.assert_close(model.head.weight, state["fc.weight"])
    torch.testing.assert_close(model.body.state_dict()["conv1.weight"], state["conv1.weight"])


@pytest.mark.slow
def test_the_paper_profile_runs_end_to_end_on_stand_ins(tmp_path):
    """Every notebook of the paper profile, on the CPU, two at a time (``--jobs 2``, so the parallel runner is
    exercised too), in a copy of the notebooks (its build/ is the copy's)."""
    import shutil

    # the notebooks and their profiles only (a kernel's leftover socket files cannot be copied)
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("kernel-*", ".*"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = (
        "import sys; from pathlib import Path; from dire.report.reproduce import reproduce; "
        f"runs = reproduce('paper', dry_run=True, quiet=True, notebooks=Path({str(tmp_path / 'notebooks')!r}), "
        "jobs=2); "
        "sys.exit(0 if all(r.ok for r in runs) else 1)"
    )
    # a guard against a hang, not a speed target: 1590 s here beside the other pytest-xdist worker, nothing else running
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    tables = tmp_path / "build" / "paper-dry-run" / "output" / "paper"
    names = {p.stem for p in tables.glob("*.md")}
    assert {"01_main_results", "02_ablation", "03_cross_architecture", "04_timing_memory"} <= names
    main = (tables / "01_main_results.md").read_text()
    for dataset in ("cifar10", "cifar100", "tiny-imagenet", "imagenet"):
        assert dataset in main
    assert not (tmp_path / "figures").exists()  # nothing lands beside the real tables
