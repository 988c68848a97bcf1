"""ZCA whitening of images (MTT whitens CIFAR with kornia's ``ZCAWhitening(eps=0.1)``; kornia is not a dependency).

Fitted on the flattened training images X [N, D] (normalized space): with the
covariance Σ = (X - μ)ᵀ(X - μ) / (N - 1) = U diag(s) Uᵀ, the transform is
``(x - μ) W`` with ``W = U diag(1 / sqrt(s + eps)) Uᵀ`` (symmetric, so whitened images
stay image-like), and its inverse ``x W⁻¹ + μ``. It is a frozen module, so
``nn.Sequential(zca, net)`` tests a network trained on whitened images.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class ZCA(nn.Module):
    def __init__(self, mean: torch.Tensor, matrix: torch.Tensor, inverse: torch.Tensor, shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("matrix", matrix)
        self.register_buffer("inverse_matrix", inverse)
        self.shape = tuple(shape)

    @classmethod
    @torch.no_grad()
    def fit(cls, images: torch.Tensor, *, eps: float = 0.1) -> ZCA:
        """Fit on images [N, C, H, W] (N >= 2); float64 for the eigendecomposition."""
        if images.dim() != 4 or len(images) < 2 or eps <= 0:
            raise ValueError(f"expected images [N>=2, C, H, W] and eps > 0; got {tuple(images.shape)}, eps={eps}")
        x = images.flatten(1).double()
        mean = x.mean(0)
        xc = x - mean
        s, u = torch.linalg.eigh(xc.T @ xc / (len(x) - 1))
        s = s.clamp(min=0)
        w = (u * (s + eps).rsqrt()) @ u.T
        w_inv = (u * (s + eps).sqrt()) @ u.T
        return cls(mean.float(), w.float(), w_inv.float(), tuple(images.shape[1:]))

    @classmethod
    def from_state(cls, state: dict) -> ZCA:
        return cls(state["mean"], state["matrix"], state["inverse_matrix"], tuple(int(s) for s in state["shape"]))

    def state(self) -> dict:
        return {
            "mean": self.mean,
            "matrix": self.matrix,
            "inverse_matrix": self.inverse_matrix,
            "shape": torch.tensor(self.shape),
        }

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"ZCA was fitted on images {self.shape}; got {tuple(x.shape[1:])}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return ((x.flatten(1) - self.mean) @ self.matrix).view_as(x)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return (x.flatten(1) @ self.inverse_matrix + self.mean).view_as(x)
