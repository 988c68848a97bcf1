"""A table's experiments in worker processes (``compare(..., jobs=2)``) give the rows one process gives."""

from __future__ import annotations

import math
import os

import pytest
import torch

from dire.experiments.config import make_experiment
from dire.experiments.drivers import compare

pytestmark = pytest.mark.slow

TINY = dict(dataset="digits", ipc=2, ipc_per_unit=2, iterations=5, student_epochs=3, bank_per_class=20)


def _comparable(rows: list[dict]) -> list[dict]:
    """Rows without wall times (synthesis time per image differs from run to run)."""
    return [{k: v for k, v in r.items() if k not in ("synthesis_s_per_image", "runs")} for r in rows]


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def test_two_workers_give_the_rows_of_one_process(tmp_path):
    """On this 2-core machine each of 2 workers gets 1 thread; CPU reductions depend on the thread count, so
    the one-process run uses 1 thread too (with equal threads the results are bit-identical)."""
    base = make_experiment(**TINY)
    quiet = dict(log=lambda _m: None, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        one = compare(base, seeds=[0, 1], methods=["sre2l", "cda"], runs_root=tmp_path / "one", **quiet)
    finally:
        torch.set_num_threads(threads)
    two = compare(base, seeds=[0, 1], methods=["sre2l", "cda"], runs_root=tmp_path / "two", jobs=2, **quiet)
    assert len(one) == len(two) == 4
    assert all(_same(a, b) for a, b in zip(_comparable(one), _comparable(two)))
    # the workers filled the cache: 4 rows x 2 seeds experiments, each run once
    assert len(list((tmp_path / "two" / "experiment").iterdir())) == 8
