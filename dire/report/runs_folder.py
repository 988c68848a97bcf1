"""``dire runs``: what a runs/ folder holds, whether every artifact in it loads, and removing what is unfinished.

A run folder ``<root>/<stage>/<hash>/`` is *complete* when the file its stage writes last is there
(:data:`FINISHED`); otherwise it is *incomplete*: a run that was killed, or one in progress in another
process (its lock is held; :func:`clean` leaves those alone).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import Timeout

from dire.runs import FORMAT, CacheError, hash_text, load, lock, read_json

# stage -> whether a folder is finished (the stage's last write is there)
FINISHED: dict[str, Callable[[Path], bool]] = {
    "teacher": lambda f: (f / "metrics.json").exists(),
    "bank": lambda f: (f / "bank.pt").exists(),
    "experts": lambda f: any(f.glob("expert_[0-9][0-9][0-9][0-9].pt")) and not any(f.glob("*.partial.pt")),
    "precomputed": lambda f: True,  # a cache of per-teacher statistics: each file is written whole
    "synthetic": lambda f: (f / "synthetic.pt").exists(),
    "student": lambda f: (f / "result.json").exists(),
    "student_dc": lambda f: (f / "result.json").exists(),
    "experiment": lambda f: (f / "result.json").exists(),
}
_HASH = re.compile(r"^[0-9a-f]{12}$")
_REFERENCES = ("teacher", "bank", "synthetic")  # config keys that name another run folder by its hash


@dataclass
class RunFolder:
    stage: str
    path: Path
    complete: bool
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def scan(root: str | Path) -> list[RunFolder]:
    """Every run folder under ``root``, in stage then name order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no runs folder here; pass --runs-root (default: runs)")
    out = []
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
            finished = FINISHED.get(stage_dir.name, lambda f: False)
            out.append(RunFolder(stage_dir.name, folder, finished(folder), _size(folder)))
    return out


def _busy(folder: Path) -> bool:
    """Whether another process holds the folder's lock (it is working there)."""
    held = lock(folder)
    try:
        held.acquire(blocking=False)
    except Timeout:
        return True
    held.release()
    return False


def verify(root: str | Path) -> list[RunFolder]:
    """:func:`scan`, with ``problems`` filled: config.json missing, unreadable or not hashing to the folder's
    name; an artifact that does not load; a reference to a run folder that is not there; a leftover temporary
    file; an unknown stage."""
    runs = scan(root)
    present = {r.path.name for r in runs}
    for run in runs:
        if run.stage not in FINISHED:
            run.problems.append(f"unknown stage {run.stage!r} (expected one of {sorted(FINISHED)})")
        config_file = run.path / "config.json"
        if not config_file.exists():
            run.problems.append("no config.json: not made by dire, or its first write was cut")
        else:
            try:
                saved = read_json(config_file)
            except CacheError as err:
                run.problems.append(str(err))
                saved = None
            if saved is not None and hash_text(saved) != run.path.name:
                run.problems.append(f"config.json does not hash to the folder's name (artifact format {FORMAT})")
            for key in _REFERENCES:
                ref = saved.get(key) if isinstance(saved, dict) else None
                if isinstance(ref, str) and _HASH.match(ref) and ref not in present:
                    run.problems.append(f"orphan: its {key} {ref} is not in this runs folder")
        for path in sorted(run.path.iterdir()):
            if path.name.endswith(".tmp"):
                run.problems.append(f"leftover temporary file {path.name} (a write was cut; `dire runs clean`)")
            elif path.suffix == ".pt":
                try:
                    load(path)
                except CacheError as err:
                    run.problems.append(str(err))
            elif path.suffix == ".json" and path.name != "config.json":
                try:
                    read_json(path)
                except CacheError as err:
                    run.problems.append(str(err))
    return runs


def clean(root: str | Path, *, dry_run: bool = False) -> list[Path]:
    """Remove incomplete run folders that no process is working in, and leftover temporary files in the
    others; returns what was (or, with ``dry_run``, would be) removed. Complete folders are never touched."""
    removed = []
    for run in scan(root):
        if not run.complete and run.stage in FINISHED and not _busy(run.path):
            removed.append(run.path)
            if not dry_run:
                shutil.rmtree(run.path)
            continue
        for tmp in run.path.glob(".*.tmp"):
            removed.append(tmp)
            if not dry_run:
                tmp.unlink(missing_ok=True)
    return removed


def describe(run: RunFolder) -> str:
    """One line: stage, folder, state, size, and what the config says (teacher arch, method, seed...)."""
    summary = ""
    config_file = run.path / "config.json"
    if config_file.exists():
        try:
            config = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            config = {}
        keys = ("dataset", "arch", "method", "seed", "per_class")
        summary = " ".join(f"{k}={config[k]}" for k in keys if isinstance(config, dict) and k in config)
    state = "complete" if run.complete else "incomplete"
    return f"{run.stage:<11} {run.path.name}  {state:<10} {run.bytes / 2**20:8.1f} MiB  {summary}".rstrip()
