"""RESULTS.md's tables, copied from the files that the experiments write.

In RESULTS.md every table sits between two marker comments, with a path relative to ``figures/``::

    <!-- table: quick/01_main_results.md -->
    | method | dataset | ...            (the current text of figures/quick/01_main_results.md)
    <!-- end table -->

:func:`render_results` replaces the body of every block with the current text of its file and leaves
everything outside the blocks as it is; :func:`write_results` writes the result back (``dire results``), and
:func:`stale_tables` names the blocks that differ from their files (``dire results --check``). A saved
benchmark output is included the same way, by a path that leaves ``figures/``
(``../benchmarks/results/<script>-....md``). Markdown headings of an included file move down two levels so
they nest under RESULTS.md's ``##`` sections (the figures tables have none), and a file that is not Markdown
(a saved console output) is included as a fenced text block.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from dire.runs import atomic_write_text

BLOCK = re.compile(r"(?P<open><!-- table: (?P<path>\S+) -->\n)(?P<body>.*?)(?P<close><!-- end table -->)", re.S)
_OPEN = re.compile(r"<!-- table: ")
_HEADING = re.compile(r"^(#{1,4}) ", re.M)
PROFILES = ("smoke", "quick", "paper")


def _command(path: str) -> str:
    """The command that writes ``figures/<path>``, for the error message of a missing file."""
    parts = PurePosixPath(path).parts
    if parts[:2] == ("..", "benchmarks") and len(parts) == 4:
        script = PurePosixPath(parts[3].split("-")[0]).stem
        return f"python benchmarks/{script}.py > benchmarks/{'/'.join(parts[2:])}"
    if len(parts) == 2 and parts[0] in PROFILES and re.match(r"\d\d_", parts[1]):
        from dire.report.reproduce import list_notebooks

        prefix = parts[1][:3]
        notebooks = [n for n in list_notebooks() if n.startswith(prefix)]
        only = f" --only {notebooks[0]}" if notebooks else ""
        return f"dire reproduce --profile {parts[0]}{only}"
    return "the command RESULTS.md gives above this table"


def _included(path: str, figures_root: Path) -> str:
    source = figures_root / path
    if not source.is_file():
        raise FileNotFoundError(
            f"{source}: missing, and RESULTS.md includes it (<!-- table: {path} -->); it is made by `{_command(path)}`"
        )
    text = source.read_text().rstrip("\n") + "\n"
    if source.suffix != ".md":
        return f"```text\n{text}```\n"
    return _HEADING.sub(lambda m: "##" + m.group(1) + " ", text)


def _blocks(text: str) -> list[re.Match]:
    blocks = list(BLOCK.finditer(text))
    if len(blocks) != len(_OPEN.findall(text)) or text.count("<!-- end table -->") != len(blocks):
        raise ValueError("RESULTS.md: every '<!-- table: PATH -->' line needs its own '<!-- end table -->' after it")
    return blocks


def render_results(text: str, figures_root: str | Path = "figures") -> str:
    """``text`` with the body of every table block replaced by the current text of ``figures_root/<path>``."""
    figures_root = Path(figures_root)
    out, end = [], 0
    for block in _blocks(text):
        out += [text[end : block.start("body")], _included(block["path"], figures_root)]
        end = block.start("close")
    return "".join(out) + text[end:]


def stale_tables(text: str, figures_root: str | Path = "figures") -> list[str]:
    """The paths of the blocks whose body differs from their file (empty when RESULTS.md is up to date)."""
    return [b["path"] for b in _blocks(text) if b["body"] != _included(b["path"], Path(figures_root))]


def write_results(path: str | Path = "RESULTS.md", figures_root: str | Path = "figures") -> bool:
    """Refill RESULTS.md's tables from ``figures_root`` (atomic write); True when anything changed."""
    path = Path(path)
    text = path.read_text()
    rendered = render_results(text, figures_root)
    if rendered == text:
        return False
    atomic_write_text(path, rendered)
    return True
