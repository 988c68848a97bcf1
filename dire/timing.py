"""Synthesis cost: time per image, peak memory, and DiRe's share of a step (paper's cost table).

:func:`measure_synthesis` is meant to run in a fresh process (``dire.profiling.run_in_fresh_process``)
so that the CPU peak RSS belongs to one configuration alone; on CUDA it reports the
allocator's peak.
"""

from __future__ import annotations

import dataclasses
import time

import torch


def measure_synthesis(*, dataset: str, dire: bool, ipc_per_unit: int = 10, classes_per_unit: int | None = None,
                      iterations: int = 20, warmup: int = 2, teacher_arch: str = "convnet_bn",
                      teacher_recipe: str = "cpu", bank_per_class: int = 500, r_bn: float = 0.01, lr: float = 0.25,
                      device: str = "cpu", data_root: str = "data", runs_root: str = "runs",
                      download: bool = False) -> dict:
    """Time ``iterations`` optimisation steps of one synthesis unit (after ``warmup`` steps).

    The step is the shared loop's own (``run_unit``: loss, DiRe, Adam step, clamp, LR
    schedule), timed over a whole unit after a warm-up unit. Returns seconds per step and
    per image-step, the DiRe term's forward + backward time per step (timed apart on the
    unit's embeddings) and its share of the step, and peak memory (CUDA allocator peak, or
    this process's peak RSS on the CPU). The teacher and bank come from the cache
    (trained if missing, before timing starts).
    """
    from dire.bank import cached_bank
    from dire.data import load_dataset
    from dire.profiling import timed
    from dire.synthesis import DiReConfig, SRe2L, SynthesisConfig
    from dire.synthesis.base import Context, plan_units, run_unit
    from dire.teacher import get_teacher

    dev = torch.device(device)
    train = load_dataset(dataset, root=data_root, download=download)
    teacher, rec = get_teacher(dataset, teacher_arch, recipe=teacher_recipe, data_root=data_root, runs_root=runs_root,
                               device=dev, progress=False, download=download)
    bank, _ = cached_bank(teacher, rec, train, per_class=bank_per_class, device=dev, runs_root=runs_root)
    config = SynthesisConfig(ipc=ipc_per_unit, iterations=iterations, lr=lr, ipc_per_unit=ipc_per_unit,
                             classes_per_unit=classes_per_unit)
    ctx = Context(teacher=teacher.eval().requires_grad_(False), dataset=train, config=config, device=dev, bank=bank)
    unit = plan_units(config, train.info.num_classes)[0]
    method, reg = SRe2L(r_bn=r_bn), DiReConfig(enabled=dire).module()
    if warmup > 0:  # a short warm-up unit: allocator, kernels, first touches
        ctx.config = dataclasses.replace(config, iterations=warmup)
        run_unit(method, ctx, unit, reg)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    # the timed unit runs the synthesis loop itself (loss, DiRe, step, clamp, schedule); its time also
    # covers the unit's init and final quantisation, once per unit
    ctx.config = config
    per_step = float(run_unit(method, ctx, unit, reg)["seconds"]) / iterations
    labels = unit.labels(dev)
    dire_s = []
    if reg is not None:  # the DiRe term's own forward + backward, on embeddings of this unit's images
        g = torch.Generator().manual_seed(0)
        z = method.loss(ctx, unit, method.init_images(ctx, unit, g).to(dev), labels, 0, g).embeddings.detach()
        for i in range(warmup + iterations):
            with timed(dev) as part:
                reg(z.clone().requires_grad_(), labels, bank).backward()
            if i >= warmup:
                dire_s.append(part.seconds)
    images = len(labels)
    dire_step = sum(dire_s) / len(dire_s) if dire_s else 0.0
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
