"""The report page: Markdown tables become HTML tables; the page links only files inside its build folder, so a
moved copy still works; headless Chromium loads every figure of it; a screenshot goes to build/."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from dire.report.page import markdown_to_html
from dire.report.reproduce import REPO, NotebookRun, list_notebooks, write_index

FIGURES = REPO / "figures"


def test_markdown_tables_and_notes_become_html():
    md = (
        "| set | acc (%) | `code` |\n|---|---:|---|\n| a<b | 1.0 ± 0.1 | **x** |\n| c | 2 | y |\n"
        "\nMetrics in: teacher.\nSecond line.\n"
    )
    out = markdown_to_html(md)
    assert out.count("<table>") == 1 and out.count("<tr>") == 3
    assert "<th><code>code</code></th>" in out and "<td>a&lt;b</td>" in out and "<td><b>x</b></td>" in out
    assert "<td class='num'>1.0 ± 0.1</td>" in out and "<td class='num'>2</td>" in out
    assert "<p class='note'>Metrics in: teacher. Second line.</p>" in out
    assert "<table>" not in markdown_to_html("| not | a table |\nno separator line\n")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images, self.tables = [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a" and not attrs.get("href", "#").startswith("#"):
            self.links.append(attrs["href"])
        self.tables += tag == "table"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def _report(tmp_path: Path) -> Path:
    """The quick profile's committed tables and figures with two notebook runs (one failed) in a build folder."""
    build = tmp_path / "build" / "quick"
    build.mkdir(parents=True)
    runs = []
    for name, ok in (("00_quickstart", True), ("02_ablation", False)):
        nb = new_notebook(cells=[new_code_cell("print(1)", outputs=[], execution_count=1)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, build / f"{name}.ipynb")
        runs.append(NotebookRun(name, ok, 12.5, build / f"{name}.ipynb", "" if ok else "cell 3: RuntimeError: boom"))
    write_index(runs, profile="quick", figures=FIGURES, path=build / "index.html", notebooks=list_notebooks())
    return build


def test_index_is_self_contained_with_tables_status_and_environment(tmp_path):
    build = _report(tmp_path)
    page = (build / "index.html").read_text()
    parsed = _Links()
    parsed.feed(page)
    # a Markdown table has one header rule (03's file holds two tables: accuracy and diversity)
    lines = [line for md in (FIGURES / "quick").glob("*.md") for line in md.read_text().splitlines()]
    tables = sum(bool(re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip())) for line in lines)
    pngs = sorted((FIGURES / "quick").glob("*.png"))
    assert len(parsed.images) == len(pngs) and parsed.tables == tables + 2  # + notebooks, environment
    for target in parsed.links + parsed.images:  # relative, and inside the folder
        assert not re.match(r"^[a-z]+:|^/", target) and ".." not in target, target
        assert (build / target).is_file(), target
    assert "FAILED" in page and "cell 3: RuntimeError: boom" in page and "12.5 s" in page
    assert "07_explore</td><td class='none'>not run" in page
    assert "<th>accuracy (%)</th>" in page  # the ablation's Markdown table, as HTML
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    if commit.returncode == 0:
        assert commit.stdout.strip() in page
    assert f"<td>torch</td><td>{metadata.version('torch')}</td>" in page and "<td>profile</td><td>quick</td>" in page


def test_index_renders_in_headless_chromium_with_every_figure_loaded(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (apt-get install chromium; .ci/run installs it as root)")
    build = _report(tmp_path)
    moved = shutil.move(build, tmp_path / "served")  # as if unzipped elsewhere: relative links must still hold
    probe = Path(moved) / "probe.html"
    probe.write_text(
        (Path(moved) / "index.html")
        .read_text()
        .replace(
            "</body>",
            "<script>window.addEventListener('load', () => document.body.setAttribute('data-images', JSON.stringify("
            "Array.from(document.images, i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]))));"
            "</script></body>",
        )
    )
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000"]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    found = re.search(r"data-images=\"([^\"]*)\"", dom)
    assert found, f"the page did not finish loading in Chromium; DOM starts {dom[:300]!r}"
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(images) == len(list((FIGURES / "quick").glob("*.png")))
    assert [src for src, loaded in images if not loaded] == []
    shot = REPO / "build" / "report-screenshot.png"
    shot.parent.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    subprocess.run(
        [browser, *flags, "--window-size=1200,4200", f"--screenshot={shot}", (Path(moved) / "index.html").as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000, "Chromium wrote no screenshot"
