"""Peak host memory of the ImageNet data path as the image count grows: streamed (now) vs stacked (before).

Writes ImageNet-layout folders (``imagenet/train/<wnid>/*.JPEG``, ``imagenet/val/<wnid>/*.JPEG``) of growing size with
few classes, so the images per class grow with the total; smooth random-content 256x256 JPEGs (the ImageNet loader
resizes the shorter side to 256 and center-crops 224). For each size, a fresh subprocess runs what the pipeline runs
on real data before synthesis: the real embedding bank with ``per_class`` above the class size (whole classes), one
teacher epoch, and test accuracy, with a cheap 224-px network (a strided-conv stem; the point is memory, not accuracy).

``stream`` is the code as it is: the bank decodes and embeds a batch at a time through the loader's worker processes.
``stack`` is the computation before it, kept in this script: each class decoded into a list, stacked, normalized,
then embedded, all in one process (and the old default of 0 loader workers for the epoch and the test).

Peak RSS is ``ru_maxrss`` of the child itself (``main``) and of its reaped children (``workers``: the largest loader
worker; ``import torch`` here forks a helper of ~430 MiB, the floor of that column). A forked worker's RSS counts the
parent's pages it touches.

The children run with one torch thread by default: on a loaded 2-core machine the 2-thread OpenMP pool made the
per-image normalisation 50-100x slower (measured 19 ms vs 0.2 ms for one 224-px image); loader workers run with one
thread anyway.

    python benchmarks/memory_scaling.py [--sizes 2000 8000 32000] [--classes 8] [--workers 2] [--no-stack]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from dire.data import load_dataset
from dire.nets.bank import real_embedding_bank
from dire.nets.models import Classifier, features_and_logits
from dire.nets.train import Recipe, accuracy, fit, loader

MIB = 1024  # ru_maxrss is in KiB on Linux


def write_pool(root: Path, *, classes: int, train_per_class: int, val_per_class: int, seed: int = 0) -> Path:
    """The largest folder's images, once: ``root/pool/{train,val}/<wnid>/<wnid>_<k>.JPEG``. Smooth random content
    (an 8x8 random image upsampled) keeps the files small and the encoding fast; every image differs."""
    pool = root / "pool"
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = pool / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                small = Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
                small.resize((256, 256), Image.BILINEAR).save(folder / f"n{c:08d}_{k}.JPEG", quality=85)
    return pool


def size_folder(pool: Path, root: Path, *, classes: int, train_per_class: int, val_per_class: int) -> Path:
    """An ImageNet folder holding the first images of each pool class (hard links: no copies on disk)."""
    base = root / f"n{classes * train_per_class}" / "imagenet"
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            wnid = f"n{c:08d}"
            (base / split / wnid).mkdir(parents=True, exist_ok=True)
            for k in range(count):
                os.link(pool / split / wnid / f"{wnid}_{k}.JPEG", base / split / wnid / f"{wnid}_{k}.JPEG")
    return base.parent


def cheap_model(num_classes: int) -> Classifier:
    """A 224-px network costing ~3 MFLOP per image: memory is measured, so decoding should dominate the time."""
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Conv2d(3, 16, 8, stride=8),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return Classifier(body, 32, num_classes)


@torch.no_grad()
def stacked_bank(model: nn.Module, train, *, per_class: int, batch_size: int) -> int:
    """The bank as it was computed before streaming, in one process: every class's draw decoded into a list,
    stacked, normalized, then embedded in slices whose results were concatenated. Returns its rows."""
    model.eval()
    rows = 0
    for c in range(train.info.num_classes):
        idx = train.class_indices(c, limit=per_class, generator=torch.Generator().manual_seed(c))  # seed 0
        images = train.info.normalize(torch.stack([train._pixels(int(i)) for i in idx]))
        z = [features_and_logits(model, images[i : i + batch_size])[0] for i in range(0, len(images), batch_size)]
        rows += len(torch.cat(z))
    return rows


def peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / MIB


def child(args: argparse.Namespace) -> None:
    """One size, one mode; prints a JSON line of seconds and peak RSS per phase."""
    torch.set_num_threads(args.threads)
    stack = args.child == "stack"
    workers = 0 if stack else args.workers  # before streaming, every default was 0 workers
    train = load_dataset("imagenet", root=args.data, expect_classes=args.classes)
    test = load_dataset("imagenet", split="val", root=args.data, expect_classes=args.classes)
    model = cheap_model(args.classes)
    out = {"images": len(train), "test_images": len(test), "mode": args.child, "workers": workers}
    per_class = len(train)  # above any class's size: whole classes

    t = time.perf_counter()
    if stack:
        out["bank_rows"] = stacked_bank(model, train, per_class=per_class, batch_size=args.batch_size)
    else:
        bank = real_embedding_bank(model, train, per_class=per_class, batch_size=args.batch_size, workers=workers)
        out["bank_rows"] = int(bank.count.sum())
    out["bank_s"] = time.perf_counter() - t
    out["rss_after_bank_mib"] = peak_mib(resource.RUSAGE_SELF)

    recipe = Recipe(epochs=1, batch_size=args.batch_size, lr=0.01)

    def batches(epoch: int):
        order = torch.Generator().manual_seed(epoch)
        yield from loader(train, batch_size=recipe.batch_size, shuffle=True, generator=order, workers=workers)

    t = time.perf_counter()
    fit(
        model,
        batches,
        recipe,
        loss_fn=lambda logits, _x, y: F.cross_entropy(logits, y),
        steps_per_epoch=-(-len(train) // recipe.batch_size),
        generator=torch.Generator().manual_seed(0),
    )
    out["epoch_s"] = time.perf_counter() - t
    t = time.perf_counter()
    out["test_acc"] = accuracy(model, test, batch_size=args.batch_size, workers=workers)
    out["test_s"] = time.perf_counter() - t
    out["rss_main_mib"] = peak_mib(resource.RUSAGE_SELF)
    out["rss_workers_mib"] = peak_mib(resource.RUSAGE_CHILDREN)
    print(json.dumps(out))


def available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / MIB
    return float("inf")


def run_child(mode: str, data: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--data", str(data), "--classes", str(args.classes)]
    cmd += ["--workers", str(args.workers), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000], help="training images")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--val-fraction", type=float, default=0.125, help="test images per training image")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the streamed path")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    parser.add_argument("--no-stack", action="store_true", help="skip the stacking path")
    parser.add_argument("--root", type=Path, default=None, help="where to write the folders (default: a temp dir)")
    parser.add_argument("--child", choices=("stream", "stack"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    per = [n // args.classes for n in args.sizes]
    val = [max(1, round(p * args.val_fraction)) for p in per]
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}")
    print(f"{args.classes} classes, 256x256 JPEGs (center-cropped to 224), batch {args.batch_size}, ", end="")
    print(f"{args.threads} torch thread(s) per child, streamed path with {args.workers} loader workers")
    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        pool = write_pool(root, classes=args.classes, train_per_class=max(per), val_per_class=max(val))
        print(f"wrote {args.classes * (max(per) + max(val))} JPEGs in {time.perf_counter() - t:.0f} s\n")
        header = "| train images | per class | test images | streamed: peak RSS main / workers MiB | time s "
        header += "| stacked: peak RSS MiB | time s |"
        print(header)
        print("|---:|---:|---:|---:|---:|---:|---:|")
        details = []
        for p, v in zip(per, val):
            data = size_folder(pool, root, classes=args.classes, train_per_class=p, val_per_class=v)
            s = run_child("stream", data, args)
            details.append(s)
            row = f"| {s['images']} | {p} | {s['test_images']} | {s['rss_main_mib']:.0f} / {s['rss_workers_mib']:.0f} "
            row += f"| {s['bank_s'] + s['epoch_s'] + s['test_s']:.0f} "
            need = 3 * p * 3 * 224 * 224 * 4 / 2**20  # a class as float: listed images, stacked, normalized
            if args.no_stack:
                row += "| - | - |"
            elif need > available_mib() / 2:
                row += f"| skipped (needs ~{need:.0f} MiB) | - |"
            else:
                k = run_child("stack", data, args)
                details.append(k)
                row += f"| {k['rss_main_mib']:.0f} | {k['bank_s'] + k['epoch_s'] + k['test_s']:.0f} |"
            print(row, flush=True)
    print("\nper child (seconds per phase; rss_after_bank_mib: the main process's peak once the bank was built):")
    for d in details:
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in d.items()}))


if __name__ == "__main__":
    main()
