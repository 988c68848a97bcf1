"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021;
VICO-UoE/DatasetCondensation ``utils.py`` ``ParamDiffAug`` / ``DiffAugment``).

``dsa(x, strategy, seed=..., generator=...)`` augments a batch of normalized images
[N, C, H, W] and stays differentiable in ``x`` (affine warps go through
``affine_grid``/``grid_sample``, the rest are adds, multiplies and gathers).

The strategy is groups joined by ``_``: ``color``, ``crop``, ``cutout``, ``flip``,
``scale``, ``rotate`` (DC/DSA/DM/MTT use ``color_crop_cutout_flip_scale_rotate``;
the DC README drops ``flip`` for MNIST/SVHN). Mode 'S': each call applies **one**
group, picked at random; ``color`` is brightness, saturation and contrast together.

Randomness, the two ways it is used:
- **Siamese** (``seed=s``): everything is drawn from a fresh generator seeded with
  ``s``, and one transform is drawn for the whole batch. Real and synthetic batches
  of a class augmented with the same seed therefore get the identical transform,
  whatever their sizes (DM: 256 real vs IPC synthetic images), as in DC's Siamese mode.
- **Per sample** (``generator=g``): the group is still one per call, but each image
  gets its own parameters (training a network on a synthetic set: the DC evaluation,
  MTT experts and the MTT student).

All draws happen on the CPU generator and are then moved to ``x``'s device, so the
same seed gives the same transform on CPU and CUDA.

Parameters (:class:`DSAParams`, the published values): flip p 0.5, scale
sx, sy ~ U(1/1.2, 1.2), rotate ±15°, crop = integer translation by up to
round(12.5 % of the size) px with zero fill, cutout = one square of half the side
zeroed, brightness + U(-0.5, 0.5), saturation ×U(0, 2), contrast ×U(0.5, 1.5).
Zero fill and the colour shifts act in normalized space, as the reference does.

One channel: saturation scales each pixel's deviation from its mean over channels;
with one channel that deviation is 0, so saturation is an exact no-op on grey
images (and brightness/contrast still apply).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

STRATEGY = "color_crop_cutout_flip_scale_rotate"
GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass(frozen=True)
class DSAParams:
    """The published DSA parameters (DC ``ParamDiffAug``)."""

    flip: float = 0.5  # probability of a horizontal flip
    scale: float = 1.2  # sx, sy ~ U(1/scale, scale)
    rotate: float = 15.0  # angle ~ U(-rotate, rotate) degrees
    crop: float = 0.125  # translation up to this fraction of the side (in whole pixels)
    cutout: float = 0.5  # side of the zeroed square as a fraction of the image side
    brightness: float = 1.0  # add (U(0, 1) - 0.5) * brightness
    saturation: float = 2.0  # scale the deviation from the channel mean by U(0, 1) * saturation
    contrast: float = 0.5  # scale the deviation from the image mean by U(0, 1) + contrast


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """The groups of ``strategy`` (``""`` or ``"none"`` = no augmentation); ``ValueError`` on unknown names."""
    if strategy in ("", "none"):
        return ()
    groups = tuple(strategy.split("_"))
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown DSA group(s) {unknown} in {strategy!r}; expected '_'-joined names from {GROUPS}")
    return groups


