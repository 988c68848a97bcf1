"""``dire reproduce``: run the paper notebooks headless with papermill, per profile.

Each notebook ``notebooks/NN_name.ipynb`` takes its parameters from
``notebooks/params/<profile>/NN_name.yaml`` (plus ``profile`` and ``device``), runs
with the kernel's working folder set to ``notebooks/``, and is saved executed to
``build/<profile>/NN_name.ipynb``. Tables and figures land in ``figures/<profile>/``.
A failing notebook is reported with its failing cell and the others still run; the
run ends with ``build/<profile>/index.html`` listing every table and figure.

While a notebook runs, its kernel's output is streamed to this process's stdout and
stderr: progress bars (teacher batches, synthesis steps, student epochs) and one line
per finished experiment. Before each notebook an estimate of the time left is printed,
from the same notebooks' times on earlier runs (``build/<profile>/timings.json``).
``quiet=True`` turns all of that off.

Under torchrun (``torchrun --nproc_per_node N -m dire reproduce ...``) every rank runs the same notebooks in the
same order, and each notebook's kernels form one process group, so its experiments split their units, seeds and
bank batches over the ranks as ``dire condense`` does (docs/distributed.md). Rank 0's executed notebooks, tables,
figures, timings and index are the ones kept; the other ranks write theirs under ``build/<profile>/rank<r>/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import yaml

import dire.distributed as distributed

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
PROFILES = ("smoke", "quick", "paper")


@dataclass
class NotebookRun:
    name: str
    ok: bool
    seconds: float
    output: Path
    error: str = ""


def list_notebooks(notebooks: Path = NOTEBOOKS) -> list[str]:
    return sorted(p.stem for p in notebooks.glob("[0-9][0-9]_*.ipynb"))


def load_profile(profile: str, name: str, notebooks: Path = NOTEBOOKS) -> dict:
    """The YAML parameters of ``name`` under ``profile`` (empty when the profile keeps the defaults)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    path = notebooks / "params" / profile / f"{name}.yaml"
    if not path.exists():
        return {}
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    return params


def check_known(notebook: Path, params: dict) -> None:
    """Reject YAML keys the notebook's ``parameters`` cell does not define (before starting a kernel)."""
    import papermill

    known = set(papermill.inspect_notebook(str(notebook)))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{notebook.name}: unknown parameter(s) {unknown}; it takes {sorted(known)}")


def _failing_cell(exc: Exception) -> str:
    cell = getattr(exc, "exec_count", None)
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    return f"cell {cell}: {ename}: {evalue}" if cell is not None else f"{ename}: {evalue}"


def kernel_transport(folder: str | Path) -> str:
    """``"ipc"`` (kernel sockets as files: nothing listens on the network, and the kernel does not warn that it "is
    running over TCP without encryption") when sockets named like ``<folder>/kernel-<uuid>-ipc-5`` fit the 107
    bytes a Unix socket path may have; else ``"tcp"`` on the loopback interface, which always works."""
    longest = Path(folder) / ("kernel-" + "0" * 36 + "-ipc-5")
    return "ipc" if os.name == "posix" and len(str(longest).encode()) < 100 else "tcp"


def kernel_sockets(folder: str | Path) -> dict:
    """The kernel manager's socket settings (:func:`kernel_transport`). With ``"ipc"`` the sockets get a name of
    their own in ``folder``: by default every kernel's are ``kernel-ipc-1..5`` in its working folder, so two
    notebooks running at once (``jobs > 1``) would connect to each other's kernel."""
    transport = kernel_transport(folder)
    if transport != "ipc":
        return {"transport": transport}
    return {"transport": "ipc", "ip": str(Path(folder) / f"kernel-{uuid.uuid4()}-ipc")}


def run_notebook(
    name: str,
    *,
    profile: str,
    device: str = "cpu",
    notebooks: Path = NOTEBOOKS,
    build: Path | None = None,
    extra: dict | None = None,
    quiet: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> NotebookRun:
    """Execute one notebook with its profile's parameters into ``build``. Unless ``quiet``, the kernel's stdout and
    stderr (progress bars, a line per finished experiment) are streamed to ``stdout`` / ``stderr`` (default: this
    process's) as they arrive; the saved notebook keeps each bar's last state only."""
    import papermill
    from traitlets.config import Config

    source = notebooks / f"{name}.ipynb"
    if not source.exists():
        raise ValueError(f"no notebook {source}; available: {list_notebooks(notebooks)}")
    build = build or notebooks.parent / "build" / profile
    build.mkdir(parents=True, exist_ok=True)
    params = {
        **load_profile(profile, name, notebooks),
        **(extra or {}),
        "profile": profile,
        "device": device,
        "progress": not quiet,
    }
    output = build / f"{name}.ipynb"
    start = time.perf_counter()
    try:
        check_known(source, params)
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=params,
            cwd=str(notebooks),
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
            stdout_file=None if quiet else stdout or sys.stdout,
            stderr_file=None if quiet else stderr or sys.stderr,
            coalesce_streams=True,  # the saved notebook keeps a bar's last state, not every redraw
            # the kernel's connection file, and so its sockets, go to the temporary folder
            config=Config({"KernelManager": kernel_sockets(tempfile.gettempdir())}),
        )
        return NotebookRun(name, True, time.perf_counter() - start, output)
    except Exception as exc:  # a failing notebook must not stop the others
        return NotebookRun(name, False, time.perf_counter() - start, output, _failing_cell(exc))


