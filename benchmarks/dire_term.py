"""DiRe term, forward + backward: batched module vs the release's per-class loop.

Setting (the release's CIFAR-100 recover): a block of 50 classes x 10 synthetic
images, 500 real embeddings per class, 512-d, float32. The loop follows the
release's arithmetic (torchmetrics pairwise_* with zero_diagonal=True, one class at
a time); the module runs with ``official=True`` so both compute the same value,
which is checked before timing. Also times the exact-definition module, and the
documented call with the real embeddings as a dict (the README's example), which must
cost what the prebuilt-bank call costs.

    python benchmarks/dire_term.py [--device cpu] [--classes 50] [--ipc 10] [--real 500] [--dim 512]
"""

from __future__ import annotations

import argparse
import platform

import torch
from torch.utils import benchmark
from torchmetrics.functional import pairwise_cosine_similarity, pairwise_euclidean_distance

from dire.regularizer import DiRe, RealBank


def release_loop(z, real, *, ipc, r_c=1.0, r_e=0.01, weight=0.1):
    """One class at a time, as the release computes it (its classes are consecutive blocks of ipc rows)."""
    loss = z.new_zeros(())
    for k, c in enumerate(sorted(real)):
        zc, rc = z[k * ipc : (k + 1) * ipc], real[c]
        a = pairwise_cosine_similarity(zc, zero_diagonal=True)
        b = pairwise_euclidean_distance(zc, rc, zero_diagonal=True)
        d = 1 - pairwise_cosine_similarity(zc, rc, zero_diagonal=True)
        loss = loss + r_c * a.abs().mean() + r_c * d.abs().mean() + r_e * b.mean()
    return weight * loss


# operators that only allocate or make views: no kernel on a GPU
NO_KERNEL = {
    "empty", "empty_strided", "view", "as_strided", "expand", "transpose", "t", "slice", "select", "unsqueeze",
    "squeeze", "permute", "reshape", "_unsafe_view", "alias", "detach", "resize_", "lift_fresh", "result_type",
}  # fmt: skip


def op_counts(step, fn) -> tuple[int, int]:
    """(operators, matrix products) one forward + backward dispatches: on a GPU each compute operator is at
    least one kernel launch, so this counts launches without a GPU."""
    from torch.profiler import ProfilerActivity, profile

    import dire.regularizer

    chunk, dire.regularizer.CPU_CHUNK_BYTES = dire.regularizer.CPU_CHUNK_BYTES, 1 << 62  # as on a GPU: one chunk
    try:
        step(fn)  # warm: a first call may build caches
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(fn)
    finally:
        dire.regularizer.CPU_CHUNK_BYTES = chunk
    # leaf operators only: an operator that calls others (e.g. linear -> addmm) is one launch at most
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    names = [e.name for e in events if not e.cpu_children and e.name.removeprefix("aten::") not in NO_KERNEL]
    gemm = sum(e.name in ("aten::bmm", "aten::mm", "aten::addmm", "aten::baddbmm") for e in events)
    return len(names), gemm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--real", type=int, default=500)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--min-run-time", type=float, default=2.0)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    # non-negative, like the post-ReLU average-pool embeddings the release regularises
    z0 = torch.rand(args.classes * args.ipc, args.dim, generator=g).to(args.device)
    real = {c: torch.rand(args.real, args.dim, generator=g).to(args.device) for c in range(args.classes)}
    labels = torch.arange(args.classes, device=args.device).repeat_interleave(args.ipc)
    bank = RealBank.from_dict(real)
    official, exact = DiRe(official=True), DiRe()

    def step(fn):
        z = z0.clone().requires_grad_()
        fn(z).backward()
        return z.grad

    loop_fn = lambda z: release_loop(z, real, ipc=args.ipc)  # noqa: E731
    official_fn = lambda z: official(z, labels, bank)  # noqa: E731
    exact_fn = lambda z: exact(z, labels, bank)  # noqa: E731
    documented = DiRe()
    dict_fn = lambda z: documented(z, labels, real)  # noqa: E731  the README's call: a dict, converted once

    with torch.no_grad():
        v_loop, v_off, v_exact = float(loop_fn(z0)), float(official_fn(z0)), float(exact_fn(z0))
    g_loop, g_off = step(loop_fn), step(official_fn)
    rel = abs(v_loop - v_off) / abs(v_loop)
    grad_rel = float((g_loop - g_off).norm() / g_loop.norm())
    print(
        f"value: release loop {v_loop:.6f}  batched official {v_off:.6f}  (rel. diff {rel:.1e}); "
        f"exact definition {v_exact:.6f}"
    )
    print(f"gradient rel. diff (loop vs batched official): {grad_rel:.1e}")
    if rel > 1e-4 or grad_rel > 1e-3:
        raise SystemExit("values differ: the batched module does not reproduce the release's arithmetic")

    def timed(fn, label):
        t = benchmark.Timer(
            "step(fn)",
            globals={"step": step, "fn": fn},
            num_threads=torch.get_num_threads(),
            label="DiRe term fwd+bwd",
            description=label,
        )
        return t.blocked_autorange(min_run_time=args.min_run_time).median

    t_loop, t_off, t_exact = timed(loop_fn, "loop"), timed(official_fn, "official"), timed(exact_fn, "exact")
    t_dict = timed(dict_fn, "exact, dict")
    # the floor of any exact EDM: its two matrix products alone (distances, then their gradient), no other work
    Zp, R = z0.view(args.classes, args.ipc, args.dim), bank.emb
    W = torch.rand(args.classes, args.ipc, args.real, generator=g).to(args.device)
    gemms = lambda: (torch.bmm(Zp, R.transpose(1, 2)), torch.bmm(W, R))  # noqa: E731
    t_gemm = benchmark.Timer("f()", globals={"f": gemms}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=args.min_run_time
    )
    t_gemm = t_gemm.median
    ops = {k: op_counts(step, f) for k, f in (("loop", loop_fn), ("official", official_fn), ("exact", exact_fn))}
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"device {args.device}, torch {torch.__version__}"
    )
    print(f"setting: {args.classes} classes x {args.ipc} images, {args.real} real/class, {args.dim}-d, float32")
    launches = {k: f"   {n} operators, {g} matrix products" for k, (n, g) in ops.items()}
    print(f"release per-class loop      {t_loop * 1e3:8.2f} ms{' ' * 17}{launches['loop']}")
    print(f"batched, official=True      {t_off * 1e3:8.2f} ms   speed-up x{t_loop / t_off:4.1f}{launches['official']}")
    print(f"batched, exact definition   {t_exact * 1e3:8.2f} ms   speed-up x{t_loop / t_exact:4.1f}{launches['exact']}")
    print(f"EDM's two GEMMs alone       {t_gemm * 1e3:8.2f} ms   ceiling of an exact term x{t_loop / t_gemm:4.1f}")
    print(
        f"documented call (dict)      {t_dict * 1e3:8.2f} ms   speed-up x{t_loop / t_dict:.1f}   "
        f"(dict / bank x{t_dict / t_exact:.2f})"
    )


if __name__ == "__main__":
    main()
