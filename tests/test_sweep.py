"""Weight selection: the validation split, the grid, the choice, the weights file, and a digits sweep end to end
(its students scored on held-out training images, never the test split)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from dire.cli import main
from dire.data import load_dataset, validation_split
from dire.experiments.config import Experiment, load_weights, resolve_dire
from dire.experiments.drivers import compare
from dire.experiments.pipeline import run_experiment
from dire.experiments.sweep import grid_points, select, sweep, write_selection
from dire.nets.teacher import teacher_config
from dire.nets.train import get_recipe
from dire.report.tables import to_markdown
from dire.runs import config_hash
from dire.synthesis import DiReConfig, SynthesisConfig


def test_validation_split_is_per_class_seeded_and_disjoint():
    train = load_dataset("digits")
    rest, val = validation_split(train, 7, seed=3)
    assert len(rest) + len(val) == len(train)
    assert torch.equal(torch.bincount(val.targets, minlength=10), torch.full((10,), 7))
    assert not set(rest.indices.tolist()) & set(val.indices.tolist())
    assert torch.equal(validation_split(train, 7, seed=3)[1].indices, val.indices)  # same seed, same images
    assert not torch.equal(validation_split(train, 7, seed=4)[1].indices, val.indices)
    x, y = val.batch([0, 5])  # images come from the base set at the held-out indices
    bx, by = train.batch(val.indices[[0, 5]].tolist())
    assert torch.equal(x, bx) and torch.equal(y, by) and val[5][1] == int(by[1])
    with pytest.raises(ValueError, match="would leave none"):
        validation_split(train, 10_000)


def test_holdout_enters_the_teacher_key_only_when_set():
    recipe = get_recipe("cpu", student=False)
    plain = teacher_config("digits", "convnet_bn", recipe, 0)
    assert "holdout" not in plain  # teachers cached before holdouts existed keep their folders
    held = teacher_config("digits", "convnet_bn", recipe, 0, (10, 0))
    assert held["holdout"] == {"per_class": 10, "seed": 0} and config_hash(held) != config_hash(plain)
    # new Experiment / DiReConfig fields at their defaults leave the experiment key unchanged
    exp = Experiment()
    assert "validation_per_class" not in exp.config() and "logdet_eps" not in exp.config()["dire"]
    old = dataclasses.asdict(exp)  # the config as it was before those fields existed
    del old["student_overrides"], old["teacher_weights"], old["precision"], old["synthesis_precision"]
    del old["teacher_overrides"], old["student_ddp"], old["teacher_ddp"], old["synthesis"]["condense_classes"]
    old["dire"] = {k: v for k, v in old["dire"].items() if k not in ("logdet_eps", "edm_coreset")}
    assert config_hash(exp.config()) == config_hash({k: v for k, v in old.items() if not k.startswith("validation_")})
    assert "validation_per_class" in dataclasses.replace(exp, validation_per_class=5).config()
    # a dict field (default_factory) is left out at its default too, and keyed once set
    assert "student_overrides" not in exp.config()
    assert dataclasses.replace(exp, student_overrides={"lr": 1e-3}).config()["student_overrides"] == {"lr": 1e-3}


def test_grid_and_selection():
    points = grid_points({"weight": [0.1, 1.0], "r_e": [0, 0.01]})
    assert points == [
        {"weight": 0.1, "r_c": 1.0, "r_e": 0.0},
        {"weight": 0.1, "r_c": 1.0, "r_e": 0.01},
        {"weight": 1.0, "r_c": 1.0, "r_e": 0.0},
        {"weight": 1.0, "r_c": 1.0, "r_e": 0.01},
    ]
    with pytest.raises(ValueError, match="unknown sweep axes"):
        grid_points({"w": [1]})
    with pytest.raises(ValueError, match="numbers >= 0"):
        grid_points({"weight": [-1]})
    stat = lambda m: {"mean": m, "std": 0.5}  # noqa: E731
    rows = [
        {"dire": False, "weight": 0, "r_c": 0, "r_e": 0, "acc_final": stat(80.0)},
        {"dire": True, "weight": 1.0, "r_c": 1.0, "r_e": 0.0, "acc_final": stat(82.0)},
        {"dire": True, "weight": 0.1, "r_c": 1.0, "r_e": 0.01, "acc_final": stat(82.0)},
        {"dire": True, "weight": 0.3, "r_c": 1.0, "r_e": 0.01, "acc_final": stat(79.0)},
    ]
    chosen = select(rows)
    assert (chosen["weight"], chosen["r_e"], chosen["val_acc"]) == (0.1, 0.01, 82.0)  # tie: the smaller w
    assert chosen["beats_baseline"] and chosen["baseline_val_acc"] == 80.0
    assert not select(rows[:1] + rows[3:])["beats_baseline"]
    with pytest.raises(ValueError, match="no finished DiRe point"):
        select(rows[:1])


def test_weights_file_round_trip_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dire sweep --out"):
        load_weights(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"weights": {"weight": 1}}))
    with pytest.raises(ValueError, match="expected 'weights' with keys"):
        load_weights(bad)
    with pytest.raises(ValueError, match="unknown DiRe settings"):
        resolve_dire(DiReConfig(), {"wieght": 1})
    dire = resolve_dire(DiReConfig(), {"terms": ["logdet", "cdm", "edm"], "logdet_eps": 0.5})
    assert dire.enabled and dire.terms == ("logdet", "cdm", "edm") and dire.logdet_eps == 0.5


def _tiny(**changes):
    base = Experiment(
        dataset="digits",
        synthesis=SynthesisConfig(ipc=2, ipc_per_unit=2, iterations=4),
        bank_per_class=20,
        student_epochs=5,
        student_seeds=(0,),
    )
    return dataclasses.replace(base, **changes)


def test_sweep_on_digits_scores_students_on_the_validation_split(runs_root, tmp_path):
    base = _tiny()
    rows = sweep(
        base,
        grid={"weight": [0.1, 1.0], "r_e": [0.01]},
        validation_per_class=10,
        runs_root=runs_root,
        progress=False,
        log=lambda _m: None,
    )
    assert [r["point"] for r in rows] == ["baseline", "weight 0.1, r_c 1, r_e 0.01", "weight 1, r_c 1, r_e 0.01"]
    assert [r["dire"] for r in rows] == [False, True, True]
    chosen = select(rows)
    out = write_selection(tmp_path / "w.json", chosen, rows, base=base, validation_per_class=10, validation_seed=0)
    weights = load_weights(out)
    assert weights["weight"] in (0.1, 1.0) and weights["r_e"] == 0.01
    assert json.loads(out.read_text())["grid"][0]["point"] == "baseline"
    # one of those runs, directly: accuracy is on 10 held-out images per class; the teacher never saw them
    held = dataclasses.replace(base, validation_per_class=10, dire=DiReConfig(enabled=True, **weights))
    result = run_experiment(held, runs_root=runs_root, progress=False, log=lambda _m: None)
    assert result["eval_split"] == "validation (10/class, seed 0)"
    teacher = result["dirs"]["teacher"]
    assert json.loads((Path(teacher) / "config.json").read_text())["holdout"]["per_class"] == 10
    # with the same settings and no holdout, the experiment is scored on the test split
    plain = run_experiment(
        dataclasses.replace(held, validation_per_class=0), runs_root=runs_root, progress=False, log=lambda _m: None
    )
    assert plain["eval_split"] == "test" and plain["dirs"]["teacher"] != teacher


def test_compare_variants_rows(runs_root, tmp_path):
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"weights": {"weight": 0.5, "r_c": 1.0, "r_e": 0.0}}))
    variants = {"selected": {"weights_file": str(weights)}, "log-det": {"terms": ["logdet", "cdm", "edm"]}}
    rows = compare(
        _tiny(),
        seeds=[0],
        methods=["sre2l"],
        variants=variants,
        runs_root=runs_root,
        progress=False,
        log=lambda _m: None,
    )
    assert [(r["dire"], r["variant"]) for r in rows] == [(False, ""), (True, ""), (True, "selected"), (True, "log-det")]
    md = to_markdown(rows)
    assert "| sre2l + DiRe (selected) |" in md and "| sre2l + DiRe (log-det) |" in md
    with pytest.raises(ValueError, match="names methods \\['dwa'\\] that are not compared"):
        compare(_tiny(), seeds=[0], methods=["sre2l"], variants={"x": {"methods": ["dwa"]}}, runs_root=runs_root)


def test_cli_sweep_writes_the_chosen_weights(runs_root, tmp_path, capsys):
    out = tmp_path / "chosen.json"
    main(
        [
            "sweep",
            "--dataset",
            "digits",
            "--ipc",
            "2",
            "--ipc-per-unit",
            "2",
            "--iterations",
            "4",
            "--student-epochs",
            "5",
            "--bank-per-class",
            "20",
            "--grid",
            "weight=0.1,1.0",
            "--grid",
            "r_e=0.01",
            "--validation-per-class",
            "10",
            "--student-seeds",
            "0",
            "--runs-root",
            str(runs_root),
            "--out",
            str(out),
            "--table",
            str(tmp_path / "sweep"),
            "--quiet",
        ]
    )
    assert "chosen: w " in capsys.readouterr().out
    assert load_weights(out)["r_e"] == 0.01 and (tmp_path / "sweep.md").exists()
