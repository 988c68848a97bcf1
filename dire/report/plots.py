"""Figures for the paper's views, saved with deterministic bytes.

* :func:`set_style` — the house style (seaborn "paper" context, colour-blind palette,
  TrueType fonts embedded in PDFs).
* :func:`save_figure` — ``<stem>.png`` and ``<stem>.pdf``, written atomically and with
  no timestamps, so rerunning a notebook leaves unchanged figures byte-identical.
* :func:`tsne_embed` / :func:`tsne_figure` — one joint t-SNE of real and synthetic
  embeddings, one panel per synthetic set (e.g. baseline vs ``+ DiRe``).
* :func:`image_grid` — synthetic images, one row per class.
* :func:`bar_chart` — grouped bars for a results table (a list of row dicts).

Backends: this module never calls ``matplotlib.use``. Figures are made with
``pyplot`` so that they show inline in notebooks, and :func:`save_figure` renders
through ``savefig``, which works under any backend (inline, Agg, a GUI). On a headless
machine without ``MPLBACKEND`` set, matplotlib already falls back to Agg by itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dire.runs import atomic_write

__all__ = [
    "FORMATS",
    "bar_chart",
    "heatmap",
    "image_grid",
    "save_figure",
    "set_style",
    "tsne_embed",
    "tsne_figure",
]

#: Formats :func:`save_figure` writes by default, with the metadata that would otherwise
#: carry a timestamp or a version string removed.
FORMATS: dict[str, dict[str, Any]] = {
    "png": {"metadata": {"Software": None}},
    "pdf": {"metadata": {"CreationDate": None}},
}


# --------------------------------------------------------------------------- style


def set_style() -> None:
    """Apply the house style to matplotlib's global ``rcParams``.

    Seaborn theme (``context="paper"``, ``style="ticks"``, ``palette="colorblind"``)
    and ``pdf.fonttype = 42`` (TrueType fonts embedded, editable text in PDFs).
    Does not touch the backend.
    """
    import seaborn as sns

    sns.set_theme(context="paper", style="ticks", palette="colorblind")
    mpl.rcParams["pdf.fonttype"] = 42


def _palette(n: int) -> list[tuple[float, float, float]]:
    """``n`` distinct colours: seaborn's colour-blind palette up to 10, HUSL beyond."""
    import seaborn as sns

    return list(sns.color_palette("colorblind" if n <= 10 else "husl", n))


# --------------------------------------------------------------------------- saving


def _atomic_savefig(fig: Figure, path: Path, fmt: str, **kwargs: Any) -> Path:
    """``fig.savefig`` into a temporary file beside ``path``, then renamed (:func:`dire.runs.atomic_write`)."""
    return atomic_write(path, lambda handle: fig.savefig(handle, format=fmt, **kwargs))


def save_figure(
    fig: Figure,
    stem: str | os.PathLike[str],
    *,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 200,
    close: bool = True,
) -> list[Path]:
    """Write ``fig`` as ``<stem>.<fmt>`` for each format and return the paths.

    Args:
        fig: the figure to save.
        stem: output path without suffix (``"figures/tsne_cifar10"``); the suffix is
            appended, so dots in the stem are kept. Missing parent folders are created.
        formats: any of :data:`FORMATS` (default PNG and PDF).
        dpi: resolution of raster output (default 200).
        close: close the figure afterwards (default True, so loops making many figures
            do not pile them up; a notebook can still display a closed figure by
            evaluating it as a cell's last expression).

    Each file is written to a temporary file in the same folder and renamed into
    place, so readers never see a half-written figure. Timestamps and version strings
    are left out of the metadata, so saving the same figure twice gives identical bytes.
    With ``close=True`` the figure is closed even when saving fails.
    """
    stem = Path(stem)
    try:
        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"unsupported formats {unknown}; choose from {sorted(FORMATS)}")
        stem.parent.mkdir(parents=True, exist_ok=True)
        return [
            _atomic_savefig(fig, stem.with_name(f"{stem.name}.{fmt}"), fmt, dpi=dpi, **FORMATS[fmt]) for fmt in formats
        ]
    finally:
        if close:
            plt.close(fig)


# --------------------------------------------------------------------------- t-SNE


