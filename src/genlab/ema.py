"""An exponential moving average of a model's weights (Polyak averaging; for GANs Karras et al.
2018, https://arxiv.org/abs/1710.10196), kept by the training loop for any model (`--ema DECAY`).

The average is a second copy of the model, never optimised: after each training step every
parameter moves a share (1 − decay) of the way toward the live one,
    average ← average + (1 − decay) · (live − average),
and every buffer (batch norm's running statistics, which are running averages already, and
whatever else a model keeps, such as SCGAN's cluster centres) is copied, as StyleGAN2-ADA's G_ema
does. The loop trains the live model and uses the average for everything else: the per-epoch
test losses and health checks, and the final `model.safetensors`.
"""

from __future__ import annotations

import copy

import torch

from .models import GenerativeModel


class WeightAverage:
    """`model`: the averaged copy (in eval mode between uses; a plain GenerativeModel, so it
    evaluates, samples and saves like the live one). Start it from the live model's weights."""

    def __init__(self, live: GenerativeModel, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(live).requires_grad_(False)

    @torch.no_grad()
    def update(self, live: GenerativeModel) -> None:
        # One multi-tensor call each (twice as fast as a loop of lerp_, and bitwise the same).
        torch._foreach_lerp_(list(self.model.parameters()), list(live.parameters()), 1 - self.decay)
        if buffers := list(live.buffers()):  # a model may have none (foreach refuses empty lists)
            torch._foreach_copy_(list(self.model.buffers()), buffers)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()
