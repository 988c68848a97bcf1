"""`dire runs pack` / `unpack`: a run's finished folders carried to another machine, byte for byte, and nothing
else; a bad archive is refused before anything is written."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch

from dire.cli import main
from dire.report import runs_folder
from dire.runs import CacheError, atomic_save, lock, run_dir, write_json


def _runs(root):
    """A runs folder of real configs: a complete teacher and student, an unfinished student, locks."""
    teacher = run_dir("teacher", {"arch": "convnet", "seed": 0}, root=root)
    atomic_save({"w": torch.arange(6.0)}, teacher / "model.pt")
    write_json(teacher / "metrics.json", {"test_acc": 90.0})
    student = run_dir("student", {"teacher": teacher.name, "seed": 1}, root=root)
    write_json(student / "result.json", {"acc": 80.0})
    unfinished = run_dir("student", {"teacher": teacher.name, "seed": 2}, root=root)
    atomic_save({"epoch": 3}, unfinished / "checkpoint.pt")
    with lock(student):  # leaves student/.lock behind, as a real run does
        pass
    return teacher, student, unfinished


def _members(archive) -> list[str]:
    with tarfile.open(archive, "r:gz") as tar:
        return tar.getnames()


def test_pack_carries_complete_folders_only_and_unpack_restores_them_byte_for_byte(tmp_path):
    teacher, student, unfinished = _runs(tmp_path / "here")
    archive = tmp_path / "carry.tar.gz"
    packed = runs_folder.pack(tmp_path / "here", archive)
    assert sorted(r.path for r in packed) == sorted([teacher, student])
    expected = [f"student/{student.name}/config.json", f"student/{student.name}/result.json"] + [
        f"teacher/{teacher.name}/{f}" for f in ("config.json", "metrics.json", "model.pt")
    ]
    assert _members(archive) == expected  # no lock, no unfinished folder, sorted
    first = archive.read_bytes()
    runs_folder.pack(tmp_path / "here", archive)
    assert archive.read_bytes() == first  # the same folders pack to the same bytes

    there = tmp_path / "there"
    added, kept = runs_folder.unpack(archive, there)
    assert (len(added), kept) == (2, [])
    for folder in (teacher, student):
        copy = there / folder.parent.name / folder.name
        for path in runs_folder._carried(folder):
            assert (copy / path.name).read_bytes() == path.read_bytes()
    assert [r.problems for r in runs_folder.verify(there)] == [[], []]
    assert not list(there.rglob("*.tmp"))


def test_only_the_named_stages_are_packed(tmp_path):
    teacher, _, _ = _runs(tmp_path / "here")
    runs_folder.pack(tmp_path / "here", tmp_path / "t.tar.gz", stages=["teacher"])
    assert {name.split("/")[1] for name in _members(tmp_path / "t.tar.gz")} == {teacher.name}
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['teachers'\]; expected some of"):
        runs_folder.pack(tmp_path / "here", tmp_path / "x.tar.gz", stages=["teachers"])
    assert not (tmp_path / "x.tar.gz").exists()


def test_unpack_keeps_complete_folders_here_and_replaces_unfinished_ones(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    _, student, unfinished = _runs(here)
    _runs(there)  # the same configs: the same folder names
    (unfinished / "checkpoint.pt").unlink()  # finished here (a finished run drops its checkpoint), not there
    write_json(unfinished / "result.json", {"acc": 70.0})
    write_json(there / "student" / student.name / "result.json", {"acc": 99.0})  # a local result differs
    runs_folder.pack(here, tmp_path / "carry.tar.gz", stages=["student"])
    added, kept = runs_folder.unpack(tmp_path / "carry.tar.gz", there)
    assert added == [there / "student" / unfinished.name] and kept == [there / "student" / student.name]
    assert json.loads((there / "student" / student.name / "result.json").read_text()) == {"acc": 99.0}
    replaced = there / "student" / unfinished.name
    assert json.loads((replaced / "result.json").read_text()) == {"acc": 70.0}
    assert not (replaced / "checkpoint.pt").exists()  # the packed folder replaces the unfinished one whole


def _archive(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name", ["../evil/abcdef012345/x.json", "teacher/notahash/x.json", "cache/abcdef012345/x"])
def test_a_member_outside_the_layout_is_refused_before_anything_is_written(tmp_path, name):
    archive = _archive(tmp_path / "bad.tar.gz", {"teacher/abcdef012345/config.json": b"{}", name: b"x"})
    with pytest.raises(CacheError, match="is not <stage>/<12-hex hash>/<file>.*`dire runs pack`"):
        runs_folder.unpack(archive, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_folder_whose_config_does_not_hash_to_its_name_is_refused(tmp_path):
    archive = _archive(
        tmp_path / "bad.tar.gz",
        {"student/abcdef012345/config.json": b'{"seed": 1}', "student/abcdef012345/result.json": b"{}"},
    )
    with pytest.raises(CacheError, match="does not hash to its name"):
        runs_folder.unpack(archive, tmp_path / "runs")
    assert not (tmp_path / "runs" / "student" / "abcdef012345").exists()


def test_cli_pack_and_unpack(tmp_path, capsys):
    _runs(tmp_path / "here")
    archive = str(tmp_path / "carry.tar.gz")
    assert main(["runs", "pack", "--runs-root", str(tmp_path / "here"), "--archive", archive]) == 0
    assert main(["runs", "unpack", "--runs-root", str(tmp_path / "there"), "--archive", archive]) == 0
    out = capsys.readouterr().out
    assert "packed 2 complete run folder(s)" in out and "added 2 run folder(s)" in out
    with pytest.raises(SystemExit):
        main(["runs", "pack", "--runs-root", str(tmp_path / "here")])
    assert "dire runs pack needs --archive FILE.tar.gz" in capsys.readouterr().err


def test_a_bad_folder_anywhere_in_the_archive_stops_the_unpack_before_any_folder_is_written(tmp_path):
    _runs(tmp_path / "here")
    archive = tmp_path / "good.tar.gz"
    runs_folder.pack(tmp_path / "here", archive)
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    members["teacher/ffffffffffff/config.json"] = b"not json"  # sorts after the good folders
    with pytest.raises(CacheError, match="ffffffffffff's config.json is missing or does not hash"):
        runs_folder.unpack(_archive(tmp_path / "bad.tar.gz", members), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_truncated_archive_is_refused_with_how_to_remake_it(tmp_path):
    _runs(tmp_path / "here")
    runs_folder.pack(tmp_path / "here", tmp_path / "good.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes((tmp_path / "good.tar.gz").read_bytes()[:300])
    with pytest.raises(CacheError, match="not a whole .tar.gz .*`dire runs pack`"):
        runs_folder.unpack(cut, tmp_path / "runs")


def test_a_cut_unpack_leaves_only_a_hidden_folder_that_clean_removes(tmp_path):
    teacher, _, _ = _runs(tmp_path / "here")
    staging = teacher.parent / f".{teacher.name}{runs_folder.UNPACKING}"
    staging.mkdir()
    (staging / "config.json").write_text("{}")
    assert staging not in [r.path for r in runs_folder.scan(tmp_path / "here")]
    assert staging in runs_folder.clean(tmp_path / "here", dry_run=True) and staging.exists()
    runs_folder.clean(tmp_path / "here")
    assert not staging.exists() and teacher.exists()


def test_an_incomplete_folder_in_the_archive_leaves_no_folder_added(tmp_path):
    teacher, student, _ = _runs(tmp_path / "here")
    archive = tmp_path / "good.tar.gz"
    runs_folder.pack(tmp_path / "here", archive)
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    del members[f"teacher/{teacher.name}/metrics.json"]  # the teacher sorts after the complete student
    with pytest.raises(CacheError, match=f"teacher/{teacher.name} is incomplete"):
        runs_folder.unpack(_archive(tmp_path / "bad.tar.gz", members), tmp_path / "runs")
    assert not (tmp_path / "runs" / "student" / student.name).exists()
    assert not list((tmp_path / "runs").rglob(f"*{runs_folder.UNPACKING}"))
