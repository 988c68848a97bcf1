"""RESULTS.md's tables are the files under figures/: the committed copy is up to date, a render replaces only
the marked blocks, a missing file is a clear error, and ``dire results --check`` fails on a stale copy."""

from pathlib import Path

import pytest

from dire.cli import main
from dire.report.results import render_results, stale_tables, write_results

REPO = Path(__file__).resolve().parents[1]

TEMPLATE = """# Results

Prose before, with a number: 71.08.

<!-- table: quick/01_main_results.md -->
| old | table |
|---|---|
<!-- end table -->

Prose between.

<!-- table: quick/extra/other.md -->
<!-- end table -->

Prose after.
"""


@pytest.fixture
def figures(tmp_path):
    root = tmp_path / "figures"
    (root / "quick" / "extra").mkdir(parents=True)
    (root / "quick" / "01_main_results.md").write_text("| method | accuracy |\n|---|---|\n| sre2l | 71.08 |\n")
    (root / "quick" / "extra" / "other.md").write_text("| a |\n|---|\n| 1 |\n\n")  # trailing blank line dropped
    return root


def test_committed_results_match_the_figures():
    text = (REPO / "RESULTS.md").read_text()
    assert "<!-- table: quick/01_main_results.md -->" in text
    assert render_results(text, REPO / "figures") == text, "RESULTS.md is out of date: run `dire results`"


def test_render_replaces_block_bodies_and_keeps_prose(figures):
    out = render_results(TEMPLATE, figures)
    assert out == TEMPLATE.replace(
        "| old | table |\n|---|---|\n", "| method | accuracy |\n|---|---|\n| sre2l | 71.08 |\n"
    ).replace("<!-- table: quick/extra/other.md -->\n", "<!-- table: quick/extra/other.md -->\n| a |\n|---|\n| 1 |\n")
    assert render_results(out, figures) == out  # rendering is idempotent
    assert stale_tables(TEMPLATE, figures) == ["quick/01_main_results.md", "quick/extra/other.md"]
    assert stale_tables(out, figures) == []


def test_included_headings_nest_under_the_section(tmp_path):
    (tmp_path / "bench.md").write_text("# title\n\n### part\n| x |\n")
    text = "## Section\n<!-- table: bench.md -->\n<!-- end table -->\n"
    assert (
        render_results(text, tmp_path) == "## Section\n<!-- table: bench.md -->\n### title\n\n##### part\n| x |\n"
        "<!-- end table -->\n"
    )


def test_a_text_file_is_included_as_a_fenced_block(tmp_path):
    (tmp_path / "out.txt").write_text("$ python bench.py\nspeed-up x7.8\n")
    text = "<!-- table: out.txt -->\n<!-- end table -->\n"
    assert render_results(text, tmp_path) == (
        "<!-- table: out.txt -->\n```text\n$ python bench.py\nspeed-up x7.8\n```\n<!-- end table -->\n"
    )


def test_missing_file_names_it_and_the_command(figures):
    (figures / "quick" / "01_main_results.md").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"quick/01_main_results\.md.*"
        r"dire reproduce --profile quick --only 01_main_results",
    ):
        render_results(TEMPLATE, figures)
    text = "<!-- table: ../benchmarks/results/edm_coreset-x.md -->\n<!-- end table -->\n"
    with pytest.raises(FileNotFoundError, match=r"python benchmarks/edm_coreset\.py"):
        render_results(text, figures)


def test_unclosed_block_is_an_error(figures):
    with pytest.raises(ValueError, match="end table"):
        render_results("<!-- table: quick/01_main_results.md -->\n| x |\n", figures)


def test_write_results_is_atomic_and_reports_change(figures, tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(TEMPLATE)
    assert write_results(path, figures) is True
    assert "| sre2l | 71.08 |" in path.read_text() and "Prose between." in path.read_text()
    assert write_results(path, figures) is False
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_cli_check_fails_on_a_stale_copy_and_write_fixes_it(figures, tmp_path, capsys):
    path = tmp_path / "RESULTS.md"
    path.write_text(TEMPLATE)
    argv = ["results", "--path", str(path), "--figures", str(figures)]
    assert main(argv + ["--check"]) == 1
    err = capsys.readouterr().err
    assert "out of date" in err and "quick/01_main_results.md" in err
    assert path.read_text() == TEMPLATE  # --check writes nothing
    assert main(argv) == 0
    assert main(argv + ["--check"]) == 0
