"""What both student protocols share: the synthetic set's shape check, its pixels staged for training, and the
cached per-seed loop."""

from __future__ import annotations

import functools
import hashlib
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

import dire.distributed as distributed
from dire.data import DatasetInfo, from_uint8
from dire.runs import claim, lock, read_json, run_dir, write_json


def check_synthetic(synthetic: dict, info: DatasetInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """``synthetic``'s images and labels, after checking the images are [N, C, H, W] at ``info``'s shape."""
    images, labels = synthetic["images"], synthetic["labels"]
    if images.dim() != 4 or images.shape[1:] != (info.channels, info.image_size, info.image_size):
        raise ValueError(
            f"expected synthetic images [N, {info.channels}, {info.image_size}, {info.image_size}]; "
            f"got {tuple(images.shape)}"
        )
    return images, labels


#: the share of the device's free memory a synthetic set's uint8 pixels may take to stay there; a larger set
#: stays on the host and each batch is copied over (ImageNet-1K at IPC 50 is 7.5 GB of uint8, 30 GB as float)
DEVICE_SET_FRACTION = 0.25


class SyntheticPixels:
    """A synthetic set's stored uint8 pixels, decoded to normalized float one batch at a time on ``device``.

    The pixels go to ``device`` whole when they take at most ``fraction`` of its free memory (always on a CPU);
    otherwise they stay on the host and each gathered batch is pinned and copied without blocking. Decoding is
    elementwise, so a batch holds the very values indexing the whole set decoded at once would give."""

    def __init__(
        self,
        pixels: torch.Tensor,
        info: DatasetInfo,
        device: str | torch.device = "cpu",
        *,
        fraction: float = DEVICE_SET_FRACTION,
    ):
        if pixels.dtype != torch.uint8:
            raise TypeError(f"synthetic images must be stored uint8 pixels (dire.data.to_uint8); got {pixels.dtype}")
        self.info, self.device = info, torch.device(device)
        self.pixels = pixels.to(self.device) if fits_on(self.device, pixels, fraction) else pixels.cpu()

    def __len__(self) -> int:
        return len(self.pixels)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Normalized float images at ``idx`` (any device), on the target device."""
        x = self.pixels[idx.to(self.pixels.device)]
        if x.device != self.device:
            x = x.pin_memory().to(self.device, non_blocking=True)
        return from_uint8(x, self.info)


def fits_on(device: torch.device, tensor: torch.Tensor, fraction: float) -> bool:
    """Whether ``tensor`` may live on ``device``: a CPU always; a CUDA device if it takes at most ``fraction`` of
    the memory free there now."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return tensor.numel() * tensor.element_size() <= fraction * free


def summarize(values: Iterable[float]) -> dict:
    """``{"mean", "std", "n"}`` over the values that are not NaN (sample std; 0 for one value, NaN mean for none)."""
    kept = [v for v in values if not math.isnan(v)]
    return {
        "mean": statistics.fmean(kept) if kept else math.nan,
        "std": statistics.stdev(kept) if len(kept) > 1 else 0.0,
        "n": len(kept),
    }


def check_seeds(seeds: Sequence[int]) -> None:
    """At least one seed: checked before any work starts (student seeds, and a table's seeds)."""
    if len(seeds) == 0:
        raise ValueError("seeds is empty; give at least one seed, e.g. [0]")


def synthetic_digest(synthetic: dict) -> str:
    """SHA-256 of a synthetic set's pixels and labels: what a cached student result was trained on."""
    h = hashlib.sha256()
    for key in ("images", "labels"):
        h.update(synthetic[key].contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def paired_difference(treated: Sequence[float], baseline: Sequence[float], *, confidence: float = 0.95) -> dict:
    """The mean per-seed difference ``treated - baseline`` (seed s against seed s) with a two-sided paired-t
    confidence interval: ``{"delta", "low", "high", "n", "excludes_zero"}``; one pair, or a NaN among the
    values, gives no interval (NaN bounds)."""
    from scipy import stats

    if len(treated) != len(baseline) or not treated:
        raise ValueError(f"need the same, non-zero number of paired seeds; got {len(treated)} and {len(baseline)}")
    d = [float(a) - float(b) for a, b in zip(treated, baseline)]
    n, delta = len(d), statistics.fmean(d)
    if n < 2 or math.isnan(delta):  # one pair, or an undefined metric (intra-class cosine at IPC 1)
        return {"delta": delta, "low": math.nan, "high": math.nan, "n": n, "excludes_zero": False}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * statistics.stdev(d) / math.sqrt(n)
    low, high = delta - half, delta + half  # floats: a table's CSV holds this dict's repr
    return {"delta": delta, "low": low, "high": high, "n": n, "excludes_zero": bool(low > 0 or high < 0)}


def ddp_key(ddp: bool) -> dict:
    """What a student's cache key adds for ``ddp``: ``{"ddp": world size}`` when the ranks of torchrun train it
    together, nothing otherwise (so every key of one process, or of ranks splitting the seeds, is unchanged)."""
    return {"ddp": distributed.world_size()} if ddp and distributed.active() else {}


def per_seed(
    seeds: Sequence[int],
    train: Callable[[int, Path | None], dict],
    *,
    stage: str,
    config: dict | None = None,
    runs_root: str | Path | None = None,
    digest: str | None = None,
    together: bool = False,
) -> dict:
    """``train(seed, checkpoint)`` for each seed; returns ``{"final", "best"}`` as mean ± std and the ``runs``.

    With ``config`` each seed's result is cached in ``run_dir(stage, {**config, "seed": seed})`` (a rerun
    resumes; ``checkpoint`` is a file there for the student's epoch checkpoints), processes sharing the seeds
    split them (one lock per seed), and the result records ``digest`` (:func:`synthetic_digest`): a cached
    result whose set had other pixels is trained again. Under torchrun each rank trains its static share of the
    seeds (:func:`dire.distributed.my_share`: one seed per rank when there are as many ranks as seeds) and,
    after a barrier, every rank reads all the results; uncached (no ``config``), every rank trains them all.
    With ``together`` (a DDP student, ``train`` run by every rank at once) the ranks take every seed in turn,
    rank 0 holding its lock and writing its result."""
    check_seeds(seeds)
    if config is None:
        runs = [{"seed": seed, **train(seed, None)} for seed in seeds]
    else:
        folders = {seed: run_dir(stage, {**config, "seed": seed}, root=runs_root) for seed in seeds}

        def done(seed: int) -> bool:
            path = folders[seed] / "result.json"
            return path.exists() and read_json(path).get("synthetic_digest", digest) == digest

        def save(seed: int, result: dict) -> None:
            if digest is not None:
                result["synthetic_digest"] = digest
            write_json(folders[seed] / "result.json", result)
            (folders[seed] / "checkpoint.pt").unlink(missing_ok=True)

        if together and distributed.active():
            _together(seeds, train, folders, done, save)
        else:
            for seed in claim(distributed.my_share(seeds), lambda s: lock(folders[s]), done):
                save(seed, {"seed": seed, **train(seed, folders[seed] / "checkpoint.pt")})
        distributed.barrier()  # every rank's seeds are written
        for seed in seeds:  # a kill between writing a result and dropping its checkpoint leaves the checkpoint
            (folders[seed] / "checkpoint.pt").unlink(missing_ok=True)
        runs = [read_json(folders[seed] / "result.json") for seed in seeds]
    return {"final": summarize(r["final"] for r in runs), "best": summarize(r["best"] for r in runs), "runs": runs}


def _together(
    seeds: Sequence[int],
    train: Callable[[int, Path | None], dict],
    folders: dict[int, Path],
    done: Callable[[int], bool],
    save: Callable[[int, dict], None],
) -> None:
    """Every rank trains every seed not done, together; rank 0 holds the seed's lock (other processes sharing
    ``runs/`` wait for it) and saves the result."""
    for seed in seeds:
        with distributed.main_decides(folders[seed], functools.partial(done, seed)) as finished:
            if finished:
                continue
            result = {"seed": seed, **train(seed, folders[seed] / "checkpoint.pt")}
            if distributed.is_main():
                save(seed, result)
