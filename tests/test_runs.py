"""Config hashing, run folders, atomic writes."""

import hashlib
import json
from dataclasses import dataclass

import pytest
import torch

from dire.runs import atomic_save, atomic_write_text, config_hash, load, read_json, run_dir


@dataclass
class Cfg:
    lr: float = 0.1
    ipc: int = 10


def test_hash_is_stable_and_sensitive():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})  # key order does not matter
    assert config_hash(Cfg()) == config_hash({"lr": 0.1, "ipc": 10})
    assert config_hash(Cfg(lr=0.2)) != config_hash(Cfg())
    assert len(config_hash(Cfg())) == 12


def test_run_dir_saves_config(tmp_path):
    d = run_dir("teacher", Cfg(), root=tmp_path)
    assert d.parent.name == "teacher" and read_json(d / "config.json") == {"ipc": 10, "lr": 0.1}
    assert run_dir("teacher", Cfg(), root=tmp_path) == d


def test_atomic_save_roundtrip_and_no_partial_file(tmp_path):
    path = tmp_path / "x.pt"
    atomic_save({"t": torch.arange(3)}, path)
    assert torch.equal(load(path)["t"], torch.arange(3))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"bad": Unpicklable()}, path)
    assert torch.equal(load(path)["t"], torch.arange(3))  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]  # no temporary left behind
    atomic_write_text(tmp_path / "a.txt", "hi")
    assert (tmp_path / "a.txt").read_text() == "hi"


def test_format_version_enters_keys_once_it_changes(tmp_path, monkeypatch):
    import dire.runs as runs

    config = {"stage": "teacher", "seed": 0}
    legacy = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert runs.config_hash(config) == legacy  # format 1: the keys every cached run already has
    old = runs.run_dir("teacher", config, root=tmp_path)
    monkeypatch.setattr(runs, "FORMAT", 2)
    new = runs.run_dir("teacher", config, root=tmp_path)
    assert new != old and json.loads((new / "config.json").read_text())["format"] == 2


def test_cached_student_results_are_checked_against_the_set_they_were_trained_on(tmp_path):
    from dire.evaluation.common import per_seed, synthetic_digest

    calls = []

    def train(seed, checkpoint):
        calls.append(seed)
        return {"final": float(seed), "best": float(seed)}

    a = {"images": torch.zeros(2, 1, 2, 2, dtype=torch.uint8), "labels": torch.tensor([0, 1])}
    b = {"images": torch.ones(2, 1, 2, 2, dtype=torch.uint8), "labels": torch.tensor([0, 1])}
    assert synthetic_digest(a) != synthetic_digest(b)
    kwargs = dict(stage="student", config={"synthetic": "same-folder-name"}, runs_root=tmp_path)
    per_seed([0, 1], train, digest=synthetic_digest(a), **kwargs)
    per_seed([0, 1], train, digest=synthetic_digest(a), **kwargs)  # cached
    assert calls == [0, 1]
    per_seed([0, 1], train, digest=synthetic_digest(b), **kwargs)  # same key, other pixels: trained again
    assert calls == [0, 1, 0, 1]