def write_index(
    runs: Sequence[NotebookRun],
    *,
    profile: str,
    figures: Path,
    path: Path,
    device: str = "cpu",
    notebooks: Sequence[str] | None = None,
) -> Path:
    """``path`` (``build/<profile>/index.html``): each notebook's status, time and executed copy (exported to HTML
    too when nbconvert is installed), every table and figure of ``figures/<profile>/`` (copied beside the page and
    linked relatively, so the folder can be zipped or served) and the environment (:mod:`dire.report.page`)."""
    from dire.report.page import environment, export_html, write_page

    for run in runs:
        if run.output.exists():
            export_html(run.output)
    names = list(notebooks) if notebooks is not None else [r.name for r in runs]
    names += [r.name for r in runs if r.name not in names]
    return write_page(
        path=path,
        profile=profile,
        notebooks=names,
        runs={r.name: r for r in runs},
        timings=read_timings(path.parent),
        figures=figures / profile,
        env=environment(profile=profile, device=device, repo=REPO),
    )


def read_timings(build: Path) -> dict[str, dict]:
    """Each notebook's last successful run in ``build`` (``timings.json``): ``{name: {"seconds", "device"}}``."""
    path = build / "timings.json"
    try:
        timings = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it, the next run writes it again") from None
    return timings if isinstance(timings, dict) else {}


def record_timing(build: Path, run: NotebookRun, device: str) -> None:
    """Keep ``run``'s time in ``build/timings.json`` for later estimates (successful runs only: a failure's time
    says nothing about the next run)."""
    from dire.runs import atomic_write_text

    if not run.ok:
        return
    timings = read_timings(build)
    timings[run.name] = {"seconds": round(run.seconds, 1), "device": device}
    atomic_write_text(build / "timings.json", json.dumps(timings, indent=2, sort_keys=True) + "\n")


def run_notebooks_parallel(
    names: Sequence[str],
    given: dict[str, dict],
    *,
    jobs: int,
    profile: str,
    device: str = "cpu",
    notebooks: Path = NOTEBOOKS,
    build: Path | None = None,
) -> Iterator[NotebookRun]:
    """Run ``names`` (``given[name]``: each one's extra parameters) over ``jobs`` worker processes, started in
    ``names``' order, quiet; yields the runs as they finish. On a machine with GPUs each worker's kernels see one
    GPU (``CUDA_VISIBLE_DEVICES``, round robin, and ``device`` "cuda" means it); on a CPU each gets ``cores // jobs``
    threads (``OMP_NUM_THREADS``)."""
    from concurrent.futures import as_completed

    from dire.experiments.jobs import worker_pool

    device = "cuda" if device.startswith("cuda") else device  # each worker's own GPU
    with worker_pool(jobs, device) as pool:
        futures = [
            pool.submit(
                run_notebook,
                name,
                profile=profile,
                device=device,
                notebooks=notebooks,
                build=build,
                extra=given[name],
                quiet=True,
            )
            for name in names
        ]
        yield from (f.result() for f in as_completed(futures))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_left(names: Sequence[str], timings: dict[str, dict], device: str) -> str:
    """What the last runs on ``device`` say about running ``names``: a sum over the notebooks timed before, and how
    many were never timed. Experiments already cached make a rerun faster than its record."""
    known = [timings[n]["seconds"] for n in names if n in timings and timings[n].get("device") == device]
    untimed = len(names) - len(known)
    if not names:
        return "nothing left"
    if not known:
        return f"no earlier time for {'these' if len(names) > 1 else 'this'} on {device}"
    text = f"about {_duration(sum(known))} left by earlier runs"
    return text + (f", plus {untimed} notebook{'s' if untimed > 1 else ''} never timed here" if untimed else "")


def _dry_run(profile: str, name: str, notebooks: Path, build: Path) -> dict:
    """Notebook ``name``'s dry-run parameters (all of them: they replace the profile's), after writing the
    stand-ins of the datasets it names."""
    import papermill

    from dire.report.dry_run import datasets_of, dry_run_params, write_standins

    params = load_profile(profile, name, notebooks)
    known = set(papermill.inspect_notebook(str(notebooks / f"{name}.ipynb")))
    write_standins(datasets_of(params), build)
    return dry_run_params(params, known, build)


