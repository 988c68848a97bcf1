"""What the explorer notebook (``07_explore``) needs: the cached experiments of a runs folder, one experiment's
synthetic set in the embedding space of the teacher it was synthesised against, each synthetic image's nearest
real images there, and DiRe's three terms per class.

Every finished experiment leaves ``<runs>/experiment/<key>/result.json`` with its ``config`` and the folder of
its synthetic set; :func:`list_experiments` reads them, :func:`select` filters them by dataset, method, DiRe on
or off and seed, and :func:`load_experiment` brings one back with its teacher and a seeded pool of real images::

    records = list_experiments("runs")
    a = select(records, dataset="digits", method="sre2l", dire=False, seed=0)[0]
    b = toggled(records, a)  # the same experiment with DiRe switched
    view = load_experiment(a, runs_root="runs")
    idx, sim = nearest_real(view.embeddings, view.real_embeddings, k=5)
"""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure

from dire.data import ImageDataset, to_uint8
from dire.regularizer import RealBank, batched_terms
from dire.runs import load


@dataclass(frozen=True)
class Record:
    """One cached experiment: ``key`` is its folder under ``<runs>/experiment/``; ``result`` is its result.json."""

    key: str
    result: dict

    @property
    def config(self) -> dict:
        return self.result["config"]

    @property
    def dataset(self) -> str:
        return self.config["dataset"]

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def dire(self) -> bool:
        return bool(self.config["dire"]["enabled"])

    @property
    def seed(self) -> int:
        return int(self.config["synthesis"]["seed"])

    @property
    def name(self) -> str:
        """``sre2l``, ``sre2l + DiRe``, or with other terms than the paper's ``sre2l + DiRe (logdet,cdm,edm)``."""
        terms = self.config["dire"].get("terms", ["cd", "cdm", "edm"])
        extra = "" if list(terms) == ["cd", "cdm", "edm"] else f" ({','.join(terms)})"
        return self.method + (f" + DiRe{extra}" if self.dire else "")

    @property
    def label(self) -> str:
        """A one-line description for menus and titles."""
        acc = self.result["accuracy"]["final"]["mean"]
        return (
            f"{self.name} · {self.dataset} IPC {self.config['synthesis']['ipc']} · seed {self.seed} · "
            f"acc {acc:.1f} % · Vendi {self.result['diversity']['vendi']:.2f} [{self.key[:6]}]"
        )


def list_experiments(runs_root: str | Path) -> list[Record]:
    """Every experiment under ``<runs_root>/experiment/`` whose synthetic set is still there, sorted by dataset,
    method, DiRe, seed. A result.json that cannot be read, or whose synthetic set is gone, is skipped with a
    warning naming it."""
    root = Path(runs_root)
    records = []
    for path in sorted((root / "experiment").glob("*/result.json")):
        try:
            result = json.loads(path.read_text())
            if "dataset" not in result["config"] or "synthetic" not in result["dirs"]:
                raise KeyError("config.dataset or dirs.synthetic")
        except (OSError, ValueError, KeyError, TypeError) as err:
            warnings.warn(f"skipping {path}: not a readable experiment result ({err!r})", stacklevel=2)
            continue
        if not synthetic_path(result, root).exists():
            warnings.warn(f"skipping {path}: its synthetic set {synthetic_path(result, root)} is gone", stacklevel=2)
            continue
        records.append(Record(path.parent.name, result))
    return sorted(records, key=lambda r: (r.dataset, r.method, r.dire, r.seed, r.name, r.key))


def synthetic_path(result: dict, runs_root: str | Path) -> Path:
    """The synthetic set of ``result`` inside ``runs_root``, found by its folder name: the path stored in
    result.json is relative to wherever the run was started (``../runs`` from a notebook, ``runs`` from the CLI)."""
    return Path(runs_root) / "synthetic" / Path(result["dirs"]["synthetic"]).name / "synthetic.pt"


def select(
    records: Sequence[Record],
    *,
    dataset: str | None = None,
    method: str | None = None,
    dire: bool | None = None,
    seed: int | None = None,
    key: str | None = None,
) -> list[Record]:
    """The records matching every criterion given (None matches anything; ``key`` may be a prefix)."""
    return [
        r
        for r in records
        if (dataset is None or r.dataset == dataset)
        and (method is None or r.method == method)
        and (dire is None or r.dire == dire)
        and (seed is None or r.seed == seed)
        and (key is None or r.key.startswith(key))
    ]


def _without_dire(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "dire"}


def toggled(records: Sequence[Record], record: Record) -> Record | None:
    """The experiment that differs from ``record`` only in DiRe being on instead of off (or off instead of on):
    first one whose other DiRe settings are ``record``'s too (a comparison's baseline and + DiRe rows), else any
    other (e.g. a DiRe variant); None when there is none."""
    same = [r for r in records if r.dire != record.dire and _without_dire(r.config) == _without_dire(record.config)]
    own = {k: v for k, v in record.config["dire"].items() if k != "enabled"}
    same.sort(key=lambda r: ({k: v for k, v in r.config["dire"].items() if k != "enabled"} != own, r.key))
    return same[0] if same else None


