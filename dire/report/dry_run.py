"""A profile's dry run (``dire reproduce --profile paper --dry-run``): every notebook of the profile end to end
on the CPU, through the same code a real run takes, on stand-in data at each dataset's true image size and
class count (:mod:`dire.data.standin`), with budgets cut to a step or two. It finds what would break on a GPU
(shapes, settings a method refuses, pretrained layouts, missing parameters) before anyone rents one.

What the dry run changes, and nothing else (:func:`dry_run_params`):

- budgets: the caps in :data:`CUTS` (steps, epochs, IPC 10, one seed, one 3-epoch MTT expert, G-VBSM's statistics
  over 32 images, ...), applied to every value of those names, nested ones included (``method_overrides``,
  ``dataset_overrides``), and to the methods' own settings of those names, which their per-dataset rows set;
- ``condense_classes = 2`` and ``teacher_overrides = {"epochs": 1, "batch_size": 32}``: two classes condensed
  per set, teachers trained one epoch on the stand-ins in batches that fit a CPU machine's memory; MTT's
  learnable lr frozen (``lr_lr = 0``: stand-in experts barely move);
- a torchvision weights name becomes a stand-in file of that network in torchvision's layout (random weights),
  loaded through the same local-file path;
- data, runs, tables and selections go under ``build/<profile>-dry-run/`` (tables and figures in its
  ``output/``), never ``figures/`` or ``runs/``: its tables are not results.

IPCs are capped at 10, so a table's IPC 10 and IPC 50 rows become one experiment; every (dataset, method,
variant, student) row still runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dire.data.standin import STANDIN_DATASETS, write_standin

# name -> cap; None values (e.g. student_epochs: the recipe's own) become the cap
CUTS: dict[str, int] = {
    "iterations": 2,
    "round_iterations": 1,
    "timed_steps": 2,
    "warmup": 1,
    "student_epochs": 1,
    "bank_per_class": 10,
    "ipc": 10,  # the paper's smallest IPC: MTT_SETTINGS and the real inits have rows for it
    "ipc_per_unit": 10,
    "classes_per_unit": 2,
    "holdout_per_class": 1,
    "max_start_epoch": 1,
    "num_experts": 1,
    "steps": 2,  # DWA's ascent steps per unit
    "syn_steps": 2,  # MTT's unrolled student steps
}
CONDENSE_CLASSES = 2
OUTPUT = "output"  # the notebooks' tables and figures, under build/<profile>-dry-run/ (its figures/ is the page's copy)
TEACHER_EPOCHS = 1
# MobileNetV2 and EfficientNet-B0 keep a stride-1 stem at 64 px, so a Tiny-ImageNet teacher batch of 256 (the
# recipe's) peaked at 20 GB of host memory here; the dry run's stand-in sets need no more than 32 per batch
TEACHER_BATCH = 32
# G-VBSM: real images its Conv statistics average over (the paper: the whole training set, 1 000 images of each
# stand-in class of ImageNet, a forward pass through each of its five teachers)
STATS_IMAGES = 32
EXPERT_EPOCHS = 3  # MTT: max_start_epoch 1 - 1 + expert_epochs (2 or 3 in MTT_SETTINGS)
# stand-in sizes: every class one image (two on CIFAR, for a validation split), the condensed ones ten
STANDIN_SIZES = {"cifar10": 2, "cifar100": 2, "tiny-imagenet": 1, "imagenet": 1}


def cut_budgets(value: Any) -> Any:
    """``value`` with every entry named in :data:`CUTS` capped, at any depth of dicts and lists."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if key in CUTS and (item is None or isinstance(item, int)):
                out[key] = CUTS[key] if item is None else min(item, CUTS[key])
            elif key == "ipcs":
                out[key] = sorted({min(i, CUTS["ipc"]) for i in item})
            elif key == "seeds":
                out[key] = list(item)[:1]
            else:
                out[key] = cut_budgets(item)
        return out
    if isinstance(value, list):
        return [cut_budgets(v) for v in value]
    return value


