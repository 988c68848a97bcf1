"""``dire reproduce``: run the paper notebooks headless with papermill, per profile.

Each notebook ``notebooks/NN_name.ipynb`` takes its parameters from
``notebooks/params/<profile>/NN_name.yaml`` (plus ``profile`` and ``device``), runs
with the kernel's working folder set to ``notebooks/``, and is saved executed to
``build/<profile>/NN_name.ipynb``. Tables and figures land in ``figures/<profile>/``.
A failing notebook is reported with its failing cell and the others still run; the
run ends with ``build/<profile>/index.html`` listing every table and figure.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

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


def run_notebook(
    name: str,
    *,
    profile: str,
    device: str = "cpu",
    notebooks: Path = NOTEBOOKS,
    build: Path | None = None,
    extra: dict | None = None,
) -> NotebookRun:
    import papermill

    source = notebooks / f"{name}.ipynb"
    if not source.exists():
        raise ValueError(f"no notebook {source}; available: {list_notebooks(notebooks)}")
    build = build or notebooks.parent / "build" / profile
    build.mkdir(parents=True, exist_ok=True)
    params = {**load_profile(profile, name, notebooks), **(extra or {}), "profile": profile, "device": device}
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
        )
        return NotebookRun(name, True, time.perf_counter() - start, output)
    except Exception as exc:  # a failing notebook must not stop the others
        return NotebookRun(name, False, time.perf_counter() - start, output, _failing_cell(exc))


def write_index(runs: Sequence[NotebookRun], *, profile: str, figures: Path, path: Path) -> Path:
    """An HTML page with each notebook's status and every table and figure of the profile."""
    from dire.runs import atomic_write_text

    rows = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{'ok' if r.ok else 'FAILED'}</td><td>{r.seconds:.1f} s</td>"
        f"<td>{html.escape(r.error)}</td><td><a href='{html.escape(r.output.name)}'>executed notebook</a></td></tr>"
        for r in runs
    )
    parts = [
        f"<h1>dire: profile {html.escape(profile)}</h1>",
        f"<table border=1><tr><th>notebook</th><th>status</th><th>time</th><th>error</th><th></th></tr>{rows}</table>",
    ]
    folder = figures / profile
    for md in sorted(folder.glob("*.md")):
        parts.append(
            f"<h2>{html.escape(md.stem)}</h2><pre>{html.escape(md.read_text())}</pre>"
            f"<p><a href='{html.escape(str(md.with_suffix('.csv').resolve()))}'>CSV</a></p>"
        )
    for png in sorted(folder.glob("*.png")):
        pdf = png.with_suffix(".pdf")
        parts.append(
            f"<h3>{html.escape(png.stem)}</h3><img src='{html.escape(str(png.resolve()))}' width=700>"
            + (f"<p><a href='{html.escape(str(pdf.resolve()))}'>PDF</a></p>" if pdf.exists() else "")
        )
    return atomic_write_text(path, "<html><body>" + "\n".join(parts) + "</body></html>\n")


def reproduce(
    profile: str = "quick",
    *,
    only: Sequence[str] | None = None,
    device: str = "cpu",
    notebooks: Path = NOTEBOOKS,
    log: Callable[[str], None] = print,
    extra: dict | None = None,
) -> list[NotebookRun]:
    """Run the profile's notebooks (all, or ``only``), then write the HTML index. ``extra``: parameters given
    to every notebook on top of its profile (e.g. ``{"deterministic": True}``)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    names = list_notebooks(notebooks)
    if only:
        missing = sorted(set(only) - set(names))
        if missing:
            raise ValueError(f"--only: no notebook(s) {missing}; available: {names}")
        names = [n for n in names if n in set(only)]
    build = notebooks.parent / "build" / profile
    runs = []
    for i, name in enumerate(names, 1):
        log(f"[{i}/{len(names)}] {name} ({profile}, {device}) ...")
        run = run_notebook(name, profile=profile, device=device, notebooks=notebooks, build=build, extra=extra)
        log(f"[{i}/{len(names)}] {name}: {'ok' if run.ok else 'FAILED at ' + run.error} ({run.seconds:.1f} s)")
        runs.append(run)
    index = write_index(runs, profile=profile, figures=notebooks.parent / "figures", path=build / "index.html")
    log(f"index: {index}")
    return runs