def _numpy(x: Any) -> np.ndarray:
    """A NumPy array from an array, a list or a (possibly CUDA, possibly grad) tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = (x.float() if x.is_floating_point() else x).numpy()  # bf16/fp16 have no NumPy twin
    return np.asarray(x)


def tsne_embed(
    x: Any,
    *,
    perplexity: float = 30.0,
    seed: int = 0,
    pca_dims: int = 50,
    max_iter: int = 1000,
) -> np.ndarray:
    """2-D t-SNE of the rows of ``x`` (``[N, d]`` array or tensor, ``N >= 2``).

    Args:
        perplexity: t-SNE perplexity (default 30); clipped to ``N - 1`` because
            scikit-learn requires ``perplexity < N``.
        seed: random state of the PCA and the t-SNE (default 0).
        pca_dims: rows are first reduced to this many principal components when
            ``d > pca_dims`` (default 50).
        max_iter: t-SNE iterations (default 1000).

    Returns float32 ``[N, 2]``. The same input and seed give the same output on a
    given machine: scikit-learn's Barnes-Hut t-SNE with PCA init, run on one thread
    (``n_jobs=1`` and OpenMP limited to one thread while it runs).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = _numpy(x).astype(np.float32, copy=False)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"tsne_embed expects [N, d] with N >= 2; got shape {x.shape}")
    n, d = x.shape
    if d > pca_dims:
        x = PCA(n_components=min(pca_dims, n), random_state=seed).fit_transform(x)
    tsne = TSNE(
        n_components=2,
        perplexity=min(float(perplexity), n - 1.0),
        init="pca",
        learning_rate="auto",
        max_iter=max_iter,
        random_state=seed,
        n_jobs=1,
    )
    # n_jobs=1 does not reach the Barnes-Hut gradient, which uses every OpenMP thread;
    # on a busy machine spinning OpenMP threads slow small inputs down by 10-100x.
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(x).astype(np.float32)