@dataclass
class View:
    """One experiment in its teacher's embedding space: the synthetic set (uint8 images, labels, embeddings) and
    a seeded pool of real training images of every class (uint8 images, labels, embeddings)."""

    record: Record
    dataset: ImageDataset
    teacher_dir: str
    images: torch.Tensor
    labels: torch.Tensor
    embeddings: torch.Tensor
    real_images: torch.Tensor
    real_labels: torch.Tensor
    real_embeddings: torch.Tensor

    @property
    def names(self) -> tuple[str, ...]:
        return self.dataset.names


def load_experiment(
    record: Record,
    *,
    runs_root: str | Path,
    data_root: str | Path = "data",
    device: str | torch.device = "cpu",
    real_per_class: int = 100,
    seed: int = 0,
    download: bool = False,
    progress: bool = False,
) -> View:
    """``record``'s synthetic set and ``real_per_class`` real training images per class (a seeded draw from the
    images the experiment trained on, its validation hold-out excluded), both embedded by the teacher the set
    was synthesised against (loaded from the cache, trained if it is gone)."""
    from dire.nets.models import embed_images
    from dire.nets.teacher import get_teacher, training_split

    if real_per_class < 1:
        raise ValueError(f"real_per_class must be >= 1; got {real_per_class}")
    cfg = record.config
    per, vseed = cfg.get("validation_per_class", 0), cfg.get("validation_seed", 0)
    holdout = (per, vseed) if per > 0 else None
    train, _ = training_split(cfg["dataset"], holdout=holdout, data_root=data_root, download=download)
    teacher, trec = get_teacher(
        cfg["dataset"],
        cfg["teacher_arch"],
        recipe=cfg["teacher_recipe"],
        seed=cfg["teacher_seed"],
        data_root=data_root,
        runs_root=runs_root,
        device=device,
        progress=progress,
        download=download,
        holdout=holdout,
        weights=cfg.get("teacher_weights"),  # added fields: absent from configs that left them at their defaults
        **cfg.get("teacher_overrides", {}),
        # the precision the experiment's teacher was trained in (records older than the setting: fp32)
        precision=record.result.get("precision", {}).get("train", "fp32"),
    )
    synthetic = load(synthetic_path(record.result, runs_root))
    info = train.info
    real, real_labels = [], []
    for c in range(info.num_classes):
        x = train.class_images(c, limit=real_per_class, generator=torch.Generator().manual_seed(seed * 1_000_003 + c))
        real.append(x)
        real_labels.append(torch.full((len(x),), c))
    real_x = torch.cat(real)
    return View(
        record=record,
        dataset=train,
        teacher_dir=Path(trec["dir"]).name,
        images=synthetic["images"],
        labels=synthetic["labels"],
        embeddings=embed_images(teacher, synthetic["images"], info=info, device=device),
        real_images=to_uint8(real_x, info),
        real_labels=torch.cat(real_labels),
        real_embeddings=embed_images(teacher, real_x, device=device),
    )


