"""Row cost: image-steps counted by hand for small settings, hours from a timing file, and every row of the
paper profile's main table built (each method's settings accepted) without running anything."""

import json
import sys
from pathlib import Path

import yaml

from dire.experiments.config import make_experiment
from dire.experiments.row_cost import main_table_rows, step_seconds, student_image_steps, synthesis_image_steps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from paper_cost import notebook_defaults  # noqa: E402


def test_image_steps_by_hand():
    exp = make_experiment(dataset="cifar10", method="sre2l", ipc=10, iterations=100, student_epochs=7)
    assert synthesis_image_steps(exp) == 10 * 10 * 100
    assert student_image_steps(exp, seeds=3) == 10 * 10 * 7 * 3
    # DELT, 100 iterations in rounds of 25: 4 groups active 4, 3, 2, 1 rounds of 4: mean share 10 / 16
    delt = make_experiment(
        dataset="cifar10", method="delt", ipc=8, iterations=100, method_settings={"round_iterations": 25}
    )
    assert synthesis_image_steps(delt) == 8 * 10 * 100 * 10 / 16
    two = make_experiment(dataset="cifar100", method="sre2l", ipc=10, iterations=5, condense_classes=2)
    assert synthesis_image_steps(two) == 2 * 10 * 5


def test_hours_from_a_timing_file(tmp_path):
    timing = tmp_path / "04.json"
    timing.write_text(json.dumps([{"dataset": "cifar10", "dire": False, "step_s_per_image": 0.5}]))
    assert step_seconds(timing) == {"cifar10": 0.5}
    params = {
        **notebook_defaults("01_main_results"),
        "datasets": ["cifar10", "cifar100"],
        "methods": ["sre2l"],
        "ipcs": [10],
        "iterations": 36,
        "student_epochs": 5,
    }
    rows = main_table_rows(params, seconds=step_seconds(timing))
    c10 = next(r for r in rows if r["dataset"] == "cifar10")
    assert c10["hours"] == c10["image_steps"] * 0.5 / 3600
    assert next(r for r in rows if r["dataset"] == "cifar100")["hours"] is None  # not measured


def test_every_paper_main_table_row_builds():
    params = notebook_defaults("01_main_results")
    params |= yaml.safe_load((REPO / "notebooks/params/paper/01_main_results.yaml").read_text())
    rows = main_table_rows(params)
    datasets = {r["dataset"] for r in rows}
    assert datasets == {"cifar10", "cifar100", "tiny-imagenet", "imagenet"}
    assert len(rows) == 2 * (8 + 8 + 8 + 4)  # IPC 10 and 50; four methods on ImageNet-1K
    assert all(r["image_steps"] > 0 for r in rows)


def test_wall_time_share_on_many_gpus_by_hand():
    import pytest

    from dire.experiments.row_cost import wall_fraction

    row = {"synthesis_steps": 600.0, "student_steps": 400.0, "image_steps": 1000.0, "units": 10, "seeds": 5}
    assert wall_fraction(row, 1) == 1.0 and wall_fraction(row, 1, ddp_students=True) == 1.0
    # 4 GPUs: the busiest rank has 3 of the 10 units and 2 of the 5 seeds (600·3/10 + 400·2/5) / 1000
    assert wall_fraction(row, 4) == pytest.approx(0.34)
    assert wall_fraction(row, 4, ddp_students=True) == pytest.approx((180 + 100) / 1000)  # DDP: 400 / 4
    assert wall_fraction(row, 16) == pytest.approx((60 + 80) / 1000)  # one unit, one seed per busiest rank
    with pytest.raises(ValueError, match="gpus must be >= 1"):
        wall_fraction(row, 0)


def test_paper_imagenet_ipc50_rows_count_their_units():
    params = notebook_defaults("01_main_results")
    params |= yaml.safe_load((REPO / "notebooks/params/paper/01_main_results.yaml").read_text())
    rows = [r for r in main_table_rows(params) if r["dataset"] == "imagenet" and r["ipc"] == 50]
    # 1000 classes in blocks of 10, 50 images per class in chunks of 10: 100 x 5 units; 5 seeds
    assert {(r["method"], r["units"], r["seeds"]) for r in rows} == {
        (m, 500, 5) for m in ("sre2l", "cda", "dwa", "delt")
    }
    assert all(r["synthesis_steps"] + r["student_steps"] == r["image_steps"] for r in rows)
