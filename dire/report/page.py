"""The report page of a profile, ``build/<profile>/index.html``: self-contained in its folder, so it can be zipped
or served as it is.

It shows each notebook's status and time with links to the executed notebook (and its HTML export when nbconvert
is installed), every table of ``figures/<profile>/`` as an HTML table (parsed from the Markdown the notebooks
write), every figure, and the environment that made them (package versions, device, git commit, profile).
Tables and figures are copied into ``build/<profile>/figures/`` and linked by relative paths.
"""

from __future__ import annotations

import html
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from dire.runs import atomic_write_text

PACKAGES = (
    "dire",
    "torch",
    "torchvision",
    "numpy",
    "scikit-learn",
    "matplotlib",
    "vendi-score",
    "papermill",
    "ipykernel",
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; } td.num { text-align: right; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
.ok { color: #17692b; font-weight: bold; } .failed { color: #b00020; font-weight: bold; } .none { color: #888; }
.note { color: #555; font-size: 0.9em; } nav a { margin-right: 1em; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 1.2em; }
figure { margin: 0; } figure img { width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; } code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _inline(text: str) -> str:
    """Escape ``text``, keeping Markdown `code` spans and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


_NUMBER = re.compile(r"[-+]?\d[\d.,]*(e[-+]?\d+)?( ?± ?[\d.]+)?( ?%)?")


def _td(cell: str) -> str:
    """A body cell; numbers (``71.08 ± 4.13``) are right-aligned and kept on one line."""
    return f"<td class='num'>{_inline(cell)}</td>" if _NUMBER.fullmatch(cell) else f"<td>{_inline(cell)}</td>"


def markdown_to_html(text: str) -> str:
    """The Markdown the notebooks write as HTML: pipe tables (header, ``|---|`` separator, rows) become tables,
    other lines paragraphs. Nothing else of Markdown is needed for them."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        separator = i + 1 < len(lines) and re.fullmatch(r"\s*\|[\s:|-]+\|\s*", lines[i + 1])
        if line.lstrip().startswith("|") and separator:
            head = "".join(f"<th>{_inline(c)}</th>" for c in _cells(line))
            rows, i = [], i + 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append("<tr>" + "".join(_td(c) for c in _cells(lines[i])) + "</tr>")
                i += 1
            blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
            continue
        if line.strip():
            paragraph = [line.strip()]
            i += 1
            while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith("|"):
                paragraph.append(lines[i].strip())
                i += 1
            blocks.append(f"<p class='note'>{_inline(' '.join(paragraph))}</p>")
            continue
        i += 1
    return "\n".join(blocks)


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(*, profile: str, device: str, repo: Path) -> dict[str, str]:
    """What made the report: profile, git commit, device, Python, platform and the versions of :data:`PACKAGES`."""
    import torch

    commit = _git(repo, "rev-parse", "--short=12", "HEAD")
    if commit is None:
        commit = "not a git checkout"
    elif _git(repo, "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    if device.startswith("cuda") and torch.cuda.is_available():
        where = f"{device}: {torch.cuda.get_device_name(torch.device(device))}"
    else:
        where = f"{device}: {_cpu_name()}, {torch.get_num_threads()} torch threads"
    env = {
        "profile": profile,
        "git commit": commit,
        "device": where,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = "not installed"
    return env


def export_html(notebook: Path) -> Path | None:
    """``notebook`` exported to HTML beside it (readable in any browser, unlike .ipynb); None without nbconvert or
    when the export fails (the .ipynb link remains)."""
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        return None
    try:
        body, _ = HTMLExporter().from_filename(str(notebook))
    except Exception:  # a broken notebook still gets its .ipynb link
        return None
    return atomic_write_text(notebook.with_suffix(".html"), body)


def notebook_rows(names: Sequence[str], runs: dict, build: Path, timings: dict) -> str:
    """One table row per notebook of the profile: this run's status and time, or an earlier run's, or none."""
    rows = []
    for name in names:
        run, executed = runs.get(name), build / f"{name}.ipynb"
        if run is not None:
            status = "<span class='ok'>ok</span>" if run.ok else "<span class='failed'>FAILED</span>"
            seconds, error = f"{run.seconds:.1f} s", html.escape(run.error)
        elif executed.exists():
            status = "<span class='none'>earlier run</span>"
            seconds = f"{timings[name]['seconds']:.1f} s" if name in timings else ""
            error = ""
        else:
            rows.append(f"<tr><td>{html.escape(name)}</td><td class='none'>not run</td>" + "<td></td>" * 3 + "</tr>")
            continue
        links = []
        if executed.with_suffix(".html").exists():
            links.append(f"<a href='{html.escape(executed.with_suffix('.html').name)}'>HTML</a>")
        if executed.exists():
            links.append(f"<a href='{html.escape(executed.name)}'>.ipynb</a>")
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{status}</td><td>{seconds}</td><td>{' · '.join(links)}</td>"
            f"<td style='text-align:left'>{error}</td></tr>"
        )
    return (
        "<table><thead><tr><th>notebook</th><th>status</th><th>time</th><th>executed</th><th>error</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def write_page(
    *,
    path: Path,
    profile: str,
    notebooks: Sequence[str],
    runs: dict,
    timings: dict,
    figures: Path,
    env: dict[str, str],
) -> Path:
    """Write ``path`` (``build/<profile>/index.html``); ``figures`` is ``figures/<profile>/``, whose tables and
    figures are copied into ``<build>/figures/``."""
    build = path.parent
    copied = build / "figures"
    if copied.exists():  # a table or figure deleted from figures/ must not linger in the report
        shutil.rmtree(copied)
    copied.mkdir(parents=True)
    files = sorted(p for p in figures.glob("*") if p.is_file() and p.suffix in (".md", ".csv", ".json", ".png", ".pdf"))
    for f in files:
        shutil.copy2(f, copied / f.name)
    tables = [p for p in files if p.suffix == ".md"]
    images = [p for p in files if p.suffix == ".png"]

    parts = [
        f"<h1>dire · profile <code>{html.escape(profile)}</code></h1>",
        "<nav><a href='#notebooks'>notebooks</a><a href='#tables'>tables</a><a href='#figures'>figures</a>"
        "<a href='#environment'>environment</a></nav>",
        "<h2 id='notebooks'>Notebooks</h2>",
        notebook_rows(notebooks, runs, build, timings),
        "<h2 id='tables'>Tables</h2>",
    ]
    if not tables:
        parts.append(f"<p class='none'>No tables in {html.escape(str(figures))}.</p>")
    for md in tables:
        links = [f"<a href='figures/{html.escape(md.name)}'>Markdown</a>"]
        if md.with_suffix(".csv").exists():
            links.insert(0, f"<a href='figures/{html.escape(md.with_suffix('.csv').name)}'>CSV</a>")
        parts.append(
            f"<h3 id='{html.escape(md.stem)}'>{html.escape(md.stem)}</h3>"
            f"{markdown_to_html(md.read_text())}<p class='note'>{' · '.join(links)}</p>"
        )
    parts.append("<h2 id='figures'>Figures</h2><p class='note'>Click a figure for its full size.</p>")
    if not images:
        parts.append(f"<p class='none'>No figures in {html.escape(str(figures))}.</p>")
    cells = []
    for png in images:
        src, pdf = f"figures/{html.escape(png.name)}", png.with_suffix(".pdf")
        link = f" · <a href='figures/{html.escape(pdf.name)}'>PDF</a>" if pdf.exists() else ""
        cells.append(
            f"<figure id='{html.escape(png.stem)}'><a href='{src}'><img src='{src}' alt='{html.escape(png.stem)}'>"
            f"</a><figcaption>{html.escape(png.stem)}{link}</figcaption></figure>"
        )
    parts.append(f"<div class='figures'>{''.join(cells)}</div>")
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in env.items())
    parts += [
        "<h2 id='environment'>Environment</h2>",
        f"<table class='env'><tbody>{rows}</tbody></table>",
    ]
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>dire · {html.escape(profile)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    return atomic_write_text(path, page)