def nearest_real(z: torch.Tensor, real: torch.Tensor, *, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``z`` [N, d], the ``k`` rows of ``real`` [M, d] with the highest cosine similarity (all
    classes: a synthetic image may sit closest to another class): indices [N, k] and similarities [N, k],
    most similar first."""
    if z.dim() != 2 or real.dim() != 2 or z.shape[1] != real.shape[1]:
        raise ValueError(f"expected z [N, d] and real [M, d] with one d; got {tuple(z.shape)} and {tuple(real.shape)}")
    if not 1 <= k <= len(real):
        raise ValueError(f"k must be in [1, {len(real)}] (the real images there are); got {k}")
    sim = torch.nn.functional.normalize(z.float(), dim=1) @ torch.nn.functional.normalize(real.float(), dim=1).T
    top = sim.topk(k, dim=1)
    return top.indices, top.values


def terms_per_class(view: View) -> list[dict]:
    """DiRe's three terms for each class of the synthetic set, against the view's real pool: CD (mean cosine among
    the class's synthetic embeddings; lower is more diverse), CDM (mean 1 - cosine to the class's real ones) and EDM
    (mean Euclidean distance to them), computed exactly (not the release's arithmetic)."""
    per = {c: view.real_embeddings[view.real_labels == c] for c in view.real_labels.unique().tolist()}
    bank = RealBank.from_dict(per, num_classes=len(view.names))
    terms = batched_terms(view.embeddings, view.labels, bank, terms=("cd", "cdm", "edm"))
    counts = torch.bincount(view.labels, minlength=len(view.names))
    return [
        {
            "class": view.names[c],
            "n": int(counts[c]),
            **{t: float(terms[t][i]) for t in ("cd", "cdm", "edm")},
        }
        for i, c in enumerate(terms["classes"].tolist())
    ]


def terms_markdown(views: Sequence[View]) -> str:
    """One row per class, each view's CD, CDM, EDM side by side."""
    tables = [{row["class"]: row for row in terms_per_class(v)} for v in views]
    head = "| class | " + " | ".join(f"{t} ({v.record.name})" for v in views for t in ("CD ↓", "CDM", "EDM")) + " |"
    lines = [head, "|---|" + "---|" * (3 * len(views))]
    for name in tables[0]:
        cells = [f"{t[name][k]:.3f}" if name in t else "" for t in tables for k in ("cd", "cdm", "edm")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def records_markdown(records: Sequence[Record]) -> str:
    """The records as a table, one row each (what the explorer can show)."""
    lines = [
        "| key | dataset | IPC | method | seed | student accuracy (%) | Vendi |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{r.key}` | {r.dataset} | {r.config['synthesis']['ipc']} | {r.name} | {r.seed} | "
        f"{r.result['accuracy']['final']['mean']:.2f} | {r.result['diversity']['vendi']:.3f} |"
        for r in records
    ]
    return "\n".join(lines) if records else "No cached experiments."


def summary_markdown(records: Sequence[Record]) -> str:
    """Accuracy and the diversity metrics of each record, one column per record."""
    rows = [
        ("student accuracy (%)", lambda r: f"{r.result['accuracy']['final']['mean']:.2f}"),
        ("Vendi ↑", lambda r: f"{r.result['diversity']['vendi']:.3f}"),
        ("Coverage ↑", lambda r: f"{r.result['diversity']['coverage']:.3f}"),
        ("intra-class cosine ↓", lambda r: f"{r.result['diversity']['intra_class_cosine']:.3f}"),
        ("synthesis (s)", lambda r: f"{r.result['timing']['synthesis_s']:.1f}"),
        ("run folder", lambda r: f"`{r.key}`"),
    ]
    lines = ["| | " + " | ".join(r.name for r in records) + " |", "|---|" + "---|" * len(records)]
    lines += [f"| {name} | " + " | ".join(get(r) for r in records) + " |" for name, get in rows]
    return "\n".join(lines)


def neighbours_figure(
    view: View, *, classes: Sequence[int], per_class: int = 2, k: int = 5, cell_size: float = 0.8
) -> Figure:
    """One row per synthetic image (the first ``per_class`` of each class in ``classes``): the image, then its
    ``k`` nearest real images, each titled with its class and cosine similarity (red: another class)."""
    import matplotlib.pyplot as plt

    from dire.report.plots import _show

    picks = [int(i) for c in classes for i in torch.nonzero(view.labels == c).flatten()[:per_class]]
    if not picks:
        raise ValueError(f"no synthetic images of classes {list(classes)}")
    idx, sim = nearest_real(view.embeddings[picks], view.real_embeddings, k=k)
    fig, axes = plt.subplots(
        len(picks), k + 1, figsize=(cell_size * (k + 1) + 0.3, (cell_size + 0.3) * len(picks)), squeeze=False
    )
    for row, i, neighbours, sims in zip(axes, picks, idx.tolist(), sim.tolist()):
        own = int(view.labels[i])
        _show(row[0], view.images[i].numpy())
        row[0].set_title(f"{view.names[own]}\n(synthetic)", fontsize=7, fontweight="bold")
        for ax, j, s in zip(row[1:], neighbours, sims):
            label = int(view.real_labels[j])
            _show(ax, view.real_images[j].numpy())
            ax.set_title(f"{view.names[label]}\n{s:.2f}", fontsize=7, color="black" if label == own else "red")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{view.record.name}: nearest real images (cosine)", fontsize=9)
    fig.tight_layout()
    return fig


def figure_html(fig: Figure, *, dpi: int = 100) -> str:
    """``fig`` as an inline PNG ``<img>`` (closes the figure)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return f"<img src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def side_by_side(figures: Sequence[Figure], titles: Sequence[str]) -> str:
    """HTML placing figures next to each other under their titles (static output: papermill, nbval, exports)."""
    cells = "".join(
        f"<div style='margin-right:1.5em'><p><b>{html.escape(t)}</b></p>{figure_html(f)}</div>"
        for f, t in zip(figures, titles)
    )
    return f"<div style='display:flex;flex-wrap:wrap;align-items:flex-start'>{cells}</div>"


def joint_tsne_groups(views: Sequence[View]) -> list[list[View]]:
    """Views that share a teacher (one embedding space) go on one t-SNE map; others get a map of their own."""
    groups: dict[str, list[View]] = {}
    for v in views:
        groups.setdefault(v.teacher_dir, []).append(v)
    return list(groups.values())


def class_options(names: Sequence[str]) -> list[tuple[str, int]]:
    """``(name, index)`` pairs for a widget menu of classes."""
    return [(f"{i}: {n}" if n != str(i) else n, i) for i, n in enumerate(names)]


__all__ = [
    "Record",
    "View",
    "class_options",
    "joint_tsne_groups",
    "list_experiments",
    "load_experiment",
    "nearest_real",
    "neighbours_figure",
    "records_markdown",
    "select",
    "side_by_side",
    "summary_markdown",
    "synthetic_path",
    "terms_markdown",
    "terms_per_class",
    "toggled",
]
