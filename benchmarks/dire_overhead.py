"""DiRe's time and peak-memory overhead per synthesis step, baseline and + DiRe measured side by side.

The step is the shared loop's own (``dire.synthesis.base.run_unit``: SRe2L's CE + BN loss, DiRe, Adam,
clamp), on a randomly initialised BN teacher and a random real bank at a real shape; random weights
cost what trained ones cost, so no dataset or training is needed. Shapes:

- ``cifar100``: the DiRe release's recover: ResNet-18 at 32 px, a unit of 50 classes x 10 images,
  500 real 512-d embeddings per class;
- ``imagenet``: SRe2L's ImageNet-1K recover: ResNet-18 at 224 px, a unit of 100 classes x 1 image,
  100 real embeddings per class (of 1000 classes);
- ``small``: a CPU-sized check of the same code (ResNet-18 at 32 px, 10 classes x 5 images).

Each setting runs in its own process (``dire.experiments.profiling.run_in_fresh_process``), so the CPU
peak RSS and the CUDA allocator peak each belong to one configuration. Targets on a GPU: time <= +3 %,
peak memory <= +5 % (the paper reports +17 % / +23 %).

    python benchmarks/dire_overhead.py --device cuda --shape cifar100 [--steps 50] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

SHAPES = {  # image size, classes in the dataset, classes per unit, images per class, real per class
    "cifar100": dict(image_size=32, num_classes=100, classes=50, ipc=10, real=500),
    "imagenet": dict(image_size=224, num_classes=1000, classes=100, ipc=1, real=100),
    "small": dict(image_size=32, num_classes=10, classes=10, ipc=5, real=50),
}


def measure(*, shape: str, dire: bool, device: str, steps: int, warmup: int) -> dict:
    """Per-step time and peak memory of one unit of ``shape`` (run in a fresh process)."""
    import torch

    from dire.data.datasets import DatasetInfo, TensorImageDataset
    from dire.experiments.cost import measure_unit
    from dire.nets.models import build_model
    from dire.regularizer import RealBank
    from dire.synthesis import DiReConfig, SRe2L, SynthesisConfig
    from dire.synthesis.base import Context, plan_units

    s = SHAPES[shape]
    dev = torch.device(device)
    torch.manual_seed(0)
    info = DatasetInfo(f"{shape}-stand-in", s["num_classes"], s["image_size"], 3, (0.5,) * 3, (0.25,) * 3)
    one_per_class = torch.zeros(s["num_classes"], 3, s["image_size"], s["image_size"], dtype=torch.uint8)
    dataset = TensorImageDataset(
        info, one_per_class, torch.arange(s["num_classes"]), [str(c) for c in range(s["num_classes"])]
    )
    teacher = build_model("resnet18", num_classes=s["num_classes"], in_channels=3, image_size=s["image_size"])
    teacher = teacher.to(dev).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    emb = torch.rand(s["num_classes"], s["real"], teacher.feature_dim, generator=g)
    bank = RealBank.from_padded(emb.to(dev), torch.full((s["num_classes"],), s["real"], device=dev))
    config = SynthesisConfig(
        ipc=s["ipc"], iterations=steps, lr=0.1, ipc_per_unit=s["ipc"], classes_per_unit=s["classes"]
    )
    ctx = Context(teacher=teacher, dataset=dataset, config=config, device=dev, bank=bank)
    unit = plan_units(config, s["num_classes"])[0]
    method, reg = SRe2L(r_bn=1.0), DiReConfig(enabled=dire).module()
    out = measure_unit(method, ctx, unit, reg, warmup=warmup)
    cuda = "peak_cuda_allocated_bytes" in out
    peak = out["peak_cuda_allocated_bytes"] if cuda else out["peak_rss_bytes"]
    return {
        "shape": shape,
        "dire": dire,
        "device": out["device"],
        "images_per_step": out["images_per_step"],
        "step_s": out["step_s"],
        "peak_bytes": peak,
        "peak_kind": "cuda allocated" if cuda else "process peak RSS",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="small", choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=20, help="timed steps (one unit)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="baseline / + DiRe pairs, alternated")
    parser.add_argument("--out", default=None, help="folder for <shape>-<device>.json and .md (default: print only)")
    args = parser.parse_args()

    from dire.experiments.profiling import run_in_fresh_process
    from dire.runs import atomic_write_text

    runs = []
    for _ in range(args.repeats):  # alternate, so a drift of the machine hits both settings alike
        for dire in (False, True):
            kwargs = dict(shape=args.shape, dire=dire, device=args.device, steps=args.steps, warmup=args.warmup)
            runs.append(run_in_fresh_process("dire_overhead:measure", kwargs)["result"])
    base = [r for r in runs if not r["dire"]]
    reg = [r for r in runs if r["dire"]]
    step = {k: min(r["step_s"] for r in v) for k, v in (("base", base), ("dire", reg))}  # best of the repeats
    peak = {k: max(r["peak_bytes"] for r in v) for k, v in (("base", base), ("dire", reg))}
    time_pct = 100 * (step["dire"] / step["base"] - 1)
    mem_pct = 100 * (peak["dire"] / peak["base"] - 1)
    lines = [
        f"DiRe overhead per synthesis step: shape {args.shape} ({base[0]['images_per_step']} images per step), "
        f"device {args.device}, {platform.machine()}, {args.steps} timed steps, best of {args.repeats}",
        "| setting | step (ms) | peak memory (MiB) |",
        "|---|---|---|",
        f"| baseline | {step['base'] * 1e3:.2f} | {peak['base'] / 2**20:.0f} |",
        f"| + DiRe | {step['dire'] * 1e3:.2f} | {peak['dire'] / 2**20:.0f} |",
        "",
        f"time {time_pct:+.1f} % (target on a GPU: <= +3 %), peak memory {mem_pct:+.1f} % (target <= +5 %; "
        f"{base[0]['peak_kind']})",
    ]
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"dire_overhead-{args.shape}-{args.device.replace(':', '')}"
        atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
        record = {"runs": runs, "time_pct": time_pct, "memory_pct": mem_pct, "measured_at": time.time()}
        atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
