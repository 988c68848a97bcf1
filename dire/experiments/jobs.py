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
    # before anything touches CUDA or starts a kernel: CUDA reads the variable once, and a notebook's kernel
    # inherits this environment
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def worker_pool(jobs: int, device: str = "cpu") -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes (a clean interpreter each: no forked torch state): on a CUDA ``device``
    each sees one GPU (``CUDA_VISIBLE_DEVICES``, round robin), on a CPU each gets ``cores // jobs`` threads
    (also as ``OMP_NUM_THREADS``, for the processes it starts)."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    context = multiprocessing.get_context("spawn")
    gpus = None
    if str(device).startswith("cuda"):
        import torch

        count = torch.cuda.device_count()
        gpus = context.Queue()
        for i in range(jobs):
            gpus.put(i % max(count, 1))
    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    return ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(threads, gpus))


def _run(exp: Experiment, where: dict) -> None:
    from dire.experiments.pipeline import run_experiment

    run_experiment(exp, **where, progress=False, log=lambda _m: None)


def run_parallel(experiments: Sequence[Experiment], *, jobs: int, device: str = "cpu", **where) -> None:
    """Run (or load) every experiment over ``jobs`` worker processes (:func:`worker_pool`); the first error is
    raised here. ``where``: ``data_root``, ``runs_root``, ``download`` as for ``run_experiment``."""
    where = {k: v for k, v in where.items() if k in ("data_root", "runs_root", "download")}
    where = {"device": "cuda" if str(device).startswith("cuda") else device, **where}
    with worker_pool(jobs, device) as pool:
        for future in [pool.submit(_run, exp, where) for exp in experiments]:
            future.result()
