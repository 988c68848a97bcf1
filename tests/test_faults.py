"""Faults, corruption, concurrency and bad input, tried for real.

Runs are real subprocesses on digits. A run is killed with SIGKILL at a chosen write of a chosen stage
(the child wraps ``dire.runs._atomic``, through which every file is written, and kills itself right after
the n-th matching file is committed, or right before it is renamed into place); the rerun must finish and
leave artifacts identical to an uninterrupted run's. Two processes started together on one config must
do each piece of work once between them and leave the same artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dire.report import runs_folder
from dire.runs import load

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

# The child: patches the writer to die at a chosen write, counts the work it does, runs one experiment.
CHILD = r"""
import json, os, signal, sys
import torch
torch.set_num_threads(1)
import dire.runs as runs
import dire.nets.train as train
import dire.synthesis.base as base
import dire.nets.teacher as teacher
import dire.evaluation.soft as soft
import dire.evaluation.dc as dc
from dire.experiments.config import make_experiment
from dire.experiments.pipeline import run_experiment

spec = json.loads(sys.argv[1])
train.CHECKPOINT_SECONDS = 0.0  # checkpoint every epoch and every iteration, so kills can land between them
base.CHECKPOINT_SECONDS = 0.0
match, nth, when = spec["kill"] or [None, 0, "after"]
writes = 0
atomic, replace = runs._atomic, runs.os.replace

def die_replace(src, dst):  # "during": the file is written to its temporary name, never renamed
    if match in str(dst) and writes + 1 == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst)

def counting_atomic(path, write):
    global writes
    out = atomic(path, write)
    if match and match in str(path):
        writes += 1
        if writes == nth and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
    return out

class _Os:  # runs.os with a replace that can die
    def __getattr__(self, name):
        return die_replace if name == "replace" and match and when == "during" else getattr(os, name)

runs._atomic = counting_atomic
runs.os = _Os()

def log_work(kind, fn):  # one line per piece of work this process does
    def wrapped(*a, **k):
        with open(spec["worklog"], "a") as f:
            f.write(f"{kind} {os.getpid()}\n")
        return fn(*a, **k)
    return wrapped

teacher._train = log_work("teacher", teacher._train)
base.run_unit = log_work("unit", base.run_unit)
soft.train_student = log_work("student", soft.train_student)
dc.train_dc = log_work("student", dc.train_dc)
exp = make_experiment(**spec["experiment"])
run_experiment(exp, runs_root=spec["runs_root"], progress=False, log=lambda _m: None)
"""

TINY = dict(dataset="digits", ipc=2, ipc_per_unit=1, iterations=6, student_epochs=3, bank_per_class=20,
            student_seeds=[0], dire=True)  # fmt: skip
MTT = dict(TINY, method="mtt", ipc=1, iterations=4, experts={"num_experts": 2, "epochs": 3}, student_epochs=4)


def run_child(runs_root: Path, experiment: dict, *, kill=None, worklog: Path | None = None):
    spec = {"experiment": experiment, "runs_root": str(runs_root), "kill": kill,
            "worklog": str(worklog or runs_root.parent / f"{runs_root.name}.work")}  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen) -> int:
    _, err = proc.communicate(timeout=600)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({proc.returncode}):\n{err[-3000:]}")
    return proc.returncode


def _comparable(path: Path):
    """A file's content with what legitimately differs between two runs left out: wall times, and the
    absolute folder paths an experiment's record holds."""
    if path.suffix == ".pt":
        data = load(path)
        return {k: v for k, v in data.items() if k != "seconds"} if isinstance(data, dict) else data
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return {k: v for k, v in data.items() if k not in ("timing", "dirs")} if isinstance(data, dict) else data
    return path.read_bytes()


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # NaN (e.g. recall with too few points) equals NaN here
    return a == b


def artifacts(root: Path) -> dict[str, Path]:
    """The files of a runs root, less locks and the temporary file a kill before a rename leaves."""
    return {
        str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and not p.name.endswith((".lock", ".tmp"))
    }


def _timed(name: str) -> bool:
    """Files that record wall times (synthesis units and sets, experiment records): equal but for those."""
    return Path(name).name.startswith("unit_") or name.endswith("synthetic.pt") or name.startswith("experiment")


