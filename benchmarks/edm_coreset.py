"""EDM against a k-means coreset of the real embeddings: error against the exact EDM, and speed-up.

Two coresets: k-means centres weighted by cluster size (``spread=False``, a lower bound on EDM), and the same
centres carrying their clusters' mean squared radius (``spread=True``, the default: each centre counts the
cluster's root-mean-square distance, an upper bound). Error (value and gradient) is measured on *real*
embeddings: the quick profile's Fashion-MNIST teacher
(ConvNet-BN-W32, trained and cached by ``dire.nets.teacher``) embeds ``--real`` training images per class for the bank
(500 as the release's bank, and 1300 as an ImageNet class has), and the synthetic side is ``--ipc`` other real
training images per class, as a synthetic set looks at real initialisation (DWA, DELT, UFC). CIFAR and ImageNet
embeddings cannot be made offline here, so the error is reported at this network's dimension.

Speed is forward + backward of the EDM term alone, exact and coreset, side by side in one run, at two shapes
(timing does not depend on the values, so random embeddings stand in):

* release: the DiRe release's CIFAR-100 unit, 50 classes x 10 synthetic images, 500 real per class, 512-d;
* imagenet: 100 of 1000 classes x 10 synthetic images per step, 1300 real per class, 512-d.

The one-off k-means build is timed too (per class; a bank builds it once).

    python benchmarks/edm_coreset.py [--sizes 1,2,4,...] [--device cpu] [--skip-error] [--skip-speed]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.utils import benchmark

from dire.regularizer import RealBank, batched_terms


def edm_and_grad(z: torch.Tensor, labels: torch.Tensor, bank: RealBank) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.detach().clone().requires_grad_()
    edm = batched_terms(z, labels, bank, terms=("edm",))["edm"]
    (grad,) = torch.autograd.grad(edm.sum(), z)
    return edm.detach(), grad


def real_embeddings(per_class: int, ipc: int, *, runs_root: str, data_root: str, device: str):
    """(bank of ``per_class`` real embeddings per class, ``ipc`` other real embeddings per class, their labels)."""
    from dire.data import load_dataset
    from dire.nets.models import embed_images
    from dire.nets.teacher import get_teacher

    teacher, record = get_teacher(
        "fashion-mnist",
        "convnet_bn_w32",
        recipe="cpu",
        runs_root=runs_root,
        data_root=data_root,
        device=device,
        download=True,
    )
    train = load_dataset("fashion-mnist", root=data_root, download=True)
    real, syn, labels = {}, [], []
    for c in range(train.info.num_classes):
        images = train.class_images(c, limit=per_class + ipc, generator=torch.Generator().manual_seed(c))
        emb = embed_images(teacher, images, device=device)
        real[c], syn = emb[:per_class], syn + [emb[per_class:]]
        labels.append(torch.full((ipc,), c))
    return RealBank.from_dict(real), torch.cat(syn), torch.cat(labels), record["test_acc"]


def error_table(sizes: list[int], *, per_class: int, ipc: int, **where) -> list[str]:
    bank, z, labels, acc = real_embeddings(per_class, ipc, **where)
    bank64, z64 = bank.to("cpu", torch.float64), z.double()
    exact, grad = edm_and_grad(z64, labels, bank64)
    lines = [
        f"### error on real embeddings: Fashion-MNIST, ConvNet-BN-W32 teacher ({acc:.2f} %), "
        f"{bank.emb.shape[-1]}-d, {per_class} real and {ipc} synthetic (real-init) per class, float64",
        "",
        "EDM error: max over classes of |coreset - exact| / exact; gradient error: ||g - g_exact|| / ||g_exact||.",
        "",
        "| centres per class | EDM error, centres | gradient error, centres | EDM error, centres + spread | "
        "gradient error, centres + spread | k-means s/class |",
        "|---|---|---|---|---|---|",
    ]
    under = {False: None, True: None}
    for k in sizes:
        if k > per_class:
            continue
        start = time.perf_counter()
        spread = bank64.coreset(k)
        build = (time.perf_counter() - start) / len(bank.classes)
        # the same centres without their spread: only the squared norms differ, so k-means runs once
        core = RealBank(
            spread.emb, spread.count, (spread.emb * spread.emb).sum(-1), spread.unit_mean, spread.classes, spread.weight
        )
        cells = []
        for with_spread, b in ((False, core), (True, spread)):
            value, g = edm_and_grad(z64, labels, b)
            err_v, err_g = float(((exact - value).abs() / exact).max()), float((grad - g).norm() / grad.norm())
            if under[with_spread] is None and max(err_v, err_g) < 0.01:
                under[with_spread] = k
            cells += [f"{err_v:.2e}", f"{err_g:.2e}"]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {build:.3f} |")
    for with_spread, name in ((False, "centres"), (True, "centres + spread")):
        k = under[with_spread]
        lines.append(
            f"- {name}: value and gradient errors both under 1 % from {k} centres per class"
            if k
            else f"- {name}: not under 1 % at these sizes"
        )
    return lines + [""]


def speed_table(
    sizes: list[int],
    *,
    name: str,
    classes: int,
    step_classes: int,
    ipc: int,
    real: int,
    dim: int,
    device: str,
    min_run_time: float,
) -> list[str]:
    g = torch.Generator().manual_seed(0)
    # only the step's classes enter the computation; the rest of the bank is never touched by this step
    bank = RealBank.from_dict({c: torch.randn(real, dim, generator=g) for c in range(step_classes)}).to(device)
    labels = torch.arange(step_classes).repeat_interleave(ipc).to(device)
    z = torch.randn(len(labels), dim, generator=g).to(device)

    def timed(b: RealBank) -> float:
        stmt = "edm_and_grad(z, labels, bank)"
        t = benchmark.Timer(stmt, globals={"edm_and_grad": edm_and_grad, "z": z, "labels": labels, "bank": b})
        return t.blocked_autorange(min_run_time=min_run_time).median

    exact = timed(bank)
    lines = [
        f"### speed: {name}: {step_classes} classes x {ipc} synthetic per step, {real} real per class "
        f"(a {classes}-class bank, of which a step reads only its own classes), {dim}-d, float32, {device}",
        "",
        "| centres per class | EDM fwd+bwd ms | speed-up vs exact | k-means build s/class |",
        "|---|---|---|---|",
        f"| exact ({real}) | {exact * 1e3:.2f} | 1.0x | - |",
    ]
    for k in sizes:
        if k >= real:
            continue
        start = time.perf_counter()
        core = RealBank.from_dict({c: bank.emb[c, :real].cpu() for c in range(2)}).coreset(k)  # build time on 2 classes
        build = (time.perf_counter() - start) / 2
        # timing needs only the shape: k centres per class, cluster sizes summing to `real`
        shaped = RealBank(
            bank.emb[:, :k].contiguous(),
            torch.full_like(bank.count, k),
            bank.sq_norm[:, :k].contiguous(),
            bank.unit_mean,
            bank.classes,
            torch.full((step_classes, k), real / k, device=device),
        )
        assert core.emb.shape[1] == k
        t = timed(shaped)
        lines.append(f"| {k} | {t * 1e3:.2f} | {exact / t:.1f}x | {build:.3f} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--runs-root", default="runs")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--skip-error", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"# EDM coreset: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, device {args.device}\n"
    )
    where = dict(runs_root=args.runs_root, data_root=args.data_root, device=args.device)
    lines = []
    if not args.skip_error:
        for per_class in (500, 1300):
            lines += error_table(sizes, per_class=per_class, ipc=args.ipc, **where)
    if not args.skip_speed:
        lines += speed_table(
            sizes,
            name="release (CIFAR-100 unit)",
            classes=100,
            step_classes=50,
            ipc=args.ipc,
            real=500,
            dim=512,
            device=args.device,
            min_run_time=args.min_run_time,
        )
        lines += speed_table(
            sizes,
            name="ImageNet-like",
            classes=1000,
            step_classes=100,
            ipc=args.ipc,
            real=1300,
            dim=512,
            device=args.device,
            min_run_time=args.min_run_time,
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
