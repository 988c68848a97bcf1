"""The papermill runner: injected parameters reach the notebook and shape its table; failures are
reported with their cell while the other notebooks still run; parameters are validated."""

import csv

import pytest

from dire.report.notebook import check_parameters
from dire.report.reproduce import NOTEBOOKS, list_notebooks, load_profile, reproduce, run_notebook


def test_every_profile_file_names_known_parameters():
    import papermill

    assert list_notebooks() == [
        "00_quickstart",
        "01_main_results",
        "02_ablation",
        "03_cross_architecture",
        "04_timing_memory",
        "05_diversity_tsne",
        "06_weight_sweep",
    ]
    for profile in ("smoke", "quick", "paper"):
        for name in list_notebooks():
            known = set(papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb")))
            assert set(load_profile(profile, name)) <= known, (profile, name)


def test_runner_injects_parameters_and_writes_the_table(tmp_path, runs_root):
    figures = tmp_path / "figures"
    extra = {
        "figures_root": str(figures),
        "runs_root": str(runs_root),
        "variants": ["none", "all"],
        "seeds": [0],
        "iterations": 10,
        "student_epochs": 10,
        "bank_per_class": 50,
        "data_root": str(NOTEBOOKS.parent / "data"),
    }
    run = run_notebook("02_ablation", profile="smoke", build=tmp_path / "build", extra=extra)
    assert run.ok, run.error
    with open(figures / "smoke" / "02_ablation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["none", "all"]  # the injected variants, not the default eight
    assert rows[0]["dire"] == "False" and rows[1]["dire"] == "True"
    for r in rows:
        assert 0 <= float(r["acc_final_mean"]) <= 100 and float(r["vendi_mean"]) >= 1.0
        assert {float(r["vendi_norm"]) for r in rows} == {0.0, 1.0}  # min-max over two variants
    assert (figures / "smoke" / "02_ablation_normalised.png").exists()
    assert (tmp_path / "build" / "02_ablation.ipynb").exists()


def test_failing_notebook_is_named_with_its_cell_and_others_still_run(tmp_path, monkeypatch):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    for name, body in (("01_bad", "raise RuntimeError('broken on purpose')"), ("02_good", "x = 1")):
        nb = new_notebook(cells=[new_code_cell("value: int = 1  # a parameter"), new_code_cell(body)])
        nb.cells[0].metadata["tags"] = ["parameters"]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.write(nb, nb_dir / f"{name}.ipynb")
    # the runner always injects profile and device: give these notebooks those parameters too
    for path in nb_dir.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nb.cells[0].source += '\nprofile: str = "smoke"\ndevice: str = "cpu"'
        nbformat.write(nb, path)
    logs = []
    runs = reproduce("smoke", notebooks=nb_dir, log=logs.append)
    assert [(r.name, r.ok) for r in runs] == [("01_bad", False), ("02_good", True)]
    assert "RuntimeError" in runs[0].error and "broken on purpose" in runs[0].error and "cell" in runs[0].error
    assert any("01_bad: FAILED" in line for line in logs)
    index = (tmp_path / "build" / "smoke" / "index.html").read_text()
    assert "FAILED" in index and "02_good" in index


def test_unknown_profile_parameter_is_rejected_before_running(tmp_path):
    run = run_notebook("02_ablation", profile="smoke", build=tmp_path, extra={"not_a_parameter": 1})
    assert not run.ok and "unknown parameter(s) ['not_a_parameter']" in run.error


def test_check_parameters_types_and_unknown_names():
    ns = {
        "__annotations__": {"n": int, "lr": float, "xs": list[int], "arch": str | None},
        "n": 3,
        "lr": 1,
        "xs": [1, 2],
        "arch": None,
    }
    values = check_parameters(ns, before=set())
    assert values["lr"] == 1.0 and isinstance(ns["lr"], float)  # an int is accepted for a float
    with pytest.raises(TypeError, match="parameter 'n' should be int, got '3'"):
        check_parameters({**ns, "n": "3"}, before=set())
    with pytest.raises(TypeError, match="parameter 'xs'"):
        check_parameters({**ns, "xs": [1, "a"]}, before=set())
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['bogus'\]"):
        check_parameters({**ns, "bogus": 1}, before=set())
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        reproduce("huge")