def _uniform(n: int, generator: torch.Generator, shared: bool, device: torch.device) -> torch.Tensor:
    """U(0, 1) per sample, or one value repeated for the batch (Siamese); drawn on the CPU."""
    u = torch.rand(1 if shared else n, generator=generator)
    return u.expand(n).to(device)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    # align_corners=False maps pixel centres onto pixel centres, so the identity and flips are exact
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _flip(x, g, shared, p: DSAParams):
    sign = torch.where(_uniform(len(x), g, shared, x.device) < p.flip, -1.0, 1.0)
    theta = torch.zeros(len(x), 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = sign, 1.0
    return _affine(x, theta)


def _scale(x, g, shared, p: DSAParams):
    lo, hi = 1 / p.scale, p.scale
    sx = _uniform(len(x), g, shared, x.device) * (hi - lo) + lo
    sy = _uniform(len(x), g, shared, x.device) * (hi - lo) + lo
    theta = torch.zeros(len(x), 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return _affine(x, theta)


def _rotate(x, g, shared, p: DSAParams):
    angle = (_uniform(len(x), g, shared, x.device) - 0.5) * 2 * math.radians(p.rotate)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(len(x), 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, sin, -sin, cos
    return _affine(x, theta)


def _shift_range(size: int, fraction: float) -> int:
    return int(size * fraction + 0.5)


def _crop(x, g, shared, p: DSAParams):
    """Integer translation with zero fill: a gather from the zero-padded batch (exact, no interpolation)."""
    n, _, h, w = x.shape
    sh, sw = _shift_range(h, p.crop), _shift_range(w, p.crop)
    dy = (_uniform(n, g, shared, x.device) * (2 * sh + 1)).floor().long().clamp(max=2 * sh)  # in 0..2*sh
    dx = (_uniform(n, g, shared, x.device) * (2 * sw + 1)).floor().long().clamp(max=2 * sw)
    padded = F.pad(x, (sw, sw, sh, sh))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def _cutout(x, g, shared, p: DSAParams):
    """Zero one square of side round(cutout * size) centred on a uniformly drawn pixel (clipped at the border)."""
    n, _, h, w = x.shape
    ch, cw = _shift_range(h, p.cutout), _shift_range(w, p.cutout)
    cy = (_uniform(n, g, shared, x.device) * h).floor().long().clamp(max=h - 1)
    cx = (_uniform(n, g, shared, x.device) * w).floor().long().clamp(max=w - 1)
    ys = torch.arange(h, device=x.device)[None, :] - (cy - ch // 2)[:, None]
    xs = torch.arange(w, device=x.device)[None, :] - (cx - cw // 2)[:, None]
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]
    return x * (~inside)[:, None].to(x.dtype)


def _color(x, g, shared, p: DSAParams):
    n = len(x)
    shape = (n, 1, 1, 1)
    x = x + ((_uniform(n, g, shared, x.device) - 0.5) * p.brightness).view(shape)
    mean_c = x.mean(dim=1, keepdim=True)  # grey value per pixel: saturation is a no-op on 1 channel
    x = (x - mean_c) * (_uniform(n, g, shared, x.device) * p.saturation).view(shape) + mean_c
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(n, g, shared, x.device) + p.contrast).view(shape) + mean


_OPS = {"color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip, "scale": _scale, "rotate": _rotate}


def apply_group(
    x: torch.Tensor,
    group: str,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    params: DSAParams = DSAParams(),
) -> torch.Tensor:
    """One named group (no random choice of group); ``seed`` / ``generator`` as in :func:`dsa`."""
    if group not in _OPS:
        raise ValueError(f"unknown DSA group {group!r}; expected one of {GROUPS}")
    g, shared = _generator(seed, generator)
    return _OPS[group](_check(x), g, shared, params)


def dsa(
    x: torch.Tensor,
    strategy: str = STRATEGY,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    params: DSAParams = DSAParams(),
) -> torch.Tensor:
    """Augment ``x`` [N, C, H, W] with one randomly chosen group of ``strategy`` (mode 'S').

    Exactly one of ``seed`` (Siamese: one transform for the whole batch, reproducible from the seed) or
    ``generator`` (per-sample parameters, the generator advances) must be given.
    """
    groups = parse_strategy(strategy)
    g, shared = _generator(seed, generator)
    x = _check(x)
    if not groups:
        return x
    group = groups[int(torch.randint(len(groups), (1,), generator=g))]
    return _OPS[group](x, g, shared, params)


class DSA:
    """``dsa`` with a fixed strategy and parameters: ``DSA()(x, seed=s)`` or ``DSA()(x, generator=g)``."""

    def __init__(self, strategy: str = STRATEGY, params: DSAParams = DSAParams()):
        parse_strategy(strategy)  # fail early on a bad name
        self.strategy, self.params = strategy, params

    def __call__(
        self, x: torch.Tensor, *, seed: int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return dsa(x, self.strategy, seed=seed, generator=generator, params=self.params)

    def __repr__(self) -> str:
        return f"DSA({self.strategy!r})"


def _generator(seed: int | None, generator: torch.Generator | None) -> tuple[torch.Generator, bool]:
    if (seed is None) == (generator is None):
        raise ValueError("pass exactly one of seed (Siamese, one transform per batch) or generator (per sample)")
    if seed is not None:
        return torch.Generator().manual_seed(int(seed)), True
    return generator, False


def _check(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"DSA expects float images [N, C, H, W]; got {x.dtype} {tuple(x.shape)}")
    return x
