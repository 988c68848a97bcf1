"""The explorer's logic: cached experiments listed and filtered from a runs folder, the DiRe twin of an
experiment, nearest real images against a brute-force reference, views whose real images and embeddings line up,
and DiRe's per-class terms against the one-class reference."""

import json
import shutil

import numpy as np
import pytest
import torch

from dire.data import from_uint8
from dire.experiments.config import make_experiment
from dire.experiments.pipeline import run_experiment
from dire.nets.models import embed_images
from dire.regularizer import class_terms
from dire.report.explore import (
    Record,
    list_experiments,
    load_experiment,
    nearest_real,
    neighbours_figure,
    records_markdown,
    select,
    synthetic_path,
    terms_markdown,
    terms_per_class,
    toggled,
)

SMALL = dict(iterations=5, student_epochs=2, bank_per_class=20)


@pytest.fixture(scope="module")
def cached(runs_root, digits_teacher):
    """Two digits experiments (DiRe off and on) in the session's runs folder."""
    return [
        run_experiment(make_experiment(**SMALL, dire=on), runs_root=runs_root, progress=False, log=lambda _m: None)
        for on in (False, True)
    ]


def _record(key, dire=False, seed=0, method="sre2l", weight=0.1, terms=("cd", "cdm", "edm"), ipc=5):
    config = {
        "dataset": "digits",
        "method": method,
        "synthesis": {"seed": seed, "ipc": ipc},
        "dire": {"enabled": dire, "weight": weight, "terms": list(terms)},
    }
    return Record(key, {"config": config, "accuracy": {"final": {"mean": 50.0}}, "diversity": {"vendi": 2.0}})


def test_lists_filters_and_pairs_cached_experiments(runs_root, cached):
    records = list_experiments(runs_root)
    off = select(records, dataset="digits", method="sre2l", dire=False, seed=0)
    on = select(records, dataset="digits", method="sre2l", dire=True, seed=0)
    keys = {r.key for r in off + on}
    mine = [r for r in records if r.result["dirs"]["synthetic"] in {c["dirs"]["synthetic"] for c in cached}]
    assert {r.key for r in mine} <= keys and len(mine) == 2
    base = next(r for r in mine if not r.dire)
    twin = toggled(records, base)
    assert twin is not None and twin.dire and twin.result["dirs"]["synthetic"] == cached[1]["dirs"]["synthetic"]
    assert toggled(records, twin).key == base.key
    assert select(records, key=base.key[:5])[0] == base  # a key prefix is enough
    assert not select(records, dataset="cifar10")
    assert base.key in records_markdown(records) and "sre2l + DiRe" in records_markdown(records)


def test_twin_prefers_the_same_dire_settings_and_ignores_other_configs():
    base = _record("a")
    other_seed = _record("b", dire=True, seed=1)
    variant = _record("c", dire=True, weight=0.5)  # a DiRe variant of the same experiment
    plus = _record("d", dire=True)  # the + DiRe row: base's DiRe settings, switched on
    records = [base, other_seed, variant, plus]
    assert toggled(records, base).key == "d"
    assert toggled([base, other_seed, variant], base).key == "c"
    assert toggled([base, other_seed], base) is None
    assert variant.name == "sre2l + DiRe" and _record("e", dire=True, terms=("logdet",)).name == "sre2l + DiRe (logdet)"


def test_skips_unreadable_results_and_lost_synthetic_sets(tmp_path, cached, runs_root):
    for r in cached:  # a copy of the runs folder holding the two experiments
        src = synthetic_path(r, runs_root).parent
        shutil.copytree(src, tmp_path / "synthetic" / src.name)
    for key in ("one", "two"):
        (tmp_path / "experiment" / key).mkdir(parents=True)
    (tmp_path / "experiment" / "one" / "result.json").write_text(json.dumps(cached[0]))
    # the stored path is relative to where the run started; the set is found by its folder name
    moved = {**cached[1], "dirs": {**cached[1]["dirs"], "synthetic": "../elsewhere/" + cached[1]["dirs"]["synthetic"]}}
    (tmp_path / "experiment" / "two" / "result.json").write_text(json.dumps(moved))
    assert [r.key for r in list_experiments(tmp_path)] == ["one", "two"]
    (tmp_path / "experiment" / "three").mkdir()
    (tmp_path / "experiment" / "three" / "result.json").write_text("{truncated")
    shutil.rmtree(synthetic_path(cached[1], tmp_path).parent)
    with pytest.warns(UserWarning) as caught:
        assert [r.key for r in list_experiments(tmp_path)] == ["one"]
    messages = " ".join(str(w.message) for w in caught)
    assert "three" in messages and "not a readable experiment result" in messages and "is gone" in messages


def test_nearest_real_matches_a_brute_force_search():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(40, 8, generator=gen)
    z = torch.randn(6, 8, generator=gen)
    z[2] = 3.0 * real[17]  # a copy (up to scale) of real image 17 is its own nearest neighbour
    idx, sim = nearest_real(z, real, k=4)
    zn, rn = z.numpy() / np.linalg.norm(z, axis=1, keepdims=True), real.numpy() / np.linalg.norm(real, axis=1)[:, None]
    cos = zn @ rn.T
    assert idx.tolist() == np.argsort(-cos, axis=1)[:, :4].tolist()
    np.testing.assert_allclose(sim.numpy(), np.take_along_axis(cos, idx.numpy(), axis=1), rtol=1e-5, atol=1e-6)
    assert idx[2, 0] == 17 and sim[2, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k must be in"):
        nearest_real(z, real, k=41)
    with pytest.raises(ValueError, match="one d"):
        nearest_real(z, real[:, :5])


def test_view_lines_up_images_embeddings_and_terms(runs_root, cached, digits_teacher):
    teacher, _ = digits_teacher
    records = list_experiments(runs_root)
    record = next(r for r in records if r.result["dirs"]["synthetic"] == cached[1]["dirs"]["synthetic"])
    view = load_experiment(record, runs_root=runs_root, real_per_class=30)
    info = view.dataset.info
    assert view.images.dtype == torch.uint8 and len(view.images) == len(view.labels) == 50
    assert torch.bincount(view.real_labels).tolist() == [30] * 10 and view.names[3] == "3"
    # each real embedding is the teacher's embedding of the real image stored beside it (8-bit round trip)
    again = embed_images(teacher, from_uint8(view.real_images, info))
    torch.testing.assert_close(again, view.real_embeddings, atol=0.05, rtol=0.02)
    torch.testing.assert_close(embed_images(teacher, from_uint8(view.images, info)), view.embeddings)
    # the per-class terms equal the one-class reference on the same embeddings
    rows = terms_per_class(view)
    assert [r["class"] for r in rows] == list(view.names) and all(r["n"] == 5 for r in rows)
    for c in (0, 7):
        ref = class_terms(view.embeddings[view.labels == c], view.real_embeddings[view.real_labels == c])
        for t in ("cd", "cdm", "edm"):
            assert rows[c][t] == pytest.approx(float(ref[t]), rel=1e-5, abs=1e-6)
    table = terms_markdown([view, view])
    assert table.count("\n") == 11 and "CD ↓ (sre2l + DiRe)" in table
    fig = neighbours_figure(view, classes=[1, 2], per_class=2, k=3)
    assert len(fig.axes) == 4 * 4 and fig.axes[0].get_title().startswith("1\n")
