"""Autoencoder: encoder to a small latent code z, decoder back; trained on pixel MSE.

With the default 2-D latent, the test digits' codes can be drawn directly (latent scatter) and
the decoder can be evaluated on a grid over the plane (latent manifold). An AE has no prior on
z, so it cannot sample: its latent space has holes between the clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import ModelConfig, check_widths
from . import register
from .base import GenerativeModel, LossOutput
from .blocks import check_arch, encoder_decoder


@dataclass
class AEConfig(ModelConfig):
    latent_dim: int = 2  # 2-D so the latent space can be plotted as it is
    hidden_dims: tuple[int, ...] = (512, 256)  # encoder widths; the decoder mirrors them (arch "conv": the last only)
    arch: str = "mlp"  # "mlp" (fully connected) or "conv" (two stride-2 convolutions each way)
    channels: tuple[int, ...] = (16, 32)  # conv channels after the first and second convolution (arch "conv")

    def validate(self) -> None:
        super().validate()
        check_widths("hidden_dims", self.hidden_dims)
        check_arch(self.arch, self.channels)


@register("ae")
class AE(GenerativeModel):
    config_class = AEConfig
    default_epochs = 30

    def __init__(self, config: AEConfig):
        super().__init__(config)
        self.encoder, self.decoder = encoder_decoder(
            config.arch, config.latent_dim, config.latent_dim, config.hidden_dims, config.channels
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) -> (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, 1, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def loss(self, x, y, phase, cache) -> LossOutput:
        x_hat = self.reconstruct(x)
        mse = F.mse_loss(x_hat, x)  # mean over pixels and images: MSE per pixel
        return LossOutput(loss=mse, logs={"loss": mse, "mse": mse})
