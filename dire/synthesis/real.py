"""The real-subset reference: ``ipc`` random real training images per class, stored as a synthetic set.

It is the yardstick of a table (issue 16): evaluated with the same students and measured with the same metrics
as the condensed sets, it says what plain real images at the same budget give. Going through the synthesis loop
(no steps taken) keeps the pipeline's cache, seeds and evaluation: seed ``s`` draws the images
:func:`dire.synthesis.base.real_init` draws for seed ``s``, from the training split only (a held-out validation
split is never drawn).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dire.synthesis.base import Context, Method, Unit, real_init, register


@register
@dataclass
class RealSubset(Method):
    name = "real"
    optimises = False  # no step, so no loss, no DiRe and no teacher gradient

    def init_images(self, ctx: Context, unit: Unit, generator: torch.Generator) -> torch.Tensor:
        # always real, whatever SynthesisConfig.init says
        return torch.cat([real_init(ctx, c, unit.slots) for c in unit.classes])

    def loss(self, ctx, unit, images, labels, iteration, generator):
        raise RuntimeError("the real-subset reference takes no synthesis steps; its loss is never asked for")
