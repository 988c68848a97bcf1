"""Recipe search: the search file's checks, the choice rule, and a digits search end to end through the CLI
(students scored on held-out training images; a student-only candidate reuses the cached synthetic set)."""

import json
import math
from pathlib import Path

import pytest
import yaml

from dire.cli import main
from dire.experiments.recipe_search import load_search, select_recipe
from dire.nets.train import get_recipe


def _row(name, mean, std):
    return {"name": name, "settings": {}, "val_acc": {"mean": mean, "std": std, "n": 3}}


def test_selection_prefers_steady_candidates_then_the_first_listed():
    rows = [_row("cheap", 80.0, 0.5), _row("noisy", 83.0, 2.0), _row("same", 80.0, 0.4), _row("nan", math.nan, 0)]
    chosen = select_recipe(rows, max_std=1.0)
    assert chosen["name"] == "cheap" and chosen["within_std"]  # equal means: the one listed first
    assert select_recipe(rows)["name"] == "noisy"  # no std limit: the best mean
    fallback = select_recipe([_row("a", 70.0, 3.0), _row("b", 75.0, 2.0)], max_std=1.0)
    assert fallback["name"] == "b" and not fallback["within_std"]
    with pytest.raises(ValueError, match="no finished candidate"):
        select_recipe([_row("nan", math.nan, 0)])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"candidates": []}, "non-empty list 'candidates'"),
        ({"candidates": [{"name": "a", "settings": {"lr_student": 1}}]}, "not flat experiment names"),
        ({"candidates": [{"name": "a", "settings": {"validation_per_class": 5}}]}, "holds the validation split"),
        ({"candidates": [{"name": "a"}, {"name": "a"}]}, "must be unique"),
    ],
)
def test_bad_search_files_say_what_is_expected(tmp_path, spec, message):
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=message):
        load_search(path)


def test_cli_recipe_search_on_digits_chooses_on_the_validation_split(tmp_path, capsys):
    runs_root = tmp_path / "runs"  # its own cache, so its synthetic sets can be counted
    base = dict(
        dataset="digits", method="sre2l", ipc=2, ipc_per_unit=2, iterations=4, bank_per_class=20, student_epochs=5
    )
    spec = {
        "base": base,
        "seeds": [0, 1],
        "max_std": 50.0,
        "candidates": [
            {"name": "as is", "settings": {}},
            {"name": "lr 1e-3", "settings": {"student_overrides": {"lr": 0.001}}},
        ],
    }
    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump(spec))
    out, table = tmp_path / "chosen.json", tmp_path / "search"
    argv = ["recipe-search", str(search), "--validation-per-class", "10", "--runs-root", str(runs_root)]
    main([*argv, "--out", str(out), "--table", str(table), "--json", str(tmp_path / "rows.json"), "--quiet"])
    assert "chosen: " in capsys.readouterr().out
    record = json.loads(out.read_text())
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["name"] for r in rows] == ["as is", "lr 1e-3"]
    best = max(rows, key=lambda r: r["val_acc"]["mean"])  # max keeps the first of equal means
    assert record["name"] == best["name"] and record["settings"] == best["settings"]
    assert record["selected_by"]["validation_per_class"] == 10 and record["selected_by"]["seeds"] == [0, 1]
    for r in rows:  # two seeds each, and the summary is their mean
        assert len(r["per_seed"]) == 2 and r["val_acc"]["mean"] == pytest.approx(sum(r["per_seed"]) / 2)
    # scored on the validation split: 10 held-out images per class, 100 in all, give whole percentages
    assert all(a == round(a) for r in rows for a in r["per_seed"])
    # the student-only candidate reused the synthetic sets: one teacher, one set per seed in the cache
    assert len(list((runs_root / "synthetic").iterdir())) == 2
    assert "| **" + record["name"] + "** |" in (tmp_path / "search.md").read_text()


def test_the_quick_profile_uses_the_recipe_its_search_chose():
    root = Path(__file__).resolve().parents[1]
    spec = load_search(root / "notebooks/params/recipe_search/fashion-mnist.yaml")
    record = json.loads((root / "notebooks/params/selected/fashion-mnist-recipe.json").read_text())
    assert record["name"] in [c["name"] for c in spec["candidates"]]
    chosen = {**spec["base"], **record["settings"]}
    overrides = chosen.get("student_overrides", {})
    assert get_recipe("fashion-mnist", student=True) == get_recipe(chosen["student_recipe"], student=True, **overrides)
    for notebook in ("00_quickstart", "01_main_results", "02_ablation", "03_cross_architecture", "05_diversity_tsne"):
        params = yaml.safe_load((root / f"notebooks/params/quick/{notebook}.yaml").read_text())
        assert params["student_recipe"] == "fashion-mnist", notebook
        assert (params["teacher_arch"], params["student_arch"]) == (chosen["teacher_arch"], chosen["student_arch"])


def test_the_transformer_students_use_the_lr_their_searches_chose():
    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "notebooks/params/quick/03_cross_architecture.yaml").read_text())
    for arch in ("vit_tiny", "swin_tiny"):
        record = json.loads((root / f"notebooks/params/selected/fashion-mnist-{arch}.json").read_text())
        assert record["base"]["student_arch"] == arch and record["selected_by"]["validation_per_class"] > 0
        assert params["per_student_overrides"][arch] == record["settings"]["student_overrides"], arch
