"""Run folders named by a hash of their config, atomic writes, resumable artifacts.

Every cached artifact (teacher, embedding bank, synthetic set, evaluation) lives in
``<root>/<stage>/<hash>/`` with the config that made it saved beside it as
``config.json``; the same config therefore finds the same folder again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

DEFAULT_ROOT = Path(os.environ.get("DIRE_RUNS", "runs"))


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


def config_hash(config: Any, length: int = 12) -> str:
    """Stable hex digest of a JSON-able config (dicts, dataclasses, lists, scalars)."""
    text = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_dir(stage: str, config: Any, *, root: str | Path | None = None) -> Path:
    """Folder for one artifact of ``stage`` made by ``config``; writes config.json once."""
    path = Path(root if root is not None else DEFAULT_ROOT) / stage / config_hash(config)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "config.json").exists():
        atomic_write_text(path / "config.json", json.dumps(_jsonable(config), indent=2, sort_keys=True))
    return path


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def atomic_write_text(path: str | Path, text: str) -> Path:
    return _atomic(Path(path), lambda handle: handle.write(text.encode()))


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint written by :func:`atomic_save` (tensors and plain containers only)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)
