"""dire.report.plots: byte-identical saves, t-SNE determinism, grids and bars (CPU, Agg)."""

import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # tests only; the module itself never picks a backend

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from dire.report.plots import bar_chart, image_grid, save_figure, tsne_embed, tsne_figure


@pytest.fixture(autouse=True)
def _close_all():
    yield
    plt.close("all")


def _clusters(n_per_class: int, classes: int = 3, d: int = 16, seed: int = 0, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    x = rng.normal(size=(len(labels), d)).astype(np.float32) + 4.0 * np.eye(classes, d)[labels] + shift
    return x, labels


# Built here and, for the cross-process check, in a fresh interpreter.
TOY_FIGURE = """
from dire.report.plots import bar_chart, set_style
set_style()
fig = bar_chart(
    [{"ipc": 1, "method": "SRe2L", "acc": 20.5, "std": 1.0},
     {"ipc": 1, "method": "+ DiRe", "acc": 24.0, "std": 0.7},
     {"ipc": 10, "method": "SRe2L", "acc": 41.0, "std": 0.4},
     {"ipc": 10, "method": "+ DiRe", "acc": 45.5, "std": 0.3}],
    x="ipc", y="acc", hue="method", yerr="std", title="toy \u00b5-table",
)
fig.axes[0].plot([0, 1], [0, 50], label="line")
"""


def _toy_figure():
    namespace = {}
    exec(TOY_FIGURE, namespace)
    return namespace["fig"]


def test_save_figure_bytes_are_deterministic(tmp_path):
    first = save_figure(_toy_figure(), tmp_path / "a" / "fig.v1")
    second = save_figure(_toy_figure(), tmp_path / "b" / "fig.v1")
    assert [p.name for p in first] == ["fig.v1.png", "fig.v1.pdf"]
    for p, q in zip(first, second):
        data = p.read_bytes()
        assert len(data) > 1000 and data == q.read_bytes(), p.name
    assert first[0].read_bytes().startswith(b"\x89PNG") and first[1].read_bytes().startswith(b"%PDF")
    assert b"CreationDate" not in first[1].read_bytes()


def test_save_figure_bytes_match_a_fresh_process(tmp_path):
    """Two runs of a notebook are two processes, with different string-hash seeds."""
    here = save_figure(_toy_figure(), tmp_path / "here" / "fig")
    env = {
        **os.environ,
        "PYTHONHASHSEED": "12345",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    code = TOY_FIGURE + "import sys\nfrom dire.report.plots import save_figure\nsave_figure(fig, sys.argv[1])\n"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "there" / "fig")], env=env, check=True, timeout=60)
    for p in here:
        assert p.read_bytes() == (tmp_path / "there" / p.name).read_bytes(), p.name


def test_save_figure_is_atomic_and_closes(tmp_path):
    fig = _toy_figure()
    assert plt.get_fignums()
    paths = save_figure(fig, tmp_path / "new" / "deep" / "stem")
    assert plt.get_fignums() == []
    assert sorted(p.name for p in (tmp_path / "new" / "deep").iterdir()) == ["stem.pdf", "stem.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match="unsupported"):
        save_figure(_toy_figure(), tmp_path / "bad", formats=("gif",))
    assert plt.get_fignums() == [] and not (tmp_path / "bad.gif").exists()


def test_save_figure_failure_leaves_no_temp(tmp_path, monkeypatch):
    fig = _toy_figure()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, tmp_path / "out" / "stem")
    assert list((tmp_path / "out").iterdir()) == []
    assert plt.get_fignums() == []


