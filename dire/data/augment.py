"""Batched, differentiable augmentations on normalized image tensors [N, C, H, W].

All take an explicit ``torch.Generator`` so a run is reproducible and a resumed
run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def random_roll(x: torch.Tensor, jitter: int, generator: torch.Generator, *, symmetric: bool = False) -> torch.Tensor:
    """Circular shift of the whole batch by U{0..jitter} px (U{-jitter..jitter} if symmetric) in x and y."""
    if jitter <= 0:
        return x
    low = -jitter if symmetric else 0
    return torch.roll(x, shifts=(_randint(low, jitter, generator), _randint(low, jitter, generator)), dims=(2, 3))


def random_flip(x: torch.Tensor, generator: torch.Generator, *, per_sample: bool = True) -> torch.Tensor:
    """Horizontal flip with p = 0.5, per sample or for the whole batch."""
    if per_sample:
        flip = torch.rand(len(x), generator=generator) < 0.5
        return torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
    return x.flip(3) if float(torch.rand((), generator=generator)) < 0.5 else x


def random_resized_crop(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """One RandomResizedCrop for the whole batch (as torchvision applies it to a batched tensor), resized back
    to the input size with bilinear interpolation; differentiable in ``x``."""
    _, _, h, w = x.shape
    area = h * w
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(*scale, generator=generator))
        log_r = torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
        aspect = float(torch.exp(log_r))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = _randint(0, h - ch, generator), _randint(0, w - cw, generator)
            break
    else:  # fall back to the whole image
        top, left, ch, cw = 0, 0, h, w
    crop = x[:, :, top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def random_resized_crops(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """RandomResizedCrop drawn **per image** (the student and teacher recipes of ImageNet and Tiny-ImageNet), done
    as one batched bilinear resampling on the device. A crop's area is U(scale) of the image's and its log aspect
    ratio U(log ratio); a box that would not fit is shrunk to fit, keeping its aspect ratio (torchvision retries
    ten times, then falls back to a centre crop)."""
    n, _, h, w = x.shape
    area = torch.empty(n).uniform_(*scale, generator=generator)
    aspect = torch.exp(torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator))
    cw, ch = torch.sqrt(area * aspect * h / w), torch.sqrt(area / aspect * w / h)  # fractions of width, height
    shrink = torch.clamp(torch.maximum(cw, ch), min=1.0)
    cw, ch = cw / shrink, ch / shrink
    cx = torch.rand(n, generator=generator) * (1 - cw) + cw / 2
    cy = torch.rand(n, generator=generator) * (1 - ch) + ch / 2
    return resample_boxes(x, torch.stack([cx, cy, cw, ch], 1))


def resample_boxes(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box ``(centre x, centre y, width, height)``, in fractions of the image, resampled bilinearly to
    the full image size (half-pixel centres, as ``F.interpolate(..., align_corners=False)``)."""
    cx, cy, cw, ch = boxes.unbind(1)
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = cw, cx * 2 - 1, ch, cy * 2 - 1
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def cutmix(x: torch.Tensor, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """CutMix: a box of area fraction 1 - λ, λ ~ Beta(alpha, alpha), from a randomly paired image pasted into
    every image of the batch (one box per batch, as SRe2L's relabel draws it); the teacher labels the result."""
    if alpha <= 0:
        return x
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    _, _, h, w = x.shape
    bh, bw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = _randint(0, h - 1, generator), _randint(0, w - 1, generator)
    top, bottom = max(cy - bh // 2, 0), min(cy + bh // 2, h)
    left, right = max(cx - bw // 2, 0), min(cx + bw // 2, w)
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    out = x.clone()
    out[:, :, top:bottom, left:right] = x[perm][:, :, top:bottom, left:right]
    return out


def random_crop_pad(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """RandomCrop(size, padding) per sample, zero padding (in normalized space, as torchvision pads before
    normalization this is a slightly different fill; it only matters at the border)."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def mixup(x: torch.Tensor, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """Mixup with λ ~ Beta(alpha, alpha) and a random pairing; labels come from the teacher on the mixed batch."""
    if alpha <= 0:
        return x
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm]
