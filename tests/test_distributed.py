"""Experiments under torchrun (``dire.distributed``): the ranks split synthesis units and student seeds and leave
the artifacts one process leaves; a rank killed mid-run, then a rerun, also does. Outside torchrun nothing
changes.

The launched runs are real: ``python -m torch.distributed.run --standalone --nproc_per_node 2`` (gloo on the
CPU, a free port) runs a child that logs each piece of work with its rank, on digits. Every process uses one
thread (torchrun's default), since CPU results depend on the thread count.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_faults import assert_same_artifacts  # files equal but for wall times

import dire.distributed as distributed
from dire.runs import load

ROOT = Path(__file__).resolve().parents[1]
TORCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launch(args: list[str], *, ranks: int) -> subprocess.CompletedProcess:
    """``python ARGS`` in one plain process (``ranks=0``) or under ``torchrun --standalone`` with ``ranks``
    processes: one thread each, this checkout importable, no torchrun variables inherited, output captured."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    env = {k: v for k, v in os.environ.items() if k not in TORCH_ENV}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    argv = [*(torchrun if ranks else [sys.executable]), *args]
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


# The child: logs "<kind> <rank>" per piece of work, may SIGKILL itself after writing a chosen file on a chosen
# rank, runs one experiment (under torchrun every rank runs it)
CHILD = r"""
import json, os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
import dire.runs as runs
import dire.synthesis.base as base
import dire.nets.teacher as teacher
import dire.evaluation.soft as soft
import dire.nets.bank as bank
from dire.experiments.config import make_experiment
from dire.experiments.pipeline import run_experiment

spec = json.loads(sys.argv[1])
base.CHECKPOINT_SECONDS = 0.0  # a unit checkpoints every step, so a rank stopped mid-unit resumes there
rank = os.environ.get("RANK", "-")  # "-": no torchrun
atomic = runs._atomic

def killing_atomic(path, write):
    out = atomic(path, write)
    if spec["kill"] and rank == str(spec["kill"][0]) and Path(path).name == spec["kill"][1]:
        os.kill(os.getpid(), signal.SIGKILL)
    return out

def log_work(kind, fn):
    def wrapped(*a, **k):
        with open(spec["worklog"], "a") as f:
            f.write(f"{kind} {rank}\n")
        return fn(*a, **k)
    return wrapped

def log_batches(fn):  # one line per batch of real images embedded into the bank
    def wrapped(model, dataset, chunks, *a):
        with open(spec["worklog"], "a") as f:
            f.write("".join(f"batch {rank}\n" for _ in chunks))
        return fn(model, dataset, chunks, *a)
    return wrapped

runs._atomic = killing_atomic
bank._embed_chunks = log_batches(bank._embed_chunks)
teacher._train = log_work("teacher", teacher._train)
base.run_unit = log_work("unit", base.run_unit)
soft.train_student = log_work("student", soft.train_student)
result = run_experiment(make_experiment(**spec["experiment"]), runs_root=spec["runs_root"], progress=False,
                        log=lambda _m: None)  # fmt: skip
with open(spec["worklog"] + ".acc", "a") as f:  # what each process returned
    f.write(json.dumps([rank, [r["final"] for r in result["accuracy"]["runs"]]]) + "\n")
"""

# 4 synthesis units (one per image slot) and 2 student seeds: 2 units and 1 seed per rank; a bank of 10 batches
# (one per class): 5 per rank
TINY = dict(dataset="digits", ipc=4, ipc_per_unit=1, iterations=5, student_epochs=15, bank_per_class=20,
            student_seeds=[0, 1])  # fmt: skip


def run(tmp_path: Path, runs_root: Path, *, ranks: int = 0, kill=None, name: str = "work") -> int:
    """Run the experiment in one plain process (``ranks=0``) or under torchrun with ``ranks`` processes; the exit
    code (a rank killed makes torchrun stop the others and fail)."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    spec = {"experiment": TINY, "runs_root": str(runs_root), "kill": kill, "worklog": str(tmp_path / name)}
    proc = launch([str(script), json.dumps(spec)], ranks=ranks)
    if proc.returncode != 0 and kill is None:
        raise AssertionError(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode


def work(tmp_path: Path, name: str = "work") -> dict[str, list[str]]:
    """Which ranks did each kind of work, one entry per piece."""
    lines = [line.split() for line in (tmp_path / name).read_text().splitlines()]
    return {kind: sorted(r for k, r in lines if k == kind) for kind in ("teacher", "batch", "unit", "student")}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The experiment run by one plain process (no torchrun)."""
    base = tmp_path_factory.mktemp("one")
    assert run(base, base / "runs") == 0
    return base


