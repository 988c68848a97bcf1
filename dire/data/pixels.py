"""The uint8 pixel codec: synthetic sets are stored as 8-bit pixels, as saved PNGs would keep them."""

from __future__ import annotations

import torch

from dire.data.datasets import DatasetInfo


def to_uint8(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """Quantise normalized images to stored 8-bit pixels (what saving PNGs would keep)."""
    return info.denormalize(images.detach().cpu().float()).clamp(0, 1).mul(255).round().to(torch.uint8)


def from_uint8(pixels: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """Stored 8-bit pixels back to normalized float images."""
    return info.normalize(pixels.float() / 255)
