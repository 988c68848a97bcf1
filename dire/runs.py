"""Run folders named by a hash of their config, atomic writes, locks, and cache files that explain themselves.

Every cached artifact (teacher, embedding bank, synthetic set, evaluation) lives in
``<root>/<stage>/<hash>/`` with the config that made it saved beside it as
``config.json``; the same config therefore finds the same folder again, and a folder whose
``config.json`` disagrees with the config that hashed to it is refused.

Sharing: files are written to a temporary name and renamed (readers see the old file or the
new one, never half of one) with the permissions the umask allows, and :func:`lock` (the
``filelock`` package) serialises the processes that work in one folder, so a config shared by
two processes, users or notebooks is computed once. A file that cannot be read raises
:class:`CacheError`, one line naming the file and how to recover.

Device: keys leave out the device on purpose. A teacher, bank or synthetic set is the same artifact
whichever device made it (up to floating-point rounding), so one made on the CPU serves a GPU run and
the other way round; ``--deterministic`` makes reruns on one device match bit for bit. bf16 rounds far
more than devices differ, so a stage run in bf16 records ``"precision": "bf16"`` in its key
(:func:`dire.nets.speed.precision_key`), and an experiment's default precision "auto" is bf16 on CUDA, so a
default GPU run shares a CPU run's artifacts only with ``precision="fp32"``.

Format: :data:`FORMAT` is the layout version of the artifacts. It enters every key once it is
above 1, so a ``runs/`` written by code of another format is never reused silently; format 1 is
the layout every run folder has had so far, so its keys are the keys they already have.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from filelock import FileLock, Timeout

T = TypeVar("T")
DEFAULT_ROOT = Path(os.environ.get("DIRE_RUNS", "runs"))
FORMAT = 1  # bump when the layout of a cached artifact changes (see the module docstring)
RECOVER = "delete it (or run `dire runs clean`) and rerun to rebuild it"


class CacheError(ValueError):
    """A cached file that cannot be used: truncated, empty, garbage, or not the config its folder claims."""


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    default_factory: Any = dataclasses.MISSING,
    added: bool = False,
) -> Any:
    """A config dataclass field with its ``help`` text (shown by the CLI and the notebooks' parameter checks).

    ``added=True`` marks a field added after run folders already existed: it is left out of configs (and so of
    their hashes) while it holds its default (``default``, or ``default_factory()`` for a dict or list), so
    adding it keeps every cached run valid."""
    metadata = {"help": help, **({"omit_default": True} if added else {})}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def added_field(
    default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING
) -> Any:
    """:func:`setting` with ``added=True``."""
    return setting(default, help, default_factory=default_factory, added=True)


def field_help(cls: type, name: str) -> str:
    """The ``help`` text of dataclass ``cls``'s field ``name`` ("" when it has none)."""
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


def _field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not (f.metadata.get("omit_default") and getattr(value, f.name) == _field_default(f))
        }
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_dict(config: Any) -> Any:
    """``config`` as plain JSON-able data (dataclasses become dicts without their :func:`added_field` defaults)."""
    return _jsonable(config)


def _keyed(config: Any) -> Any:
    """The config as it is hashed and saved: with the artifact format once that is above 1."""
    data = _jsonable(config)
    return data if FORMAT == 1 else {"format": FORMAT, "config": data}


def hash_text(data: Any, length: int = 12) -> str:
    """The hex digest of JSON data as a run folder's name is made (``config.json`` holds exactly that data)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def config_hash(config: Any, length: int = 12) -> str:
    """Stable hex digest of a JSON-able config (dicts, dataclasses, lists, scalars) and the artifact format."""
    return hash_text(_keyed(config), length)


def run_dir(stage: str, config: Any, *, root: str | Path | None = None) -> Path:
    """Folder for one artifact of ``stage`` made by ``config``; writes config.json once, and refuses a folder
    whose config.json holds another config."""
    path = Path(root if root is not None else DEFAULT_ROOT) / stage / config_hash(config)
    path.mkdir(parents=True, exist_ok=True)
    expected = json.dumps(_keyed(config), indent=2, sort_keys=True)
    saved = path / "config.json"
    if not saved.exists():
        atomic_write_text(saved, expected)
    elif read_json(saved) != json.loads(expected):
        raise CacheError(
            f"{saved}: holds another config than the one that hashes to this folder (written by other code, or "
            f"edited); move the folder away and rerun to rebuild it"
        )
    return path


def lock(folder: str | Path, name: str = "") -> FileLock:
    """An inter-process lock on ``folder`` (or on one item of it, ``name``): ``with lock(f): ...`` waits for any
    other process holding it; ``lock(f).acquire(blocking=False)`` tries once (see ``filelock.Timeout``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / f"{name or ''}.lock"), mode=0o666 & ~_umask())


def claim(items: Iterable[T], lock_of: Callable[[T], FileLock], is_done: Callable[[T], bool]) -> Iterator[T]:
    """Yield each item that is not done, holding its lock while the caller works on it (the body of the
    ``for`` loop). Items locked by another process are taken last, after waiting for that process, and skipped
    if it finished them: processes sharing a list of items split it, and each item is done once."""
    busy = []
    for item in items:
        if is_done(item):
            continue
        item_lock = lock_of(item)
        try:
            item_lock.acquire(blocking=False)
        except Timeout:
            busy.append(item)
            continue
        try:
            if not is_done(item):
                yield item
        finally:
            item_lock.release()
    for item in busy:
        with lock_of(item):
            if not is_done(item):
                yield item


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; a shared runs/ needs the umask's permissions
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename."""
    return _atomic(Path(path), lambda handle: torch.save(obj, handle))


def atomic_write(path: str | Path, write) -> Path:
    """``write(handle)`` (a binary file) into a temporary file beside ``path``, then rename: readers see the old
    file or the new one, never half of it; the file follows the umask."""
    return _atomic(Path(path), write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic(Path(path), lambda handle: handle.write(text.encode()))


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True))


def rng_state() -> dict:
    """The global RNG states (CPU, and CUDA when it is in use), for a checkpoint."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def read_json(path: str | Path) -> Any:
    """A JSON file this project wrote; an unreadable one raises :class:`CacheError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CacheError(f"{path}: not valid JSON ({err}); {RECOVER}") from None


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint written by :func:`atomic_save` (tensors and plain containers only); a truncated, empty
    or garbage file raises :class:`CacheError` naming it."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch reports a bad file as RuntimeError, EOFError, UnpicklingError, ...
        if path.stat().st_size == 0:
            reason = "empty file"
        elif isinstance(err, pickle.UnpicklingError):
            reason = "not a checkpoint this project wrote: garbage, or another format"
        else:
            reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        raise CacheError(f"{path}: unreadable ({reason}); {RECOVER}") from None