def datasets_of(params: Mapping) -> set[str]:
    """The datasets a notebook's parameters name (``dataset``, ``datasets``)."""
    names = set(params.get("datasets") or [])
    return names | ({params["dataset"]} if params.get("dataset") else set())


def standin_weights(weights: str, folder: Path) -> Path:
    """A file of torchvision's ``weights`` network (its layout, its class count) with random weights."""
    import torchvision

    entry = torchvision.models.get_weight(weights)
    arch = weights.split(".")[0].removesuffix("_Weights").lower()
    path = folder / f"{arch}-standin.pth"
    if not path.exists():
        torch.manual_seed(0)
        model = torchvision.models.get_model(arch, weights=None, num_classes=len(entry.meta["categories"]))
        folder.mkdir(parents=True, exist_ok=True)
        from dire.runs import atomic_save

        atomic_save(model.state_dict(), path)
    return path


def _weights_to_files(value: Any, folder: Path) -> Any:
    if isinstance(value, Mapping):
        return {
            k: standin_weights(v, folder).as_posix()
            if k == "teacher_weights" and isinstance(v, str) and "_Weights." in v
            else _weights_to_files(v, folder)
            for k, v in value.items()
        }
    return value


def dry_run_params(params: Mapping, known: set[str], root: Path) -> dict:
    """The profile's ``params`` for one notebook (whose parameters are ``known``) as its dry run runs them."""
    out = _weights_to_files(cut_budgets(dict(params)), root / "weights")
    extra: dict[str, Any] = {
        "condense_classes": CONDENSE_CLASSES,
        "teacher_overrides": {
            **params.get("teacher_overrides", {}),
            "epochs": TEACHER_EPOCHS,
            "batch_size": TEACHER_BATCH,
        },
        "data_root": (root / "data").as_posix(),
        "runs_root": (root / "runs").as_posix(),
        "figures_root": (root / OUTPUT).as_posix(),
        "download": False,
        "selection_out": (root / "selected.json").as_posix(),
    }
    out |= {k: v for k, v in extra.items() if k in known}
    if "method_overrides" in known:
        out["method_overrides"] = _method_cuts(out.get("method_overrides", {}))
    return out


def _method_cuts(overrides: Mapping[str, Mapping]) -> dict[str, dict]:
    """``overrides`` with every method's own budget fields (a :data:`CUTS` name among its settings, e.g. DWA's
    ``steps`` or MTT's ``syn_steps``) capped: a method takes those from its published per-dataset row (MTT's
    Tiny-ImageNet row unrolls 20 student steps over 200 images), which the profile's cut values never reach."""
    import dataclasses

    from dire.synthesis import METHODS

    out = {name: dict(own) for name, own in overrides.items()}
    for name, method in METHODS.items():
        own = out.setdefault(name, {})
        for f in dataclasses.fields(method):
            if f.name in CUTS:
                value = own.get(f.name)  # None (the method's row decides) is capped too, as in cut_budgets
                own[f.name] = CUTS[f.name] if value is None else min(value, CUTS[f.name])
    out["mtt"]["experts"] = {**out["mtt"].get("experts", {}), "num_experts": 1, "epochs": EXPERT_EPOCHS}
    # stand-in experts barely move, so the trajectory-normalised loss sends a learnable lr anywhere (seen:
    # -2e10 after two steps); the dry run keeps syn_lr at its start
    out["mtt"]["lr_lr"] = 0.0
    out["gvbsm"]["stats_images"] = STATS_IMAGES
    return {name: own for name, own in out.items() if own}


def write_standins(names: set[str], root: Path) -> None:
    """Stand-ins of every dataset in ``names`` that has one, under ``root/data``."""
    for name in sorted(names & set(STANDIN_DATASETS)):
        write_standin(name, root / "data", per_class=STANDIN_SIZES[name], rich_classes=CONDENSE_CLASSES)
