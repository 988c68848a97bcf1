"""The diversity metrics of one quick-01 set, with prdc's distance helper against the one-thread distances.

``dire.metrics`` computes every Coverage (prdc's formulas; ``prdc.compute_prdc`` is the tests' reference) from
pairwise distances. prdc's ``compute_pairwise_distance`` asks sklearn for ``n_jobs=8``, so every call starts a joblib
thread pool; a matched Coverage of 10 classes x 10 draws makes hundreds of 10 x 10 matrices, and a profile of one
quick-01 IPC 10 experiment spent 27 of its 188 s there. This times :func:`dire.metrics.diversity_metrics` on
random embeddings of that shape (``--classes`` x ``--real`` real and x ``--ipc`` fake rows of ``--dim``
features) both ways, alternating arms, and checks the two return the same numbers (to 1e-9).

    python benchmarks/metrics_speed.py [--ipc 10] [--real 500] [--classes 10] [--dim 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from prdc import prdc as prdc_impl

import dire.metrics as metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", type=int, default=10, help="fake rows per class (quick 01: 1, 10, 50)")
    ap.add_argument("--real", type=int, default=500, help="real rows per class (quick bank_per_class)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--dim", type=int, default=128, help="feature width (ConvNet-BN-W32: 128 at 28 px)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    real = rng.normal(size=(args.classes * args.real, args.dim)).astype(np.float32)
    fake = rng.normal(0.2, 1.0, size=(args.classes * args.ipc, args.dim)).astype(np.float32)
    real_y, fake_y = np.repeat(np.arange(args.classes), args.real), np.repeat(np.arange(args.classes), args.ipc)
    arms = {"prdc helper (n_jobs=8)": prdc_impl.compute_pairwise_distance, "one thread": metrics._distances}
    own = metrics._distances
    times: dict[str, list[float]] = {name: [] for name in arms}
    values = {}
    for _ in range(args.repeats):
        for name, distances in arms.items():
            metrics._distances = distances
            start = time.perf_counter()
            values[name] = metrics.diversity_metrics(fake, fake_y, real, real_y)
            times[name].append(time.perf_counter() - start)
    metrics._distances = own
    a, b = values.values()
    for key in a:
        assert np.isclose(a[key], b[key], rtol=1e-9, atol=1e-9, equal_nan=True), (key, a[key], b[key])
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    print(f"diversity_metrics, {args.classes} classes x {args.real} real / {args.ipc} fake, d {args.dim}")
    for name, seconds in times.items():
        print(f"  {name:24s} median {statistics.median(seconds):7.3f} s over {args.repeats}")
    old, new = (statistics.median(s) for s in times.values())
    print(f"  ratio: {old / new:.1f}x faster, same metrics to 1e-9")


if __name__ == "__main__":
    main()
