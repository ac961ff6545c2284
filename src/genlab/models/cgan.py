"""Class-conditional DCGAN (Mirza & Osindero 2014, https://arxiv.org/abs/1411.1784): G(z, y)
draws the digit y; D(x, y) judges whether x is a real y.

  - generator: the one-hot digit is appended to the noise, z' = [z, onehot(y)] (B, D + 10),
    then DCGAN's generator;
  - discriminator: the projection discriminator (Miyato & Koyama 2018,
    https://arxiv.org/abs/1802.05637): D(x, y) = w·φ(x) + e_y·φ(x) + b, with φ the conv
    features and e_y a learned embedding per digit. Cheaper and more stable than feeding y as
    extra input channels, and it makes D check that the image fits its label;
  - each fake batch uses the labels of the real batch, so both have the same digit frequencies.
Everything else (losses, stabilisers, optimizers) is DCGAN's, see `dcgan.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data import NUM_CLASSES
from . import register
from .base import check_digit
from .blocks import FEATURE_SIDE, label_input
from .dcgan import DCGAN, DCGANConfig


@dataclass
class CGANConfig(DCGANConfig):
    plot_digit: int = 8  # the digit `decode(z)` draws when no labels are given (interpolation figure)

    def validate(self) -> None:
        super().validate()
        check_digit("plot_digit", self.plot_digit)


@register("cgan")
class CGAN(DCGAN):
    config_class = CGANConfig
    conditional = True

    def __init__(self, config: CGANConfig):
        super().__init__(config)  # builds G with 10 extra inputs, since `conditional` is True
        self.embed = nn.Embedding(NUM_CLASSES, self.config.channels[1] * FEATURE_SIDE**2)  # e_y: (10, F)
        nn.init.normal_(self.embed.weight, std=0.01)  # start as the unconditional D

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim), digits (B,) -> images (B, 1, 28, 28); no labels: `plot_digit`."""
        return torch.sigmoid(self.generator(label_input(z, labels, self.config.plot_digit)))

    def critic(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Projection discriminator logits (B,): w·φ(x) + b + e_y·φ(x)."""
        phi = self.features(images * 2 - 1)  # (B, F)
        return self.head(phi).squeeze(1) + (self.embed(labels) * phi).sum(1)
