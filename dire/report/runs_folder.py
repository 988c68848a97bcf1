"""``dire runs``: what a runs/ folder holds, whether every artifact in it loads, removing what is unfinished,
and carrying finished work to another machine (:func:`pack` there, :func:`unpack` here).

A run folder ``<root>/<stage>/<hash>/`` is *complete* when the file its stage writes last is there
(:data:`FINISHED`); otherwise it is *incomplete*: a run that was killed, or one in progress in another
process (its lock is held; :func:`clean` leaves those alone).
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import Timeout

from dire.runs import FORMAT, CacheError, atomic_write, hash_text, load, lock, read_json

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
        for folder in sorted(p for p in stage_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
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
    removed = sorted(Path(root).glob(f"*/.*{UNPACKING}"))  # an unpack that was cut (see :func:`unpack`)
    if not dry_run:
        for folder in removed:
            shutil.rmtree(folder)
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


def _check_stages(stages) -> list[str]:
    stages = sorted(FINISHED) if stages is None else list(stages)
    if unknown := sorted(set(stages) - set(FINISHED)):
        raise ValueError(f"unknown stage(s) {unknown}; expected some of {sorted(FINISHED)}")
    return stages


def _carried(folder: Path) -> list[Path]:
    """A folder's files worth carrying: not its locks, nor temporary files, nor hidden ones."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix != ".lock")


def pack(root: str | Path, archive: str | Path, *, stages=None) -> list[RunFolder]:
    """Write the complete run folders of ``stages`` (default: every stage) under ``root`` to the gzipped tar
    ``archive`` (atomically), to resume their run on another machine with :func:`unpack`; returns the folders.

    Incomplete folders, locks and temporary files stay behind. Members are sorted, with zeroed times and owners,
    so the same folders always pack to the same bytes."""
    stages = _check_stages(stages)
    runs = [r for r in scan(root) if r.complete and r.stage in stages]

    def write(out) -> None:  # streamed into atomic_write's temporary file, not held in memory
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as zipped, tarfile.open(fileobj=zipped, mode="w") as tar:
            for run in runs:
                for path in _carried(run.path):
                    info = tarfile.TarInfo(f"{run.stage}/{run.path.name}/{path.name}")
                    info.size, info.mode = path.stat().st_size, 0o644
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)

    atomic_write(archive, write)
    return runs


UNPACKING = ".unpack.tmp"  # suffix of a folder being unpacked beside its place (hidden: a leading dot)
_MEMBER = re.compile(r"^(?P<stage>[a-z_]+)/(?P<name>[0-9a-f]{12})/(?P<file>[A-Za-z0-9_][A-Za-z0-9_.-]*)$")


def unpack(archive: str | Path, root: str | Path) -> tuple[list[Path], list[Path]]:
    """Add the run folders packed in ``archive`` (:func:`pack`) to ``root``; returns ``(added, kept)``.

    A folder ``root`` already holds complete, or that a process is working in, is kept as it is. Each folder is
    written beside its place and renamed into it once its config hashes to its name and its last file is there,
    so a cut unpack leaves no half folder (only a hidden leftover that `dire runs clean` removes). A member that
    is not ``<stage>/<12-hex hash>/<file>`` of a known stage is refused before anything is written."""
    folders: dict[tuple[str, str], dict[str, bytes]] = {}
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                match = _MEMBER.match(member.name)
                if not member.isfile() or match is None or match["stage"] not in FINISHED:
                    raise CacheError(
                        f"{archive}: member {member.name!r} is not <stage>/<12-hex hash>/<file> of a stage in "
                        f"{sorted(FINISHED)}; make the archive with `dire runs pack`"
                    )
                files = folders.setdefault((match["stage"], match["name"]), {})
                files[match["file"]] = tar.extractfile(member).read()
    except FileNotFoundError:
        raise  # a wrong path is not a damaged archive: its own message says which file is missing
    except (tarfile.TarError, EOFError, OSError) as err:
        raise CacheError(f"{archive}: not a whole .tar.gz ({err}); make it again with `dire runs pack`") from err
    for (stage, name), files in folders.items():  # every folder checked before any is written
        try:
            fits = hash_text(json.loads(files["config.json"])) == name
        except (KeyError, ValueError):
            fits = False
        if not fits:
            raise CacheError(f"{archive}: {stage}/{name}'s config.json is missing or does not hash to its name")
    kept, staged = [], []  # every folder is staged and checked before any is renamed into place
    for (stage, name), files in sorted(folders.items()):
        dest = Path(root) / stage / name
        if dest.exists() and (FINISHED[stage](dest) or _busy(dest)):
            kept.append(dest)
            continue
        staging = dest.parent / f".{name}{UNPACKING}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        staged.append((staging, dest))
        for file, data in files.items():
            (staging / file).write_bytes(data)
        if not FINISHED[stage](staging):
            for folder, _ in staged:
                shutil.rmtree(folder)
            raise CacheError(f"{archive}: {stage}/{name} is incomplete (its stage's last file is missing)")
    for staging, dest in staged:
        if dest.exists():  # an incomplete folder no process works in: the packed one replaces it
            shutil.rmtree(dest)
        staging.rename(dest)
    return [dest for _, dest in staged], kept