@contextlib.contextmanager
def _kernel_group(name: str | None) -> Iterator[None]:
    """Under torchrun, the kernel started inside makes its process group under ``name``
    (:data:`dire.distributed.GROUP_ENV`, with torchrun's restart count): the same on every rank, new for each
    notebook. Nothing when ``name`` is None."""
    if name is None:
        yield
        return
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    os.environ[distributed.GROUP_ENV] = f"reproduce/{restart}/{name}"
    try:
        yield
    finally:
        del os.environ[distributed.GROUP_ENV]


def reproduce(
    profile: str = "quick",
    *,
    only: Sequence[str] | None = None,
    device: str = "cpu",
    notebooks: Path = NOTEBOOKS,
    quiet: bool = False,
    log: Callable[[str], None] = print,
    extra: dict | None = None,
    dry_run: bool = False,
    jobs: int = 1,
) -> list[NotebookRun]:
    """Run the profile's notebooks (all, or ``only``), then write the HTML index. Unless ``quiet``, each
    notebook's output is streamed and an estimate of the time left is logged before it; with ``quiet`` only
    failures and the index are logged. ``extra``: parameters given to every notebook on top of its profile
    (e.g. ``{"deterministic": True}``).

    ``dry_run``: the profile at a step or two on stand-in data, everything under ``build/<profile>-dry-run/``
    (:mod:`dire.report.dry_run`).

    ``jobs > 1`` runs that many notebooks at once (:func:`run_notebooks_parallel`), the longest by earlier runs
    first; their output is not streamed, each finish is logged. They share ``runs/`` through its folder locks,
    so an experiment two notebooks need is computed once, and the tables are those of ``jobs=1``."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1; got {jobs}")
    ranked, main = distributed.active(), distributed.is_main()
    if ranked and (jobs > 1 or dry_run):
        raise ValueError(
            "under torchrun the ranks share every notebook; --jobs (notebooks in separate processes) and --dry-run "
            "(stand-ins written by one process) run without torchrun"
        )
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    names = list_notebooks(notebooks)
    if only:
        missing = sorted(set(only) - set(names))
        if missing:
            raise ValueError(f"--only: no notebook(s) {missing}; available: {names}")
        names = [n for n in names if n in set(only)]
    build = notebooks.parent / "build" / (f"{profile}-dry-run" if dry_run else profile)
    timings = read_timings(build)
    if not main:  # rank 0 streams, logs and keeps the outputs; this rank's go aside
        build, quiet, log = build / f"rank{distributed.rank()}", True, lambda _m: None

    def finished(i: int, run: NotebookRun) -> NotebookRun:
        if main:
            record_timing(build, run, device)
        if not quiet or not run.ok:
            log(f"[{i}/{len(names)}] {run.name}: {'ok' if run.ok else 'FAILED at ' + run.error} ({run.seconds:.1f} s)")
        return run

    def params(name: str) -> dict:
        given = {**(_dry_run(profile, name, notebooks, build) if dry_run else {}), **(extra or {})}
        if not main:
            given["figures_root"] = str(build / "figures")  # a notebook without it is refused, naming it
        return given

    if jobs > 1:
        given = {n: params(n) for n in names}  # stand-ins written here first: workers must not write one twice
        if not quiet:
            log(f"{len(names)} notebooks in {jobs} processes: {estimate_left(names, timings, device)}")
        longest_first = sorted(names, key=lambda n: -timings.get(n, {}).get("seconds", float("inf")))
        done = run_notebooks_parallel(
            longest_first, given, jobs=jobs, profile=profile, device=device, notebooks=notebooks, build=build
        )
        runs = sorted((finished(i, r) for i, r in enumerate(done, 1)), key=lambda r: names.index(r.name))
    else:
        runs = []
        for i, name in enumerate(names, 1):
            if not quiet:
                left = estimate_left(names[i - 1 :], timings, device)
                log(f"[{i}/{len(names)}] {name} ({profile}, {device}): {left}")
            with _kernel_group(f"{i}-{name}" if ranked else None):
                run = run_notebook(
                    name,
                    profile=profile,
                    device=device,
                    notebooks=notebooks,
                    build=build,
                    quiet=quiet,
                    extra=params(name),
                )
            runs.append(finished(i, run))
    if not main:
        return runs
    from dire.report.dry_run import OUTPUT

    index = write_index(
        runs,
        profile=profile,
        figures=build / OUTPUT if dry_run else notebooks.parent / "figures",
        path=build / "index.html",
        device=device,
        notebooks=list_notebooks(notebooks),
    )
    log(f"index: {index}")
    return runs
