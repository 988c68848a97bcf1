"""Synthesis cost: time per image, peak memory, and DiRe's share of a step (paper's cost table).

:func:`measure_synthesis` is meant to run in a fresh process (``dire.profiling.run_in_fresh_process``)
so that the CPU peak RSS belongs to one configuration alone; on CUDA it reports the
allocator's peak.
"""

from __future__ import annotations

import time

import torch


def measure_synthesis(*, dataset: str, dire: bool, ipc_per_unit: int = 10, classes_per_unit: int | None = None,
                      iterations: int = 20, warmup: int = 2, teacher_arch: str = "convnet_bn",
                      teacher_recipe: str = "cpu", bank_per_class: int = 500, r_bn: float = 0.01, lr: float = 0.25,
                      device: str = "cpu", data_root: str = "data", runs_root: str = "runs",
                      download: bool = False) -> dict:
    """Time ``iterations`` optimisation steps of one synthesis unit (after ``warmup`` steps).

    Returns seconds per step and per image-step, the DiRe term's forward + backward
    time per step and its share of the step, and peak memory (CUDA allocator peak, or
    this process's peak RSS on the CPU). The teacher and bank come from the cache
    (trained if missing, before timing starts).
    """
    from dire.bank import cached_bank
    from dire.data import load_dataset
    from dire.profiling import timed
    from dire.synthesis import DiReConfig, SRe2L, SynthesisConfig
    from dire.synthesis.base import Context, plan_units
    from dire.teacher import get_teacher

    dev = torch.device(device)
    train = load_dataset(dataset, root=data_root, download=download)
    teacher, rec = get_teacher(dataset, teacher_arch, recipe=teacher_recipe, data_root=data_root, runs_root=runs_root,
                               device=dev, progress=False, download=download)
    bank, _ = cached_bank(teacher, rec, train, per_class=bank_per_class, device=dev, runs_root=runs_root)
    config = SynthesisConfig(ipc=ipc_per_unit, iterations=iterations + warmup, lr=lr, ipc_per_unit=ipc_per_unit,
                             classes_per_unit=classes_per_unit)
    ctx = Context(teacher=teacher.eval().requires_grad_(False), dataset=train, config=config, device=dev, bank=bank)
    unit = plan_units(config, train.info.num_classes)[0]
    method, reg = SRe2L(r_bn=r_bn), DiReConfig(enabled=dire).module()
    g = torch.Generator().manual_seed(0)
    x = method.init_images(ctx, unit, g).to(dev).requires_grad_()
    labels = unit.labels(dev)
    opt = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.9))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    step_s, dire_s = [], []
    for it in range(iterations + warmup):
        with timed(dev) as total:
            step = method.loss(ctx, unit, x, labels, it, g)
            loss = step.loss
            if reg is not None:
                with timed(dev) as part:  # the DiRe term's own forward + backward, measured apart
                    extra = reg(step.embeddings.detach().requires_grad_(), labels, bank)
                    extra.backward()
                dire_s.append(part.seconds)
                loss = loss + reg(step.embeddings, labels, bank)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if it >= warmup:
            step_s.append(total.seconds - (dire_s[-1] if reg is not None else 0.0))
    images = len(labels)
    per_step = sum(step_s) / len(step_s)
    dire_step = sum(dire_s[warmup:]) / max(len(dire_s[warmup:]), 1) if reg is not None else 0.0
    if dev.type == "cuda":
        memory = {"peak_cuda_allocated_bytes": torch.cuda.max_memory_allocated(dev),
                  "peak_cuda_reserved_bytes": torch.cuda.max_memory_reserved(dev)}
    else:  # this process's own peak (VmHWM); ru_maxrss would inherit the parent's peak across exec
        from dire.profiling import peak_rss_bytes

        memory = {"peak_rss_bytes": peak_rss_bytes()}
    return {"dataset": dataset, "dire": dire, "images_per_step": images, "iterations": iterations,
            "step_s": per_step, "step_s_per_image": per_step / images, "dire_term_s": dire_step,
            "dire_share": dire_step / per_step if per_step else 0.0, "device": str(dev), "measured_at": time.time(),
            **memory}
