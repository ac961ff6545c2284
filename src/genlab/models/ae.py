"""Autoencoder: encoder to a small latent code z, decoder back; trained on pixel MSE.

With the default 2-D latent, the test digits' codes can be drawn directly (latent scatter) and
the decoder can be evaluated on a grid over the plane (latent manifold). An AE has no prior on
z, so it cannot sample: its latent space has holes between the clusters.

By default it is a denoising autoencoder (Vincent et al. 2008, https://doi.org/10.1145/1390156.1390294):
in training the encoder sees x + σ·ε, ε ~ N(0, I), and the decoder must give back the clean x (MSE).
Codes that must survive the noise depend less on single pixels, so test digits land nearer the
training digits of their class (benchmarks/README.md, "2-D codes"). Evaluation, codes and figures
use the clean x.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import check_off_or_positive
from . import register
from .base import GenerativeModel, LossOutput
from .blocks import AutoencoderConfig, encoder_decoder
from .neighbors import NeighborTerm


@dataclass
class AEConfig(AutoencoderConfig):
    latent_dim: int = 2  # 2-D so the latent space can be plotted as it is
    # The noise and the neighbour weight were chosen on the validation split (benchmarks/README.md, "2-D codes").
    input_noise: float = 0.5  # σ of Gaussian noise added to the encoder's input in training (denoising AE; 0: off)
    neighbor_weight: float = 0.0  # weight of a loss that keeps pixel-space neighbours together in z (0: off; 0.3 separates 2-D codes best)

    def validate(self) -> None:
        super().validate()
        check_off_or_positive("input_noise", self.input_noise)
        check_off_or_positive("neighbor_weight", self.neighbor_weight)


@register("ae")
class AE(GenerativeModel):
    config_class = AEConfig
    can_encode = True

    @classmethod
    def defaults(cls, config: AEConfig) -> dict:
        # Steps matter more than batch size for the 2-D codes: batch 32 (benchmarks/README.md, "2-D codes").
        return {"epochs": 35, "batch_size": 32, "lr": 1e-3, "activation": "relu"}

    def __init__(self, config: AEConfig):
        super().__init__(config)
        self.encoder, self.decoder = encoder_decoder(self.config, self.config.latent_dim, self.config.latent_dim)
        self.neighbors = NeighborTerm(self.config.neighbor_weight)

    def prepare_training(self, x_train: torch.Tensor) -> None:
        self.neighbors.prepare(x_train)

    def encode(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, 28, 28) -> (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim) -> (B, 1, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def loss(self, x, y, phase, cache) -> LossOutput:
        x_in = x
        if self.training and self.config.input_noise > 0:  # denoising: corrupt the input, score against the clean x
            x_in = x + self.config.input_noise * torch.randn_like(x)
        x_hat = self.decode(self.encode(x_in))
        mse = F.mse_loss(x_hat.float(), x)  # mean over pixels and images: MSE per pixel (float32 under autocast)
        logs = {"loss": mse, "mse": mse}
        return LossOutput(loss=self.neighbors.add_to(mse, logs, self.encode, self.training), logs=logs)
