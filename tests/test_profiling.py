"""dire.experiments.profiling: stopwatch, peak memory, fresh-process runs (CPU)."""

import time

import pytest

from dire.experiments.profiling import (
    PeakMemory,
    Stopwatch,
    peak_memory,
    peak_rss_bytes,
    run_in_fresh_process,
    timed,
)

MIB = 2**20


def test_timed_measures_sleep():
    with timed("cpu") as watch:
        time.sleep(0.05)
    assert isinstance(watch, Stopwatch)
    assert 0.045 <= watch.seconds < 0.5


def test_peak_memory_cpu_reports_unresettable_rss():
    with peak_memory("cpu") as mem:
        buffer = bytearray(8 * MIB)
    del buffer
    assert isinstance(mem, PeakMemory)
    assert mem.resettable is False and "cannot be reset" in mem.note
    assert mem.peak_rss_bytes is not None and mem.peak_rss_bytes >= 8 * MIB
    assert mem.allocated_bytes is None and mem.reserved_bytes is None


def test_fresh_process_peak_rss_tracks_allocation():
    small = run_in_fresh_process("dire.experiments.profiling:_allocate", {"mb": 10}, timeout=60)
    large = run_in_fresh_process("dire.experiments.profiling:_allocate", {"mb": 200}, timeout=60)
    assert small["result"] == {"mb": 10, "sum": 10 * MIB}
    assert large["result"] == {"mb": 200, "sum": 200 * MIB}
    assert large["peak_rss_bytes"] - small["peak_rss_bytes"] >= 150 * MIB
    # the child measures itself: this (pytest + torch) process's larger peak does not leak in
    assert small["peak_rss_bytes"] < peak_rss_bytes()
    for answer in (small, large):
        assert answer["peak_rss_before_call_bytes"] <= answer["peak_rss_bytes"]
        assert 0 < answer["wall_s"] < answer["process_wall_s"]


def test_fresh_process_errors_carry_child_stderr():
    with pytest.raises(RuntimeError, match="negative dimensions"):
        run_in_fresh_process("dire.experiments.profiling:_allocate", {"mb": -1}, timeout=60)
    with pytest.raises(RuntimeError, match="no_such_function"):
        run_in_fresh_process("dire.experiments.profiling:no_such_function", {}, timeout=60)
    with pytest.raises(ValueError, match="module:function"):
        run_in_fresh_process("dire.experiments.profiling._allocate", {})


HELPER = """
import time

def nap(seconds):
    time.sleep(seconds)

def chatty(values):
    print("noise on stdout")
    return {"values": values, "pair": (1, 2)}
"""


@pytest.fixture
def helper_module(tmp_path, monkeypatch):
    """An importable module that exists only on this process's sys.path."""
    (tmp_path / "profiling_helper_mod.py").write_text(HELPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "profiling_helper_mod"


def test_fresh_process_uses_parent_sys_path_and_ignores_stdout(helper_module):
    answer = run_in_fresh_process(f"{helper_module}:chatty", {"values": [1.5, "a"]})
    assert answer["result"] == {"values": [1.5, "a"], "pair": [1, 2]}


def test_fresh_process_timeout(helper_module):
    start = time.perf_counter()
    with pytest.raises(TimeoutError):
        run_in_fresh_process(f"{helper_module}:nap", {"seconds": 30}, timeout=1.0)
    assert time.perf_counter() - start < 10


def test_cuda_paths_call_the_allocator_api(monkeypatch):
    """No GPU here: record the torch.cuda calls the CUDA branches make, in order."""
    import torch

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(("sync", str(d))))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(("reset", str(d))))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 123)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda d=None: 456)
    with peak_memory("cuda:0") as mem:
        calls.append(("body", ""))
    assert calls == [("sync", "cuda:0"), ("reset", "cuda:0"), ("body", ""), ("sync", "cuda:0")]
    assert (mem.allocated_bytes, mem.reserved_bytes, mem.peak_rss_bytes, mem.resettable) == (123, 456, None, True)
    calls.clear()
    with timed(torch.device("cuda", 0)):
        calls.append(("body", ""))
    assert calls == [("sync", "cuda:0"), ("body", ""), ("sync", "cuda:0")]
    calls.clear()
    with timed("cpu"), peak_memory(torch.device("cpu")):
        pass
    assert calls == []