def _subsample_per_class(labels: np.ndarray, classes: Sequence[int], limit: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` rows of each class in ``classes`` (seeded)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) > limit:
            idx = rng.choice(idx, size=limit, replace=False)
        keep.append(idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def _class_legend(fig: Figure, colours: Mapping[int, Any], class_names: Sequence[str] | None) -> None:
    """One figure legend mapping colours to class names (or class indices)."""
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markerfacecolor=col,
            markeredgecolor="black",
            markeredgewidth=0.5,
            label=class_names[c] if class_names else str(c),
        )
        for c, col in colours.items()
    ]
    fig.legend(handles=handles, loc="outside right center", frameon=False, title="class")


def tsne_figure(
    real: Any,
    real_labels: Any,
    fake_sets: Mapping[str, tuple[Any, Any]],
    *,
    titles: Mapping[str, str] | None = None,
    classes: Sequence[int] | None = None,
    seed: int = 0,
    max_real_per_class: int = 200,
    perplexity: float = 30.0,
    class_names: Sequence[str] | None = None,
    panel_size: float = 3.5,
) -> Figure:
    """Real and synthetic embeddings on one shared t-SNE map, one panel per synthetic set.

    Args:
        real: real embeddings ``[N, d]`` (array or tensor).
        real_labels: their integer labels ``[N]``.
        fake_sets: panel name (e.g. ``"baseline"``, ``"+ DiRe"``) → ``(embeddings
            [M, d], labels [M])``, in panel order. All sets share ``d`` with ``real``.
        titles: panel title per name, e.g. ``{"+ DiRe": "+ DiRe (Vendi 7.9)"}``;
            names without an entry are titled by the name itself (default None).
        classes: only these classes are embedded and drawn (default None: every class
            of ``real_labels``); use it for per-class views. Colours are assigned over
            all real classes, so a class has the same colour in every view.
        seed: seed of the real subsampling and of the t-SNE (default 0).
        max_real_per_class: real points kept per class (default 200).
        perplexity: t-SNE perplexity, clipped for small inputs (default 30).
        class_names: legend names indexed by class (default None: class indices).
        panel_size: width and height of each panel in inches (default 3.5).

    All points (real subsample + every synthetic set) go through one
    :func:`tsne_embed`, so the panels are directly comparable. Real points are drawn
    small and light, synthetic points large with a black edge; both coloured by class.
    """
    if not fake_sets:
        raise ValueError("tsne_figure needs at least one synthetic set")
    real, real_labels = _numpy(real), _numpy(real_labels).astype(np.int64)
    every_class = [int(c) for c in np.unique(real_labels)]
    classes = [int(c) for c in classes] if classes is not None else every_class
    if missing := sorted(set(classes) - set(every_class)):
        raise ValueError(f"classes {missing} have no real points")
    # colours follow all real classes, so a class keeps its colour in per-class views
    palette = dict(zip(every_class, _palette(len(every_class))))
    colours = {c: palette[c] for c in classes}

    keep = _subsample_per_class(real_labels, classes, max_real_per_class, seed)
    parts, part_labels = [real[keep]], [real_labels[keep]]
    for emb, lab in fake_sets.values():
        emb, lab = _numpy(emb), _numpy(lab).astype(np.int64)
        mask = np.isin(lab, classes)
        parts.append(emb[mask])
        part_labels.append(lab[mask])
    coords = tsne_embed(np.concatenate(parts), perplexity=perplexity, seed=seed)
    splits = np.split(coords, np.cumsum([len(p) for p in parts])[:-1])

    n = len(fake_sets)
    fig, axes = plt.subplots(
        1, n, figsize=(panel_size * n + 1.0, panel_size), sharex=True, sharey=True, squeeze=False, layout="constrained"
    )
    titles = titles or {}
    for ax, name, xy, lab in zip(axes[0], fake_sets, splits[1:], part_labels[1:]):
        _scatter(ax, splits[0], part_labels[0], colours, s=6, alpha=0.3, linewidths=0)
        _scatter(ax, xy, lab, colours, s=60, alpha=1.0, edgecolors="black", linewidths=0.8)
        ax.set_title(titles.get(name, name))
        ax.set_xticks([])
        ax.set_yticks([])
    _class_legend(fig, colours, class_names)
    return fig


def _scatter(ax, xy: np.ndarray, labels: np.ndarray, colours: Mapping[int, Any], **kwargs: Any) -> None:
    """Scatter ``xy`` coloured by ``labels`` through ``colours`` (class → RGB)."""
    if len(xy):
        ax.scatter(xy[:, 0], xy[:, 1], c=[colours[int(c)] for c in labels], **kwargs)


# --------------------------------------------------------------------------- images


def image_grid(
    images_uint8: Any,
    labels: Any,
    *,
    classes: Sequence[int] | None = None,
    per_class: int = 10,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
    cell_size: float = 0.7,
) -> Figure:
    """Images in a grid: one row per class, ``per_class`` columns, no axes.

    Args:
        images_uint8: uint8 pixels ``[N, C, H, W]`` with ``C`` 1 (drawn grey) or 3 (RGB),
            as stored in a synthetic set's ``images`` (tensor or array).
        labels: integer labels ``[N]``.
        classes: rows, in order (default None: every class present, ascending).
        per_class: columns; the first ``per_class`` images of each class are shown and
            missing cells stay blank (default 10).
        title: figure title (default None).
        class_names: row labels indexed by class (default None: class indices).
        cell_size: inches per image (default 0.7).

    The figure has exactly ``len(classes) * per_class`` axes.
    """
    images, labels = _numpy(images_uint8), _numpy(labels).astype(np.int64)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"image_grid expects uint8 [N, C, H, W] with C in (1, 3); got {images.dtype} {images.shape} "
            "(convert normalized images with dire.data.to_uint8)"
        )
    classes = [int(c) for c in (classes if classes is not None else np.unique(labels))]
    names = [class_names[c] if class_names else str(c) for c in classes]
    # inches kept for the row labels (about 0.6 em per character, so "T-shirt/top" fits) and the title
    em = mpl.font_manager.FontProperties(size=mpl.rcParams["axes.labelsize"]).get_size_in_points() / 72
    left, top = 0.15 + 0.6 * em * max(len(n) for n in names), (0.4 if title else 0.05)
    width, height = cell_size * per_class + left + 0.05, cell_size * len(classes) + top + 0.05
    fig, axes = plt.subplots(len(classes), per_class, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(
        left=left / width, right=1 - 0.05 / width, bottom=0.05 / height, top=1 - top / height, wspace=0.04, hspace=0.04
    )
    for row, c, name in zip(axes, classes, names):
        picks = np.flatnonzero(labels == c)[:per_class]
        for ax, i in zip(row, picks):
            _show(ax, images[i])
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        row[0].set_ylabel(name, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, y=1 - 0.05 / height, va="top")
    return fig


def _show(ax, image_chw: np.ndarray) -> None:
    """Draw one uint8 ``[C, H, W]`` image: grey for one channel, RGB for three."""
    if image_chw.shape[0] == 1:
        ax.imshow(image_chw[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image_chw.transpose(1, 2, 0), interpolation="nearest")


# --------------------------------------------------------------------------- bars


def _ordered_unique(values: Sequence[Any]) -> list[Any]:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values))


def bar_chart(
    table: Sequence[Mapping[str, Any]],
    *,
    x: str,
    y: str,
    hue: str | None = None,
    yerr: str | None = None,
    title: str | None = None,
    ylabel: str | None = None,
    figsize: tuple[float, float] = (5.0, 3.0),
) -> Figure:
    """Grouped bars from a results table given as a list of row dicts.

    Args:
        table: rows such as ``{"ipc": 10, "method": "+ DiRe", "acc": 61.2, "std": 0.4}``.
        x: column giving the bar groups along the x axis (order of first appearance).
        y: column giving the bar heights; rows whose value is None or NaN are skipped.
        hue: column splitting each group into side-by-side bars, centred in the group, with a legend
            right of the axes (default None: one bar per group).
        yerr: column with symmetric error bars (default None).
        title: axes title (default None).
        ylabel: y-axis label (default None: the ``y`` column's name).
        figsize: figure size in inches (default 5 × 3).

    Each ``(x, hue)`` pair must appear at most once. Group labels that would overlap side by side are tilted.
    """
    xs = _ordered_unique([row[x] for row in table])
    hues = _ordered_unique([row[hue] for row in table]) if hue else [None]
    cells: dict[tuple[Any, Any], Mapping[str, Any]] = {}
    for row in table:
        key = (row[x], row[hue] if hue else None)
        if key in cells:
            raise ValueError(
                f"bar_chart: more than one row for {x}={key[0]!r}" + (f", {hue}={key[1]!r}" if hue else "")
            )
        cells[key] = row

    def shown(row: Mapping[str, Any] | None) -> bool:
        return row is not None and row.get(y) is not None and not np.isnan(float(row[y]))

    # each group's bars side by side and centred, so a group with fewer hues has no gaps
    groups = {xv: [h for h in hues if shown(cells.get((xv, h)))] for xv in xs}
    width = 0.8 / max([1, *(len(g) for g in groups.values())])  # a list: an empty table has no groups
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    for h, colour in zip(hues, _palette(len(hues))):
        pos, heights, errs = [], [], []
        for i, xv in enumerate(xs):
            if h not in groups[xv]:
                continue
            row, k, n = cells[(xv, h)], groups[xv].index(h), len(groups[xv])
            pos.append(i + width * (k - (n - 1) / 2))
            heights.append(float(row[y]))
            errs.append(float(row[yerr]) if yerr and row.get(yerr) is not None else 0.0)
        ax.bar(
            pos,
            heights,
            width=width,
            color=colour,
            label=None if h is None else str(h),
            yerr=errs if yerr else None,
            capsize=3 if yerr else 0,
        )
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_xlabel(x)
    ax.set_ylabel(y if ylabel is None else ylabel)
    if hue and hues:
        ax.legend(title=hue, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside, not over, the bars
    if title:
        ax.set_title(title)
    _tilt_crowded_labels(fig, ax)
    return fig


def _tilt_crowded_labels(fig: Figure, ax: Axes) -> None:
    """Tilt the x tick labels, right-aligned under their ticks, when two neighbours would overlap."""
    fig.canvas.draw()  # label extents need a rendered layout
    boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()]
    if any(left.x1 > right.x0 for left, right in zip(boxes, boxes[1:])):
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")


def heatmap(
    table: Sequence[Mapping[str, Any]],
    *,
    x: str,
    y: str,
    value: str,
    facet: str | None = None,
    fmt: str = ".1f",
    title: str | None = None,
    label: str | None = None,
    cmap: str = "viridis",
    figsize_per_panel: tuple[float, float] = (3.2, 2.6),
) -> Figure:
    """Annotated heat map of ``value`` over the ``x`` × ``y`` grid of a table (list of row dicts), one panel
    per distinct ``facet`` value; all panels share one colour scale. Rows lacking a cell are left blank.

    Each ``(facet, x, y)`` must appear at most once; ``value`` must be a number (e.g. a flattened mean).
    ``label`` names the colour bar (default ``value``).
    """
    facets = _ordered_unique([row[facet] for row in table]) if facet else [None]
    xs = sorted(_ordered_unique([row[x] for row in table]))
    ys = sorted(_ordered_unique([row[y] for row in table]))
    grids = {f: np.full((len(ys), len(xs)), np.nan) for f in facets}
    for row in table:
        grid = grids[row[facet] if facet else None]
        i, j = ys.index(row[y]), xs.index(row[x])
        if not np.isnan(grid[i, j]):
            raise ValueError(f"heatmap: more than one row for {x}={row[x]!r}, {y}={row[y]!r}")
        grid[i, j] = float(row[value])
    finite = np.concatenate([g[np.isfinite(g)] for g in grids.values()])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fig, axes = plt.subplots(
        1,
        len(facets),
        figsize=(figsize_per_panel[0] * len(facets), figsize_per_panel[1]),
        layout="constrained",
        squeeze=False,
    )
    for ax, f in zip(axes[0], facets):
        image = ax.imshow(grids[f], origin="lower", cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1, aspect="auto")
        for (i, j), v in np.ndenumerate(grids[f]):
            if np.isfinite(v):  # dark text on the bright end of the scale
                ax.text(
                    j,
                    i,
                    format(v, fmt),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if hi > lo and (v - lo) / (hi - lo) > 0.6 else "white",
                )
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
        ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        if facet:
            ax.set_title(f"{facet} = {f:g}" if isinstance(f, (int, float)) else f"{facet} = {f}")
    fig.colorbar(image, ax=axes[0].tolist(), label=label or value, shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig
