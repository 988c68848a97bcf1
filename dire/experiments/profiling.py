"""Wall time and peak memory of synthesis steps, on CPU and CUDA alike.

* :func:`timed` (a :class:`Stopwatch`) — wall time of a block, with CUDA work
  synchronised before and after so queued kernels are counted.
* :func:`peak_memory` — peak memory of a block: CUDA allocator peaks (reset at entry),
  or on CPU the process's peak resident set size, which cannot be reset.
* :func:`run_in_fresh_process` — runs ``"module:function"`` in a new Python process and
  returns its result with that process's own peak RSS: the way to compare the CPU
  memory of configurations (baseline vs ``+ DiRe``) without one run inflating the next.

Peak RSS on Linux is read from ``VmHWM`` in ``/proc/self/status`` (the high-water mark of
this process's address space since it started its program). ``getrusage(RUSAGE_SELF)
.ru_maxrss`` is *not* used there: Linux carries the parent's peak over ``fork``/``exec``
into it, so a child started from a 2 GB notebook kernel would report at least 2 GB.
Elsewhere ``ru_maxrss`` is the fallback (KiB on Linux/BSD, bytes on macOS).

``torch`` is imported only when a CUDA device is named, so a fresh process running a
small helper does not pay for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "PeakMemory",
    "Stopwatch",
    "peak_memory",
    "peak_rss_bytes",
    "run_in_fresh_process",
    "timed",
]


# --------------------------------------------------------------------------- devices


def _is_cuda(device: str | torch.device) -> bool:
    """Whether ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``) is CUDA."""
    kind = device.split(":")[0] if isinstance(device, str) else getattr(device, "type", str(device))
    return kind == "cuda"


def _synchronize(device: str | torch.device) -> None:
    """Wait for queued CUDA work on ``device``; nothing on other devices."""
    if _is_cuda(device):
        import torch

        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- time


class Stopwatch:
    """Context manager measuring the wall time of its block into :attr:`seconds`.

    ``time.perf_counter()`` brackets the block; on a CUDA ``device`` the stream is
    synchronised at entry and exit so asynchronous kernels are included.
    :attr:`seconds` is 0.0 until the block exits.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = device
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        _synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        _synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


def timed(device: str | torch.device = "cpu") -> Stopwatch:
    """A :class:`Stopwatch` for ``device`` (default ``"cpu"``): ``with timed(d) as t: ...; t.seconds``."""
    return Stopwatch(device)


# --------------------------------------------------------------------------- memory


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process in bytes, or None where unavailable.

    Linux: ``VmHWM`` of ``/proc/self/status`` (this program's own peak). Other POSIX
    systems: ``ru_maxrss`` of ``RUSAGE_SELF`` (bytes on macOS, KiB elsewhere).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024


@dataclass
class PeakMemory:
    """What :func:`peak_memory` measured; fields are filled when its block exits.

    Attributes:
        device: the device measured, as text.
        allocated_bytes: CUDA only: peak memory held by tensors during the block.
        reserved_bytes: CUDA only: peak memory reserved by the caching allocator.
        peak_rss_bytes: CPU only: the process's peak RSS since it started, *not* since
            the block began (it may predate the block).
        resettable: whether the peak was reset at entry, i.e. belongs to the block
            (True on CUDA, False on CPU).
        note: what the numbers mean, in words.
    """

    device: str
    allocated_bytes: int | None = None
    reserved_bytes: int | None = None
    peak_rss_bytes: int | None = None
    resettable: bool = False
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_CPU_NOTE = (
    "process-lifetime peak RSS; it cannot be reset, so it may predate this block - "
    "use dire.experiments.profiling.run_in_fresh_process to measure one configuration alone"
)
_CUDA_NOTE = "CUDA allocator peaks since entry (reset_peak_memory_stats at entry)"


@contextmanager
def peak_memory(device: str | torch.device = "cpu") -> Iterator[PeakMemory]:
    """Measure the peak memory of a block: ``with peak_memory(d) as m: ...``.

    On CUDA, ``torch.cuda.reset_peak_memory_stats(device)`` runs at entry and
    ``max_memory_allocated`` / ``max_memory_reserved`` (bytes) are read at exit. On
    CPU, :func:`peak_rss_bytes` is read at exit: the peak of the whole process so far,
    flagged by ``resettable=False``. The yielded :class:`PeakMemory` is filled on exit.
    """
    result = PeakMemory(device=str(device))
    if _is_cuda(device):
        import torch

        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield result
    finally:
        if _is_cuda(device):
            import torch

            torch.cuda.synchronize(device)
            result.allocated_bytes = int(torch.cuda.max_memory_allocated(device))
            result.reserved_bytes = int(torch.cuda.max_memory_reserved(device))
            result.resettable, result.note = True, _CUDA_NOTE
        else:
            result.peak_rss_bytes = peak_rss_bytes()
            result.resettable, result.note = False, _CPU_NOTE


# --------------------------------------------------------------------------- fresh process

# Runs in the child: reads {"fn", "kwargs", "sys_path"} from stdin, calls the function,
# and writes {"result", "wall_s", "peak_rss_bytes"} to the file named by argv[1], so that
# whatever the function prints cannot corrupt the answer.
_CHILD = """\
import importlib, json, sys, time
payload = json.load(sys.stdin)
sys.path[:] = payload["sys_path"]
from dire.experiments.profiling import peak_rss_bytes
module_name, _, fn_name = payload["fn"].partition(":")
fn = getattr(importlib.import_module(module_name), fn_name)
before = peak_rss_bytes()
start = time.perf_counter()
result = fn(**payload["kwargs"])
wall_s = time.perf_counter() - start
answer = {"result": result, "wall_s": wall_s, "peak_rss_bytes": peak_rss_bytes(),
          "peak_rss_before_call_bytes": before}
with open(sys.argv[1], "w") as out:
    json.dump(answer, out)
"""


def _tail(text: str, chars: int = 3000) -> str:
    return text if len(text) <= chars else "..." + text[-chars:]


def run_in_fresh_process(
    fn_path: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Call ``module:function`` with ``kwargs`` in a new Python process and return its answer.

    Args:
        fn_path: an importable function as ``"package.module:function"``; the child
            imports it with this process's ``sys.path``.
        kwargs: JSON-able keyword arguments for the function (default None: none).
        timeout: seconds before the child is killed (default None: no limit).

    Returns a dict with:
        ``result``: the function's return value, which must be JSON-able (it comes back
        through JSON, so tuples become lists);
        ``wall_s``: the call's wall time measured in the child (imports excluded);
        ``peak_rss_bytes``: the child's peak RSS when the call returned, measured by the
        child itself (see :func:`peak_rss_bytes`), including the interpreter and imports;
        ``peak_rss_before_call_bytes``: the same just before the call (the import floor);
        ``process_wall_s``: the child's whole lifetime seen from here.

    Raises ``RuntimeError`` with the child's stderr tail when the child fails, and
    ``TimeoutError`` when it runs past ``timeout``.
    """
    module_name, sep, fn_name = fn_path.partition(":")
    if not (module_name and sep and fn_name):
        raise ValueError(f"fn_path must look like 'module:function'; got {fn_path!r}")
    payload = json.dumps({"fn": fn_path, "kwargs": dict(kwargs or {}), "sys_path": sys.path})
    fd, out_path = tempfile.mkstemp(prefix="dire_fresh_", suffix=".json")
    os.close(fd)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, out_path],
            input=payload,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{fn_path} failed in a fresh process (exit code {proc.returncode}):\n{_tail(proc.stderr)}"
            )
        with open(out_path) as handle:
            answer = json.load(handle)
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        raise TimeoutError(f"{fn_path} ran past {timeout} s in a fresh process:\n{_tail(stderr)}") from None
    finally:
        os.unlink(out_path)
    answer["process_wall_s"] = time.perf_counter() - start
    return answer


def _allocate(mb: int) -> dict[str, Any]:
    """Fill a ``mb`` MiB NumPy buffer with ones and return its size and sum.

    A helper for :func:`run_in_fresh_process` checks: every page is written, so the
    child's peak RSS grows by about ``mb`` MiB.
    """
    import numpy as np

    buffer = np.ones(mb * 2**20, dtype=np.uint8)
    return {"mb": mb, "sum": int(buffer.sum(dtype=np.int64))}
