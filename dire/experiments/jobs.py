"""The independent experiments of a table, run in N worker processes that share one runs/ folder.

Workers only fill the cache: each runs (or loads) its experiments with ``run_experiment``, and the table's
own pass then reads every result from ``runs/``, so a table made with N workers is the table made with
one. Shared pieces (a teacher, a bank, a synthetic set two rows use) are computed once: the run-folder
locks of :mod:`dire.runs` make the other workers wait for them. On a machine with GPUs each worker gets
its own (``CUDA_VISIBLE_DEVICES``, round robin); on a CPU each gets ``cores // N`` threads. CPU results
depend on the thread count (the order of reductions), so they match a one-process run bit for bit when
that run uses the same number of threads per process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from dire.experiments.config import Experiment


def _start_worker(threads: int, gpus: multiprocessing.Queue | None) -> None:
    if gpus is not None:  # before anything touches CUDA, which reads the variable once
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    import torch

    torch.set_num_threads(threads)


def _run(exp: Experiment, where: dict) -> None:
    from dire.experiments.pipeline import run_experiment

    run_experiment(exp, **where, progress=False, log=lambda _m: None)


def run_parallel(experiments: Sequence[Experiment], *, jobs: int, device: str = "cpu", **where) -> None:
    """Run (or load) every experiment over ``jobs`` worker processes; the first error is raised here.
    ``where``: ``data_root``, ``runs_root``, ``download`` as for ``run_experiment``."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    where = {k: v for k, v in where.items() if k in ("data_root", "runs_root", "download")}
    where = {"device": "cuda" if str(device).startswith("cuda") else device, **where}
    context = multiprocessing.get_context("spawn")  # a clean interpreter per worker: no forked torch state
    gpus = None
    if str(device).startswith("cuda"):
        import torch

        count = torch.cuda.device_count()
        gpus = context.Queue()
        for i in range(jobs):
            gpus.put(i % max(count, 1))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(threads, gpus)) as pool:
        for future in [pool.submit(_run, exp, where) for exp in experiments]:
            future.result()
