"""Synthesis cost: time per image, peak memory, and DiRe's share of a step (paper's cost table).

:func:`measure_synthesis` is meant to run in a fresh process (``dire.experiments.profiling.run_in_fresh_process``)
so that the CPU peak RSS belongs to one configuration alone; on CUDA it reports the
allocator's peak.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from dire.experiments.config import Experiment
from dire.synthesis import SRe2L, SynthesisConfig


def measure_synthesis(
    *,
    dataset: str = Experiment.dataset,
    dire: bool,
    ipc_per_unit: int = SynthesisConfig.ipc_per_unit,
    classes_per_unit: int | None = None,
    iterations: int = SynthesisConfig.iterations,
    warmup: int = 2,
    teacher_arch: str = Experiment.teacher_arch,
    teacher_recipe: str = Experiment.teacher_recipe,
    teacher_weights: str | None = None,
    teacher_overrides: dict | None = None,
    method_settings: dict | None = None,
    bank_per_class: int = Experiment.bank_per_class,
    r_bn: float = SRe2L.r_bn,
    lr: float = SynthesisConfig.lr,
    device: str = "cpu",
    data_root: str = "data",
    runs_root: str = "runs",
    download: bool = False,
) -> dict:
    """Time ``iterations`` optimisation steps of one synthesis unit (after ``warmup`` steps).

    The step is the shared loop's own (``run_unit``: loss, DiRe, Adam step, clamp, LR
    schedule), timed over a whole unit after a warm-up unit. Returns seconds per step and
    per image-step, the DiRe term's forward + backward time per step (timed apart on the
    unit's embeddings) and its share of the step, and peak memory (CUDA allocator peak, or
    this process's peak RSS on the CPU). The teacher (pretrained with ``teacher_weights``) and bank come from
    the cache (trained if missing, before timing starts). ``method_settings``: SRe2L's other settings, e.g. the
    ImageNet recover's ``{"crop_scale": [0.08, 1.0], "flip": True, "jitter": 32}``.
    """
    from dire.data import load_dataset
    from dire.nets.bank import cached_bank
    from dire.nets.teacher import get_teacher
    from dire.synthesis import DiReConfig
    from dire.synthesis.base import Context, plan_units

    dev = torch.device(device)
    train = load_dataset(dataset, root=data_root, download=download)
    teacher, rec = get_teacher(
        dataset,
        teacher_arch,
        recipe=teacher_recipe,
        weights=teacher_weights,
        data_root=data_root,
        runs_root=runs_root,
        device=dev,
        progress=False,
        download=download,
        **(teacher_overrides or {}),
    )
    bank, _ = cached_bank(teacher, rec, train, per_class=bank_per_class, device=dev, runs_root=runs_root)
    config = SynthesisConfig(
        ipc=ipc_per_unit, iterations=iterations, lr=lr, ipc_per_unit=ipc_per_unit, classes_per_unit=classes_per_unit
    )
    ctx = Context(teacher=teacher.eval().requires_grad_(False), dataset=train, config=config, device=dev, bank=bank)
    unit = plan_units(config, train.info.num_classes)[0]
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in (method_settings or {}).items()}
    method, reg = SRe2L(**{"r_bn": r_bn, **settings}), DiReConfig(enabled=dire).module()
    return {"dataset": dataset, "dire": dire, **measure_unit(method, ctx, unit, reg, warmup=warmup)}


def measure_unit(method, ctx, unit, reg, *, warmup: int = 2) -> dict:
    """Time ``ctx.config.iterations`` steps of ``unit`` through the shared loop, after a warm-up unit of
    ``warmup`` steps, and the DiRe term ``reg`` (None: off) alone on the unit's embeddings; peak memory over
    both (CUDA allocator peak, or this process's peak RSS on the CPU)."""
    from dire.experiments.profiling import peak_memory, timed
    from dire.synthesis.base import run_unit

    config, dev = ctx.config, ctx.device
    iterations = config.iterations
    if warmup > 0:  # a short warm-up unit: allocator, kernels, first touches
        ctx.config = dataclasses.replace(config, iterations=warmup)
        run_unit(method, ctx, unit, reg)
    # the timed unit runs the synthesis loop itself (loss, DiRe, step, clamp, schedule); its time also
    # covers the unit's init and final quantisation, once per unit
    ctx.config = config
    labels = unit.labels(dev)
    dire_s = []
    with peak_memory(dev) as memory:  # CUDA: allocator peaks from here; CPU: this process's peak RSS
        per_step = float(run_unit(method, ctx, unit, reg)["seconds"]) / iterations
        if reg is not None:  # the DiRe term's own forward + backward, on embeddings of this unit's images
            g = torch.Generator().manual_seed(0)
            z = method.loss(ctx, unit, method.init_images(ctx, unit, g).to(dev), labels, 0, g).embeddings.detach()
            for i in range(warmup + iterations):
                with timed(dev) as part:
                    reg(z.clone().requires_grad_(), labels, ctx.bank).backward()
                if i >= warmup:
                    dire_s.append(part.seconds)
    images = len(labels)
    dire_step = sum(dire_s) / len(dire_s) if dire_s else 0.0
    if memory.resettable:
        peaks = {"peak_cuda_allocated_bytes": memory.allocated_bytes, "peak_cuda_reserved_bytes": memory.reserved_bytes}
    else:
        peaks = {"peak_rss_bytes": memory.peak_rss_bytes}
    return {
        "images_per_step": images,
        "iterations": iterations,
        "step_s": per_step,
        "step_s_per_image": per_step / images,
        "dire_term_s": dire_step,
        "dire_share": dire_step / per_step if per_step else 0.0,
        "device": str(dev),
        "measured_at": time.time(),
        **peaks,
    }
