"""The papermill runner: injected parameters reach the notebook and shape its table; the kernel's progress and
result lines are streamed while it runs (over IPC, so without the kernel's TCP warning), and --quiet silences
them; failures are reported with their cell while the other notebooks still run; parameters are validated;
time estimates come from earlier runs."""

import csv
import json
import time

import pytest

from dire.report.notebook import check_parameters
from dire.report.reproduce import (
    NOTEBOOKS,
    estimate_left,
    list_notebooks,
    load_profile,
    read_timings,
    reproduce,
    run_notebook,
)


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
        "07_explore",
    ]
    for profile in ("smoke", "quick", "paper"):
        for name in list_notebooks():
            known = set(papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb")))
            assert set(load_profile(profile, name)) <= known, (profile, name)


class _Stamped:
    """A stream that keeps what was written and when."""

    def __init__(self):
        self.parts: list[tuple[float, str]] = []

    def write(self, text: str) -> None:
        self.parts.append((time.monotonic(), text))

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.parts)


def test_runner_injects_parameters_and_writes_the_table(tmp_path, runs_root, capfd):
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
    out, err = _Stamped(), _Stamped()
    start = time.monotonic()
    run = run_notebook("02_ablation", profile="smoke", build=tmp_path / "build", extra=extra, stdout=out, stderr=err)
    assert run.ok, run.error
    # streamed while running: synthesis and student bars on stderr, one result line per experiment on stdout
    bars = err.text.replace("\r", "\n")
    assert "sre2l (1 of 1 units): 100%" in bars and "sre2l + DiRe (1 of 1 units): 100%" in bars
    assert "student convnet_bn seed 0: 100%|" in bars and "10/10" in bars
    done = [line for line in out.text.splitlines() if line.startswith("done: ")]
    assert len(done) == 3 and done[0].startswith("done: sre2l on digits, IPC 5, seed 0: convnet_bn student accuracy ")
    assert done[1].startswith("done: sre2l + DiRe (w 0.1, cd,cdm,edm) on digits") and "Vendi " in done[1]
    assert done[2].startswith("done: real on digits, IPC 5, seed 0")  # the reference row, on by default
    stamps = [start] + sorted(t for t, _ in out.parts + err.parts)
    assert max(b - a for a, b in zip(stamps, stamps[1:])) < 30  # never silent for 30 s
    # the kernel ran over IPC: its own stderr (inherited by this process) has no TCP warning
    assert "without encryption" not in capfd.readouterr().err
    with open(figures / "smoke" / "02_ablation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["none", "all", "real subset"]  # the injected variants, the reference
    assert rows[0]["dire"] == "False" and rows[1]["dire"] == "True"
    for r in rows:
        assert 0 <= float(r["acc_final_mean"]) <= 100 and float(r["vendi_mean"]) >= 1.0
    assert {float(r["vendi_norm"]) for r in rows[:2]} == {0.0, 1.0}  # min-max over the two variants only
    assert (figures / "smoke" / "02_ablation_normalised.png").exists()
    assert (tmp_path / "build" / "02_ablation.ipynb").exists()


def test_failing_notebook_is_named_with_its_cell_and_others_still_run(tmp_path, capsys):
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
    # the runner always injects profile, device and progress: give these notebooks those parameters too
    for path in nb_dir.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nb.cells[0].source += '\nprofile: str = "smoke"\ndevice: str = "cpu"\nprogress: bool = True'
        nb.cells.append(new_code_cell("print('progress is', progress)"))
        nbformat.write(nb, path)
    logs = []
    runs = reproduce("smoke", notebooks=nb_dir, quiet=True, log=logs.append)
    assert [(r.name, r.ok) for r in runs] == [("01_bad", False), ("02_good", True)]
    assert "RuntimeError" in runs[0].error and "broken on purpose" in runs[0].error and "cell" in runs[0].error
    # quiet: the failure and the index only, nothing streamed, and the notebooks were told progress=False
    assert len(logs) == 2 and "01_bad: FAILED" in logs[0] and logs[1].startswith("index: ")
    assert "progress is" not in capsys.readouterr().out
    executed = nbformat.read(tmp_path / "build" / "smoke" / "02_good.ipynb", as_version=4)
    assert "progress is False" in executed.cells[-1].outputs[0]["text"]
    index = (tmp_path / "build" / "smoke" / "index.html").read_text()
    assert "FAILED" in index and "02_good" in index
    # the good run's time is kept; the next run estimates from it and streams the notebook's output
    timings = read_timings(tmp_path / "build" / "smoke")
    assert set(timings) == {"02_good"} and timings["02_good"]["device"] == "cpu"
    logs.clear()
    reproduce("smoke", notebooks=nb_dir, log=logs.append)
    assert "never timed here" in logs[0] and "left by earlier runs" in logs[0]
    assert "progress is True" in capsys.readouterr().out


def test_notebooks_in_two_processes_give_the_serial_runs_with_a_share_of_the_threads(tmp_path):
    import os

    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    for name, body in (("01_bad", "raise RuntimeError('broken on purpose')"), ("02_good", "x = 1"), ("03_good", "")):
        nb = new_notebook(
            cells=[
                new_code_cell('value: int = 1\nprofile: str = "smoke"\ndevice: str = "cpu"\nprogress: bool = True'),
                new_code_cell(body),
                new_code_cell("import os; print('threads', os.environ.get('OMP_NUM_THREADS'))"),
            ]
        )
        nb.cells[0].metadata["tags"] = ["parameters"]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.write(nb, nb_dir / f"{name}.ipynb")
    logs = []
    runs = reproduce("smoke", notebooks=nb_dir, quiet=True, log=logs.append, jobs=2)
    assert [(r.name, r.ok) for r in runs] == [("01_bad", False), ("02_good", True), ("03_good", True)]
    assert "broken on purpose" in runs[0].error and "01_bad: FAILED" in logs[0]
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    for name in ("02_good", "03_good"):
        executed = nbformat.read(tmp_path / "build" / "smoke" / f"{name}.ipynb", as_version=4)
        assert executed.cells[-1].outputs[0]["text"].strip() == f"threads {share}"
    assert set(read_timings(tmp_path / "build" / "smoke")) == {"02_good", "03_good"}
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        reproduce("smoke", notebooks=nb_dir, jobs=0)


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


def test_time_left_is_estimated_from_earlier_runs_on_the_same_device():
    timings = {"01_a": {"seconds": 120.0, "device": "cpu"}, "02_b": {"seconds": 60.0, "device": "cuda"}}
    assert estimate_left(["01_a"], timings, "cpu") == "about 2 min left by earlier runs"
    assert estimate_left(["01_a", "02_b"], timings, "cpu") == (
        "about 2 min left by earlier runs, plus 1 notebook never timed here"
    )  # 02_b's time is from another device
    assert estimate_left(["02_b"], timings, "cpu") == "no earlier time for this on cpu"
    assert estimate_left(["01_a"], {"01_a": {"seconds": 7200.0, "device": "cpu"}}, "cpu").startswith("about 2.0 h")


def test_unreadable_timings_file_says_what_to_do(tmp_path):
    (tmp_path / "timings.json").write_text("{not json")
    with pytest.raises(ValueError, match="delete it"):
        read_timings(tmp_path)
    (tmp_path / "timings.json").write_text(json.dumps({"x": {"seconds": 1, "device": "cpu"}}))
    assert read_timings(tmp_path) == {"x": {"seconds": 1, "device": "cpu"}}