def assert_same_artifacts(reference: Path, other: Path) -> None:
    ref, got = artifacts(reference), artifacts(other)
    assert sorted(ref) == sorted(got), f"file sets differ: {sorted(set(ref) ^ set(got))}"
    for name, path in ref.items():
        if path.read_bytes() != got[name].read_bytes():
            assert _timed(name), f"{name}: not byte-identical"
            assert _equal(_comparable(path), _comparable(got[name])), f"{name} differs beyond its wall times"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs of the soft-label (SRe2L + DiRe) and the MTT experiment, one root each."""
    base = tmp_path_factory.mktemp("faults")
    roots = {"soft": base / "ref_soft", "mtt": base / "ref_mtt"}
    procs = [run_child(roots["soft"], TINY), run_child(roots["mtt"], MTT)]
    assert [finish(p) for p in procs] == [0, 0]
    return roots


def _seeded(reference: Path, tmp_path: Path, keep: tuple[str, ...]) -> Path:
    """A fresh runs root holding copies of the reference's finished stages ``keep`` (so a test starts at the
    stage it kills)."""
    root = tmp_path / "runs"
    for stage in keep:
        shutil.copytree(reference / stage, root / stage)
    return root


KILLS = [  # (experiment, stages copied from the reference, what to kill at, n-th write, when)
    ("soft", (), "teacher", 2, "after"),  # mid-training: after the 2nd write in the teacher folder
    ("soft", (), "model.pt", 1, "after"),  # between the teacher's two final writes
    ("soft", ("teacher",), "bank.pt", 1, "during"),  # the bank written to its temporary name only
    ("soft", ("teacher", "bank"), "ckpt.pt", 3, "after"),  # mid-unit synthesis
    ("soft", ("teacher", "bank"), "unit_0000_0000.pt", 1, "after"),  # between units
    ("soft", (), "metrics.json", 1, "after"),  # a finished teacher, before its checkpoint is dropped
    ("soft", ("teacher", "bank", "synthetic"), "student", 2, "after"),  # mid-student (epoch checkpoints)
    ("mtt", ("teacher", "bank"), "partial.pt", 2, "after"),  # mid-expert
    ("mtt", ("teacher", "bank", "experts"), "ckpt.pt", 2, "after"),  # mid MTT synthesis
    ("mtt", ("teacher", "bank", "experts", "synthetic"), "student_dc", 2, "after"),  # mid DC student
]


@pytest.mark.parametrize("kind,keep,match,nth,when", KILLS, ids=[f"{k[0]}-{k[2]}-{k[3]}-{k[4]}" for k in KILLS])
def test_killed_run_resumes_to_identical_artifacts(reference, tmp_path, kind, keep, match, nth, when):
    root = _seeded(reference[kind], tmp_path, keep)
    experiment = TINY if kind == "soft" else MTT
    assert finish(run_child(root, experiment, kill=[match, nth, when])) == -signal.SIGKILL
    leftovers = sorted(root.rglob("*.tmp"))
    assert bool(leftovers) == (when == "during")  # a kill before a rename leaves the temporary file, only then
    assert finish(run_child(root, experiment)) == 0
    assert_same_artifacts(reference[kind], root)
    assert sorted(runs_folder.clean(root)) == leftovers  # `dire runs clean` removes it, and nothing else
    assert all(r.complete for r in runs_folder.scan(root))


def test_two_processes_on_one_config_share_the_work(reference, tmp_path):
    experiment = dict(TINY, ipc=4, iterations=30, student_seeds=[0, 1])
    solo, shared = tmp_path / "solo", tmp_path / "shared"
    assert finish(run_child(solo, experiment, worklog=tmp_path / "solo.work")) == 0
    procs = [run_child(shared, experiment, worklog=tmp_path / "shared.work") for _ in range(2)]
    assert [finish(p) for p in procs] == [0, 0]
    work = (tmp_path / "shared.work").read_text().split("\n")
    count = {kind: sum(line.startswith(kind) for line in work) for kind in ("teacher", "unit", "student")}
    assert count == {"teacher": 1, "unit": 4, "student": 2}, count  # each piece once, between the two
    assert len({line.split()[1] for line in work if line.startswith("unit")}) == 2  # both took units
    assert_same_artifacts(solo, shared)
