"""A table's experiments in worker processes (``jobs=2``) give the rows one process gives."""

from __future__ import annotations

import math
import os

import pytest
import torch

import dire.experiments.drivers as drivers
import dire.experiments.jobs as jobs_module
from dire.experiments.config import make_experiment
from dire.experiments.drivers import DIVERSITY, ablation, compare, cross_architecture

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


@pytest.mark.slow
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


def _fake_result(exp) -> dict:
    """What ``run_experiment`` returns, filled with made-up numbers (the rows' values are not under test)."""
    acc = {"mean": 50.0 + exp.synthesis.seed, "std": 0.0, "n": 1}
    return {
        "teacher_acc": 90.0,
        "accuracy": {"final": acc, "best": acc},
        "diversity": dict.fromkeys(DIVERSITY, 0.5),
        "timing": {"synthesis_s_per_image": 0.1},
        "metric_network": "teacher",
        "protocol": "soft",
        "teachers": [exp.teacher_arch],
        "dirs": {"synthetic": "x"},
    }


@pytest.mark.parametrize("driver", ["compare", "ablation", "cross_architecture"])
def test_workers_get_every_experiment_the_table_then_reads(driver, monkeypatch):
    """With jobs > 1 the workers are handed exactly the (experiment, seed) runs that the table's own pass then
    asks for, so that pass only reads the cache: for the main table (variants, reference row), the ablation
    (every term set, reference row) and the cross-architecture table (per-student settings, reference row)."""
    handed, asked = [], []
    monkeypatch.setattr(jobs_module, "run_parallel", lambda exps, jobs, **kw: handed.extend(exps))
    monkeypatch.setattr(drivers, "run_experiment", lambda exp, **kw: (asked.append(exp), _fake_result(exp))[1])
    base = make_experiment(**TINY)
    seeds = [0, 1]
    if driver == "compare":
        variants = {"log-det": {"terms": ["logdet", "cdm", "edm"], "methods": ["cda"]}}
        compare(base, seeds=seeds, methods=["sre2l", "cda"], variants=variants, reference_row=True, jobs=2, log=print)
    elif driver == "ablation":
        ablation(base, seeds=seeds, reference_row=True, jobs=2, log=print)
    else:
        overrides = {"convnet": {"lr": 0.001}}
        students = ["convnet", "convnet_w32"]
        cross_architecture(
            base, students=students, seeds=seeds, student_overrides=overrides, reference_row=True, jobs=2, log=print
        )
    assert asked and sorted(map(repr, handed)) == sorted(map(repr, asked))
    handed.clear()
    asked.clear()
    compare(base, seeds=seeds, methods=["sre2l"], jobs=1, log=print)  # one process: no workers
    assert not handed and len(asked) == 4