def test_outside_torchrun_one_process_does_everything(monkeypatch):
    for name in TORCH_ENV:
        monkeypatch.delenv(name, raising=False)
    assert (distributed.rank(), distributed.world_size(), distributed.active(), distributed.is_main()) == (
        0,
        1,
        False,
        True,
    )
    assert distributed.my_share(range(5)) == [0, 1, 2, 3, 4]
    assert distributed.all_true(False) is False and distributed.all_true(True) is True
    distributed.barrier()
    assert distributed.setup("cpu") == torch.device("cpu")
    assert not torch.distributed.is_initialized()  # no process group is ever made


def test_shares_partition_the_list(monkeypatch):
    items = [f"unit_{i}" for i in range(7)]
    shares = []
    for r in range(3):
        monkeypatch.setenv("RANK", str(r))
        monkeypatch.setenv("WORLD_SIZE", "3")
        shares.append(distributed.my_share(items))
    assert shares == [items[0::3], items[1::3], items[2::3]]
    assert sorted(sum(shares, [])) == sorted(items)


def test_two_ranks_leave_the_artifacts_of_one_process(one_process, tmp_path):
    assert run(tmp_path, tmp_path / "runs", ranks=2) == 0
    assert_same_artifacts(one_process / "runs", tmp_path / "runs")  # every file, wall times aside
    ref, got = (load(next((p / "runs").glob("synthetic/*/synthetic.pt"))) for p in (one_process, tmp_path))
    assert torch.equal(ref["images"], got["images"]) and torch.equal(ref["labels"], got["labels"])
    # each unit, bank batch and student once, split evenly: 2 units, 5 bank batches and 1 seed per rank; one
    # teacher between them
    did = work(tmp_path)
    assert len(did["teacher"]) == 1 and did["unit"] == ["0", "0", "1", "1"] and did["student"] == ["0", "1"]
    assert did["batch"] == ["0"] * 5 + ["1"] * 5
    assert work(one_process)["unit"] == ["-"] * 4 and work(one_process)["batch"] == ["-"] * 10
    # every rank returns the per-seed accuracies of the one process (which differ between the seeds)
    one = [json.loads(line) for line in (one_process / "work.acc").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "work.acc").read_text().splitlines()]
    assert sorted(r for r, _ in two) == ["0", "1"] and all(acc == one[0][1] for _, acc in two)
    assert len(set(one[0][1])) == 2
    assert len(list((tmp_path / "runs" / "experiment").glob("*/result.json"))) == 1  # written by rank 0


@pytest.mark.slow  # fault injection, as tests/test_faults.py
def test_rank_killed_after_its_first_unit_then_rerun_leaves_the_same_bytes(one_process, tmp_path):
    root = tmp_path / "runs"
    for stage in ("teacher", "bank"):  # start at synthesis
        shutil.copytree(one_process / "runs" / stage, root / stage)
    # rank 1's first unit is the second slot; torchrun stops rank 0 (mid-unit, or waiting) when rank 1 dies
    assert run(tmp_path, root, ranks=2, kill=[1, "unit_0000_0001.pt"], name="killed") != 0
    assert list(root.glob("synthetic/*/unit_0000_0001.pt")) and not list(root.glob("synthetic/*/synthetic.pt"))
    assert run(tmp_path, root, ranks=2, name="rerun") == 0
    assert_same_artifacts(one_process / "runs", root)
    killed, rerun = work(tmp_path, "killed")["unit"], work(tmp_path, "rerun")["unit"]
    assert killed.count("1") == 1 and rerun.count("1") == 1  # rank 1's second unit is left for the rerun
    assert len(killed) + len(rerun) <= 5  # finished units are not redone; rank 0's unit in progress resumes


