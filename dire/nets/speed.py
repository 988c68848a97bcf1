"""GPU efficiency switches in one place: bf16 autocast, channels_last, cuDNN autotuning, non-blocking copies and
small datasets held on the GPU as tensors (airbench's approach).

Every switch is a no-op on the CPU with the default precision ("fp32"), so CPU results stay bit for bit what they
were. bf16 changes results (rounding of activations), so a stage run in bf16 records ``"precision": "bf16"`` in
its cache key (see :func:`precision_key`); fp32 records nothing, which keeps every key made before this module.

Precision names (:data:`PRECISIONS`): ``"fp32"`` (no autocast), ``"bf16"`` (``torch.autocast`` with bfloat16
around forward passes and losses; weights, gradients and optimiser state stay float32) and ``"auto"`` (bf16 on
CUDA, fp32 elsewhere: CPU results and caches stay as they were, and CPUs without bf16 instructions run bf16
autocast slower than float32; on this project's AVX512-BF16 CPU it was 1.2-1.8x faster,
``benchmarks/results/precision-2026-11-30-cpu.txt``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn
from torch.utils.data import RandomSampler

PRECISIONS = ("auto", "bf16", "fp32")
# datasets at most this large (pixels as stored, uint8 for every in-memory dataset here) are held on the GPU:
# CIFAR-100's 50 000 x 3 x 32 x 32 uint8 images are 150 MiB; the cap keeps one process from filling the GPU
DEVICE_HELD_MAX_BYTES = 4 * 2**30


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"bf16"`` or ``"fp32"``: ``precision`` with ``"auto"`` resolved for ``device`` (bf16 on CUDA, fp32
    elsewhere); an unknown name is a ``ValueError``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not known; expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def precision_key(precision: str, device: torch.device | str) -> dict:
    """What ``precision`` adds to a cache key: ``{"precision": "bf16"}`` when it resolves to bf16, else ``{}``
    (fp32 is what every key made before precision existed means)."""
    resolved = resolve_precision(precision, device)
    return {} if resolved == "fp32" else {"precision": resolved}


def autocast(device: torch.device | str, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """A context for the forward pass and loss: ``torch.autocast`` to bfloat16 when ``precision`` resolves to
    bf16 on ``device``, else a context that does nothing. Backward and the optimiser step belong outside it."""
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def prepare_model(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` on ``device``; on CUDA a conv model is also put in channels_last memory format (faster
    convolutions with tensor cores) and cuDNN autotuning is switched on (:func:`enable_cudnn_benchmark`).
    On the CPU this is ``model.to(device)`` and nothing else."""
    device = torch.device(device)
    if device.type != "cuda":
        return model.to(device)
    enable_cudnn_benchmark(device)
    if _has_conv(model):
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


def enable_cudnn_benchmark(device: torch.device | str) -> bool:
    """Let cuDNN time its convolution algorithms once per input shape (``torch.backends.cudnn.benchmark``) on
    CUDA, unless deterministic kernels are asked for (:func:`dire.checks.set_deterministic`): autotuning may
    choose a different algorithm per run. Returns whether it is on."""
    if torch.device(device).type != "cuda":
        return False
    if torch.are_deterministic_algorithms_enabled() or torch.backends.cudnn.deterministic:
        return False
    torch.backends.cudnn.benchmark = True
    return True


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``x`` on ``device``: a non-blocking host-to-device copy (it overlaps with queued GPU work when ``x`` is
    in pinned memory) and, on CUDA, images [N, C, H, W] in channels_last to match :func:`prepare_model`. On the
    CPU ``x`` itself."""
    device = torch.device(device)
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and x.dim() == 4 and x.is_floating_point():
        x = x.contiguous(memory_format=torch.channels_last)
    return x


# ------------------------------------------------------------------ datasets held on the device


def stored_pixels(dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The stored pixels (uint8 or float in [0, 1], [N, C, H, W]) and labels of an in-memory dataset
    (:class:`~dire.data.TensorImageDataset`, or a :class:`~dire.data.datasets.SubsetImageDataset` of one),
    in dataset order; None for a dataset read from files."""
    pixels = getattr(dataset, "pixels", None)
    if isinstance(pixels, torch.Tensor):
        return pixels, dataset.targets
    base, indices = getattr(dataset, "base", None), getattr(dataset, "indices", None)
    if base is not None and isinstance(indices, torch.Tensor):
        inner = stored_pixels(base)
        if inner is not None:
            return inner[0][indices], dataset.targets
    return None


def hold_on_device(dataset, device: torch.device | str, *, max_bytes: int = DEVICE_HELD_MAX_BYTES) -> bool:
    """Whether training batches of ``dataset`` should be cut from a copy held on ``device``: on CUDA, for an
    in-memory dataset of at most ``max_bytes`` stored pixels. The CPU keeps the data loader (the same batches,
    and the results every cache there was made with)."""
    if torch.device(device).type != "cuda":
        return False
    stored = stored_pixels(dataset)
    return stored is not None and stored[0].numel() * stored[0].element_size() <= max_bytes


class DeviceData:
    """An in-memory dataset's stored pixels and labels copied to ``device`` once; :meth:`batches` cuts the
    batches :func:`dire.nets.train.loader` would give (same order, same normalized values) there, with no
    data loader and no per-batch host-to-device copy."""

    def __init__(self, dataset, device: torch.device | str):
        stored = stored_pixels(dataset)
        if stored is None:
            raise TypeError(f"{type(dataset).__name__} is read from files; only in-memory datasets can be held")
        self.device, self.info, self.length = torch.device(device), dataset.info, len(dataset)
        self.pixels, self.targets = (t.to(self.device) for t in stored)

    def __len__(self) -> int:
        return self.length

    def _images(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.pixels[idx]
        x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)  # as the dataset does
        x = self.info.normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x

    def batches(
        self, *, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches ``(images, labels)`` on the device, in the order of the data loader's random sampler
        with ``generator`` (the permutation is drawn on the CPU, as the sampler draws it)."""
        order = torch.tensor(list(RandomSampler(range(self.length), generator=generator)), dtype=torch.long)
        order = order.to(self.device, non_blocking=True)
        for i in range(0, self.length, batch_size):
            idx = order[i : i + batch_size]
            yield self._images(idx), self.targets[idx]
