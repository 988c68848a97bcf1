"""What both student protocols share: the synthetic set's shape check and the cached per-seed loop."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from dire.data import DatasetInfo
from dire.runs import read_json, run_dir, write_json


def check_synthetic(synthetic: dict, info: DatasetInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """``synthetic``'s images and labels, after checking the images are [N, C, H, W] at ``info``'s shape."""
    images, labels = synthetic["images"], synthetic["labels"]
    if images.dim() != 4 or images.shape[1:] != (info.channels, info.image_size, info.image_size):
        raise ValueError(
            f"expected synthetic images [N, {info.channels}, {info.image_size}, {info.image_size}]; "
            f"got {tuple(images.shape)}"
        )
    return images, labels


def summarize(values: Iterable[float]) -> dict:
    """``{"mean", "std", "n"}`` over the values that are not NaN (sample std; 0 for one value, NaN mean for none)."""
    kept = [v for v in values if not math.isnan(v)]
    return {
        "mean": statistics.fmean(kept) if kept else math.nan,
        "std": statistics.stdev(kept) if len(kept) > 1 else 0.0,
        "n": len(kept),
    }


def per_seed(
    seeds: Sequence[int],
    train: Callable[[int], dict],
    *,
    stage: str,
    config: dict | None = None,
    runs_root: str | Path | None = None,
) -> dict:
    """``train(seed)`` for each seed, each result cached under ``run_dir(stage, {**config, "seed": seed})`` when
    ``config`` is given (a rerun resumes); returns ``{"final", "best"}`` as mean ± std and the ``runs``."""
    if not seeds:
        raise ValueError("seeds is empty; give at least one student seed")
    runs = []
    for seed in seeds:
        path = None if config is None else run_dir(stage, {**config, "seed": seed}, root=runs_root) / "result.json"
        if path is not None and path.exists():
            runs.append(read_json(path))
            continue
        result = {"seed": seed, **train(seed)}
        if path is not None:
            write_json(path, result)
        runs.append(result)
    return {"final": summarize(r["final"] for r in runs), "best": summarize(r["best"] for r in runs), "runs": runs}