def test_condense_under_torchrun_prints_once(tmp_path):
    """``torchrun -m dire condense``: both ranks run, rank 0 alone prints the result and writes ``--json``."""
    argv = ["-m", "dire", "condense", "--ipc", "2", "--ipc-per-unit", "1", "--iterations", "3", "--student-epochs", "2"]
    argv += ["--bank-per-class", "20", "--student-seeds", "0,1", "--quiet", "--runs-root", str(tmp_path / "runs")]
    argv += ["--json", str(tmp_path / "result.json")]
    done = launch(argv, ranks=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("student accuracy") == 1 and "(2 seeds)" in done.stdout
    assert json.loads((tmp_path / "result.json").read_text())["accuracy"]["final"]["n"] == 2
    assert len(list((tmp_path / "runs").glob("synthetic/*/unit_*.pt"))) == 2


def test_compare_refuses_jobs_under_torchrun(monkeypatch, capsys):
    from dire.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--jobs", "2"])
    assert exit_info.value.code == 2 and "under torchrun" in capsys.readouterr().err
    assert not torch.distributed.is_initialized()


# A notebook whose kernel joins the ranks' group: every rank's kernel agrees on a flag only rank 0 holds, and
# writes what it saw under its figures_root
NOTEBOOK_BODY = """
from pathlib import Path
import dire.distributed as d
agreed = d.all_true(d.rank() == 0)  # False on every rank once the kernels talk: rank 1 says False
out = Path(figures_root) / profile
out.mkdir(parents=True, exist_ok=True)
(out / "NAME.txt").write_text(f"{d.rank()} {d.world_size()} {agreed}")
"""


def test_notebooks_under_torchrun_share_a_group_per_notebook_and_rank_0_keeps_the_outputs(tmp_path):
    """``torchrun -m dire reproduce``: each notebook's kernels (new processes, one after another) form their own
    group in torchrun's store; rank 0's figures, executed notebooks, timings and index are kept, rank 1's go to
    ``build/<profile>/rank1/``."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    names = ["01_a", "02_b", "03_c"]  # three kernels per rank in a row: each needs its own keys in the store
    for name in names:
        params = 'profile: str = "smoke"\ndevice: str = "cpu"\nprogress: bool = True\nfigures_root: str = "../figures"'
        nb = new_notebook(cells=[new_code_cell(params), new_code_cell(NOTEBOOK_BODY.replace("NAME", name))])
        nb.cells[0].metadata["tags"] = ["parameters"]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, nb_dir / f"{name}.ipynb")
    child = "import sys; from pathlib import Path; from dire.report.reproduce import reproduce\n"
    child += "runs = reproduce('smoke', notebooks=Path(sys.argv[1]), quiet=True, log=print)\n"
    child += "assert all(r.ok for r in runs), [r.error for r in runs]\n"
    (tmp_path / "child.py").write_text(child)
    done = launch([str(tmp_path / "child.py"), str(nb_dir)], ranks=2)
    assert done.returncode == 0, done.stderr[-3000:]
    build = tmp_path / "build" / "smoke"
    for name in names:
        assert (tmp_path / "figures" / "smoke" / f"{name}.txt").read_text() == "0 2 False"
        assert (build / "rank1" / "figures" / "smoke" / f"{name}.txt").read_text() == "1 2 False"
        assert (build / f"{name}.ipynb").exists() and (build / "rank1" / f"{name}.ipynb").exists()
    assert set(json.loads((build / "timings.json").read_text())) == set(names)
    assert (build / "index.html").exists() and not list((build / "rank1").glob("*.html"))
    assert not (build / "rank1" / "timings.json").exists()
    assert done.stdout.count("index: ") == 1  # rank 0 alone logs


def test_reproduce_refuses_jobs_and_dry_run_under_torchrun(monkeypatch):
    from dire.report.reproduce import reproduce

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    for kwargs in ({"jobs": 2}, {"dry_run": True}):
        with pytest.raises(ValueError, match="under torchrun the ranks share every notebook"):
            reproduce("smoke", **kwargs)
    assert not torch.distributed.is_initialized()
