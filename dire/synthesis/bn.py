"""BatchNorm statistics matching (SRe2L's recover loss), via forward hooks.

A hook on every ``nn.BatchNorm2d`` of the frozen teacher reads the layer's *input*
and compares its per-channel batch mean and biased variance with the running
statistics: ``r_l = r_var * ||running_var - var||_2 + ||running_mean - mean||_2``
(plain L2 norms over channels). The loss is ``sum_l s_l * r_l`` with ``s_1 =
first_multiplier`` and ``s_l = 1`` after it.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class BNStatistics:
    """Collects per-layer BN-statistics gaps from the next forward passes.

    Use as a context manager so the hooks are removed afterwards::

        with BNStatistics(teacher) as bn:
            logits = teacher(x)
            loss = ce + r_bn * bn.loss()
    """

    def __init__(self, model: nn.Module, *, r_var: float = 1.0):
        self.layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.layers:
            raise ValueError(
                f"{type(model).__name__} has no BatchNorm2d layer; BN-statistics matching needs a BN teacher "
                "(e.g. 'convnet_bn' or 'resnet18')"
            )
        self.r_var = r_var
        self.gaps: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]

    def _hook(self, index: int):
        def hook(module: nn.BatchNorm2d, inputs, _output):
            x = inputs[0]
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            self.gaps[index] = self.r_var * torch.linalg.vector_norm(
                module.running_var - var
            ) + torch.linalg.vector_norm(module.running_mean - mean)

        return hook

    def loss(self, *, first_multiplier: float = 10.0) -> torch.Tensor:
        if any(g is None for g in self.gaps):
            raise RuntimeError("BNStatistics.loss() called before a forward pass through the model")
        weights = [first_multiplier] + [1.0] * (len(self.gaps) - 1)
        return sum(w * g for w, g in zip(weights, self.gaps))

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> BNStatistics:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
