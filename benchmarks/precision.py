"""fp32 against bf16 autocast (with channels_last and cuDNN autotuning on CUDA), side by side in one run.

Times, for each model: a teacher training step (forward, cross-entropy, backward, SGD step), real-bank
extraction (eval-mode embeddings of ``--bank-images`` images in batches of 256) and a soft-label student step
(the teacher's logits without grad, the student's forward, KL at T = 30, backward, AdamW step). Then one epoch
of teacher batches: the data loader with a host-to-device copy per batch against the dataset held on the
device (:class:`dire.nets.speed.DeviceData`). Inputs are random, at CIFAR's shape by default; nothing is
read from disk.

Rows: ``fp32`` (the model as ``.to(device)`` puts it, no autocast), on CUDA also ``fp32+cl`` (channels_last
model and inputs, :func:`dire.nets.speed.prepare_model`), and ``bf16`` (autocast on top of ``prepare_model``).
cuDNN autotuning is one global switch, so on CUDA it is on for every row (rows take turns).
Ratios are fp32 time / row time (above 1: faster than fp32); each time is the median of ``--repeats`` turns
in which the rows take turns, so a shared machine's changing load falls on every row alike. Each row also
prints the relative error of its embeddings against fp32's (same initial weights).

    python benchmarks/precision.py --device cpu                 # small: 1.5 minutes on 2 shared cores
    python benchmarks/precision.py --device cuda --batch 256 --bank-images 10000 --epoch-images 50000 --repeats 20
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from dire.data import DatasetInfo, TensorImageDataset
from dire.nets.models import build_model, embed_images
from dire.nets.speed import DeviceData, autocast, prepare_model, to_device
from dire.nets.train import kd_loss, loader


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(calls: dict, device: torch.device, *, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each ``calls[name]()``, the calls taking turns ``repeats`` times after ``warmup``
    untimed turns (allocator, cuDNN autotuning): turns spread a shared machine's load over every row alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for turn in range(warmup + repeats):
        for name, fn in calls.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if turn >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _model(arch: str, info: DatasetInfo, device: torch.device, prepared: bool, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=info.num_classes, in_channels=info.channels, image_size=info.image_size)
    return prepare_model(model, device) if prepared else model.to(device)


def _rows(device: torch.device) -> list[tuple[str, str, bool]]:
    """(row name, precision, prepare_model) of each configuration timed."""
    rows = [("fp32", "fp32", False)]
    if device.type == "cuda":  # prepare_model is .to(device) on the CPU: the row would repeat fp32
        rows.append(("fp32+cl", "fp32", True))
    return rows + [("bf16", "bf16", True)]


def time_stages(arch: str, info: DatasetInfo, args, device: torch.device) -> dict[str, dict]:
    """Per row: seconds of a teacher step, a bank extraction and a student step, and the embeddings' relative
    error against the fp32 row's (same initial weights, before any step)."""
    g = torch.Generator().manual_seed(0)
    shape = (info.channels, info.image_size, info.image_size)
    x_cpu = torch.randn(args.batch, *shape, generator=g)
    y_cpu = torch.randint(info.num_classes, (args.batch,), generator=g)
    bank_images = torch.randn(args.bank_images, *shape, generator=g)
    rows = _rows(device)
    if device.type == "cuda":  # rows built with prepare_model switch autotuning on; the fp32 row shares it
        torch.backends.cudnn.benchmark = True
    teachers = {name: _model(arch, info, device, prepared) for name, _, prepared in rows}
    students = {name: _model(arch, info, device, prepared, seed=1) for name, _, prepared in rows}
    precision = {name: p for name, p, _ in rows}
    inputs = {name: to_device(x_cpu, device) if prepared else x_cpu.to(device) for name, _, prepared in rows}
    y = y_cpu.to(device)

    def bank(name: str):
        return lambda: embed_images(teachers[name], bank_images, device=device, precision=precision[name])

    emb = {name: bank(name)() for name in teachers}  # untrained weights, identical in every row
    reference = emb[rows[0][0]]
    errors = {name: float((z - reference).norm() / reference.norm()) for name, z in emb.items()}
    t_bank = interleaved({name: bank(name) for name in teachers}, device, repeats=args.repeats)

    def teacher_step(name: str):
        model, x = teachers[name], inputs[name]
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            with autocast(device, precision[name]):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    for model in teachers.values():
        model.train()
    t_teacher = interleaved({name: teacher_step(name) for name in teachers}, device, repeats=args.repeats)
    for model in teachers.values():
        model.eval()

    def student_step(name: str):
        model, teacher, x = students[name], teachers[name], inputs[name]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step():
            with autocast(device, precision[name]):
                with torch.no_grad():
                    soft = teacher(x).float()
                loss = kd_loss(model(x).float(), soft, 30.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    t_student = interleaved({name: student_step(name) for name in teachers}, device, repeats=args.repeats)
    return {
        name: {
            "teacher": t_teacher[name],
            "bank": t_bank[name],
            "student": t_student[name],
            "emb_rel_err": errors[name],
        }
        for name in teachers
    }


def time_epoch(info: DatasetInfo, args, device: torch.device) -> dict:
    """One shuffled epoch of normalized batches on the device: data loader + copy per batch, or held there."""
    g = torch.Generator().manual_seed(0)
    shape = (info.channels, info.image_size, info.image_size)
    pixels = torch.randint(256, (args.epoch_images, *shape), generator=g, dtype=torch.uint8)
    targets = torch.randint(info.num_classes, (args.epoch_images,), generator=g)
    dataset = TensorImageDataset(info, pixels, targets, [str(c) for c in range(info.num_classes)])
    held = DeviceData(dataset, device)

    def with_loader():
        for x, y in loader(dataset, batch_size=args.batch, shuffle=True, generator=torch.Generator().manual_seed(0)):
            to_device(x, device), to_device(y, device)

    def on_device():
        for _ in held.batches(batch_size=args.batch, generator=torch.Generator().manual_seed(0)):
            pass

    return interleaved({"loader": with_loader, "held": on_device}, device, repeats=args.repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--models", default="convnet_bn,resnet18", help="comma-separated registry names")
    parser.add_argument("--batch", type=int, default=32, help="training batch (teacher and student steps)")
    parser.add_argument("--bank-images", type=int, default=256, help="images embedded per bank extraction")
    parser.add_argument("--epoch-images", type=int, default=5000, help="images in the timed epoch of batches")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed turns of every row (the median is shown)")
    args = parser.parse_args()
    device = torch.device(args.device)
    info = DatasetInfo("random", 100, args.image_size, args.channels, (0.5,) * args.channels, (0.25,) * args.channels)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {where}, {torch.get_num_threads()} threads, device {device}, torch {torch.__version__}")
    print(
        f"setting: {args.channels}x{args.image_size}x{args.image_size} inputs, 100 classes, batch {args.batch}, "
        f"bank of {args.bank_images} images; ratio = fp32 time / row time"
    )
    for arch in args.models.split(","):
        rows = time_stages(arch, info, args, device)
        base = rows["fp32"]
        print(f"\n{arch}")
        print(f"  {'row':8s} {'teacher step':>20s} {'bank extraction':>20s} {'student step':>20s}   emb. rel. err")
        for name, r in rows.items():
            cells = [f"{r[k] * 1e3:9.2f} ms x{base[k] / r[k]:4.2f}" for k in ("teacher", "bank", "student")]
            print(f"  {name:8s} {cells[0]:>20s} {cells[1]:>20s} {cells[2]:>20s}   {r['emb_rel_err']:.1e}")
    epoch = time_epoch(info, args, device)
    print(
        f"\nteacher batches, one epoch of {args.epoch_images} images: loader + copy {epoch['loader'] * 1e3:.1f} ms, "
        f"held on the device {epoch['held'] * 1e3:.1f} ms (x{epoch['loader'] / epoch['held']:.2f})"
    )


if __name__ == "__main__":
    main()
