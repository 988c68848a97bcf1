"""A quick-profile table's experiments in one process or in worker processes (``jobs``), side by side.

Issue 15 asks whether small CPU models gain more from process parallelism than from intra-op threads. This runs
the same slice of the quick ``01_main_results`` table (one method, baseline and + DiRe, a few seeds, on the
profile's Fashion-MNIST settings) three ways, each in a fresh process on a fresh copy of one prepared runs
folder, so every arm synthesises, trains and measures the same experiments from the same cached teacher,
evaluator and bank:

- ``1 x 1``: one process, one thread (``compare(jobs=1)``);
- ``1 x C``: one process, all C cores as torch threads (how a notebook runs with ``jobs: 1``);
- ``J x 1``: ``compare(jobs=J)``, J worker processes of ``C // J`` threads (how it runs with ``jobs: J``).

It prints each arm's wall time and the ratios, and checks that the ``1 x 1`` and ``J x 1`` tables are equal
(same threads per process, so the same bits). The teacher, evaluator and bank are made once beforehand and not
timed (copied from ``--runs-from`` when it holds them).

    python benchmarks/jobs_scaling.py [--method sre2l] [--seeds 2] [--iterations 100] [--student-epochs 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHED = ("teacher", "bank", "precomputed")  # what every arm starts from; the rest it computes itself


def experiment(args: argparse.Namespace):
    """The quick 01 profile's experiment for ``args.method`` at IPC 10, with this run's steps and epochs."""
    from dire.experiments.config import make_experiment
    from dire.report.reproduce import load_profile

    params = load_profile("quick", "01_main_results")
    overrides = (params.get("method_overrides") or {}).get(args.method, {})
    settings = dict(method=args.method, ipc=10, iterations=args.iterations, student_epochs=args.student_epochs)
    return make_experiment(**{**params, **overrides, "dataset": params["datasets"][0], **settings})


def arm(args: argparse.Namespace) -> None:
    """One timed arm (in its own process): the slice's rows, written with the wall time to ``args.out``."""
    import torch

    from dire.experiments.drivers import compare

    torch.set_num_threads(args.threads)
    where = dict(runs_root=args.runs_root, data_root=ROOT / "data", progress=False, log=lambda _m: None)
    start = time.perf_counter()
    rows = compare(experiment(args), seeds=list(range(args.seeds)), methods=[args.method], jobs=args.jobs, **where)
    wall = time.perf_counter() - start
    accuracy = [[r["acc_final"] for r in row["runs"]] for row in rows]
    Path(args.out).write_text(json.dumps({"wall": wall, "accuracy": accuracy}))


def copy_cached(source: Path, runs_root: Path) -> None:
    """The :data:`CACHED` parts of runs folder ``source`` that exist, into ``runs_root``."""
    for part in CACHED:
        if (source / part).is_dir():
            shutil.copytree(source / part, runs_root / part)


def prepare(runs_root: Path, runs_from: Path, args: argparse.Namespace) -> None:
    """Teacher, evaluator and bank in ``runs_root`` (copied where ``runs_from`` has them, else trained), by one
    throwaway experiment of a single step and epoch (not timed)."""
    from dire.experiments.drivers import with_seed
    from dire.experiments.pipeline import run_experiment

    copy_cached(runs_from, runs_root)
    probe = argparse.Namespace(**{**vars(args), "iterations": 1, "student_epochs": 1})
    run_experiment(with_seed(experiment(probe), 0), runs_root=runs_root, data_root=ROOT / "data", progress=False)


def launch(jobs: int, threads: int, prepared: Path, tmp: Path, args: argparse.Namespace) -> dict:
    runs_root = tmp / f"runs_{jobs}x{threads}"
    copy_cached(prepared, runs_root)
    out = tmp / f"arm_{jobs}x{threads}.json"
    argv = [sys.executable, __file__, "--arm", "--jobs", str(jobs), "--threads", str(threads)]
    argv += ["--runs-root", str(runs_root), "--out", str(out), "--method", args.method, "--seeds", str(args.seeds)]
    argv += ["--iterations", str(args.iterations), "--student-epochs", str(args.student_epochs)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"arm {jobs} x {threads} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="sre2l", help="the quick 01 method whose baseline and + DiRe rows run")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 of each row")
    parser.add_argument("--iterations", type=int, default=100, help="synthesis steps (the quick profile: 500)")
    parser.add_argument("--student-epochs", type=int, default=100, help="student epochs (the quick recipe: 300)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of the parallel arm")
    parser.add_argument("--runs-from", type=Path, default=ROOT / "runs", help="a runs folder to copy teachers from")
    parser.add_argument("--arm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--runs-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        return arm(args)
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {cores} cores (load average {load:.1f}), python {platform.python_version()}")
    print(
        f"slice: quick 01, fashion-mnist IPC 10, {args.method} and + DiRe, {args.seeds} seeds "
        f"({2 * args.seeds} experiments), {args.iterations} synthesis steps, {args.student_epochs} student epochs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare(tmp / "prepared", args.runs_from, args)
        arms = [(1, 1), (1, cores), (args.jobs, max(1, cores // args.jobs))]
        results = {}
        for jobs, threads in dict.fromkeys(arms):
            results[jobs, threads] = launch(jobs, threads, tmp / "prepared", tmp, args)
            print(f"  {jobs} x {threads}: {results[jobs, threads]['wall']:.1f} s")
    serial, threaded, parallel = (results[a] for a in arms)
    print(f"{args.jobs} workers x {arms[2][1]} thread vs 1 x 1: {serial['wall'] / parallel['wall']:.2f}x faster")
    print(
        f"{args.jobs} workers x {arms[2][1]} thread vs 1 x {cores}: {threaded['wall'] / parallel['wall']:.2f}x faster"
    )
    print(f"1 x {cores} threads vs 1 x 1: {serial['wall'] / threaded['wall']:.2f}x faster")
    if arms[2][1] == 1:
        same = serial["accuracy"] == parallel["accuracy"]
        print(f"1 x 1 and {args.jobs} x 1 accuracies identical: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