def test_tsne_embed_deterministic_and_shaped():
    x, _ = _clusters(20, d=80)  # d > pca_dims: PCA first
    a = tsne_embed(x, seed=3, max_iter=250)
    b = tsne_embed(torch.from_numpy(x), seed=3, max_iter=250)
    assert a.shape == (60, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all() and a.std(0).min() > 0


def test_tsne_embed_clips_perplexity_for_tiny_inputs():
    x, _ = _clusters(4, classes=2, d=5)
    out = tsne_embed(x, perplexity=30.0, max_iter=250)  # sklearn would reject perplexity >= N = 8
    assert out.shape == (8, 2) and np.isfinite(out).all()
    with pytest.raises(ValueError):
        tsne_embed(x[:1])


def test_tsne_figure_panels_and_class_subset():
    real, real_labels = _clusters(30, classes=4, d=24)
    fakes = {
        "baseline": _clusters(3, classes=4, d=24, seed=1),
        "+ DiRe": (torch.from_numpy(_clusters(3, classes=4, d=24, seed=2)[0]), torch.arange(4).repeat_interleave(3)),
    }
    fig = tsne_figure(real, real_labels, fakes, titles={"+ DiRe": "+ DiRe (CD 0.42)"}, max_real_per_class=10, seed=0)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["baseline", "+ DiRe (CD 0.42)"]
    # one real collection (4 classes × 10 kept) and one synthetic collection (12 points) per panel
    assert [len(c.get_offsets()) for c in panels[0].collections] == [40, 12]
    fig = tsne_figure(real, real_labels, fakes, classes=[1, 3], max_real_per_class=10)
    assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [20, 6]


def test_image_grid_shape():
    images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(3).repeat(10)
    fig = image_grid(images, labels, per_class=4, title="synthetic")
    assert len(fig.axes) == 3 * 4 and all(len(ax.images) == 1 for ax in fig.axes)
    grey = np.random.default_rng(0).integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    fig = image_grid(grey, np.array([0, 0, 2, 2, 2, 5]), classes=[2, 0], per_class=5)
    assert len(fig.axes) == 2 * 5
    assert [len(ax.images) for ax in fig.axes[:5]] == [1, 1, 1, 0, 0]  # row of class 2: 3 images, 2 blanks
    assert fig.axes[0].images[0].get_cmap().name == "gray"
    with pytest.raises(ValueError, match="uint8"):
        image_grid(images.float(), labels)


def test_image_grid_rows_carry_class_names_inside_the_figure():
    from dire.data.datasets import FASHION_CLASSES

    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    fig = image_grid(images, torch.arange(10).repeat(2), per_class=2, class_names=FASHION_CLASSES)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    rows = fig.axes[::2]
    assert [ax.get_ylabel() for ax in rows] == list(FASHION_CLASSES)
    # the longest names ("T-shirt/top", "Ankle boot") are not cut off at the left edge
    assert min(ax.yaxis.label.get_window_extent(renderer).x0 for ax in rows) >= 0


def test_bar_chart_groups_and_rejects_duplicates():
    rows = [{"m": "a", "acc": 1.0}, {"m": "b", "acc": float("nan")}, {"m": "c", "acc": 3.0}]
    fig = bar_chart(rows, x="m", y="acc")
    ax = fig.axes[0]
    assert len(ax.patches) == 2 and [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="more than one row"):
        bar_chart(rows + [{"m": "a", "acc": 2.0}], x="m", y="acc")


def test_bar_chart_centres_a_group_with_fewer_hues():
    rows = [{"x": 0, "h": h, "v": 1.0} for h in "abc"] + [{"x": 1, "h": h, "v": 1.0} for h in "ac"]
    ax = bar_chart(rows, x="x", y="v", hue="h").axes[0]
    centres = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)
    width = 0.8 / 3  # the widest group sets the bar width
    assert centres == pytest.approx([-width, 0.0, width, 1 - width / 2, 1 + width / 2])
    assert not bar_chart([], x="x", y="v", hue="h").axes[0].patches  # nothing to draw is an empty chart


def test_bar_chart_tilts_group_labels_only_when_they_would_overlap():
    names = ["convnet_w32", "resnet18", "mobilenet_v2", "shufflenet_v2", "vit_tiny", "swin_tiny"]  # 03's students
    rows = [{"student": n, "h": h, "acc": 50.0} for n in names for h in ("a", "b", "c")]
    fig = bar_chart(rows, x="student", y="acc", hue="h", ylabel="accuracy (%)")
    ax = fig.axes[0]
    fig.canvas.draw()  # as saving does: constrained layout makes room for the tilted labels
    renderer = fig.canvas.get_renderer()
    labels = ax.get_xticklabels()
    assert {t.get_rotation() for t in labels} == {30.0} and ax.get_ylabel() == "accuracy (%)"
    assert min(t.get_window_extent(renderer).y0 for t in labels) >= 0
    assert min(t.get_window_extent(renderer).x0 for t in labels) >= 0

    fig = bar_chart([{"s": s, "ms": 1.0} for s in ("baseline", "+ DiRe")], x="s", y="ms")
    labels = fig.axes[0].get_xticklabels()
    boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in labels]
    assert {t.get_rotation() for t in labels} == {0.0} and boxes[0].x1 < boxes[1].x0  # roomy: level, apart


def test_heatmap_cells_facets_and_duplicates():
    from dire.report.plots import heatmap

    rows = [{"w": w, "r": r, "f": f, "acc": 10 * w + r + f} for w in (0.1, 1.0) for r in (0.0, 0.5) for f in (1, 2)]
    fig = heatmap(rows[:-1], x="w", y="r", value="acc", facet="f")  # one cell missing: left blank
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["f = 1", "f = 2"]
    grid = panels[1].images[0].get_array()
    assert grid.shape == (2, 2) and float(grid[0, 1]) == pytest.approx(10 * 1.0 + 0.0 + 2)  # row r = 0, column w = 1
    assert np.ma.is_masked(grid[1, 1]) or np.isnan(grid[1, 1])
    assert sorted(t.get_text() for t in panels[0].texts) == sorted(
        f"{10 * w + r + 1:.1f}" for w in (0.1, 1.0) for r in (0.0, 0.5)
    )
    with pytest.raises(ValueError, match="more than one row"):
        heatmap(rows + rows[:1], x="w", y="r", value="acc", facet="f")
    plt.close("all")
