"""Variational autoencoder (Kingma & Welling 2014, https://arxiv.org/abs/1312.6114).

The encoder gives the mean μ and log-variance log σ² of q(z|x); z = μ + σ·ε (the
reparameterisation trick) keeps sampling differentiable. The loss per image is
    reconstruction + β · KL(q(z|x) || N(0, I)),
both summed over pixels / latent dimensions and averaged over images (nats per image):
  - recon_loss = "mse": Σ_pixels (x̂ − x)², as in the lab notebook (a Gaussian decoder with
    fixed variance, up to constants);
  - recon_loss = "bce": Σ_pixels BCE(x̂, x), the Bernoulli decoder, with grey pixels used as
    soft targets (the usual convention for non-binarised MNIST).
β = 1 is the plain VAE; β > 1 trades reconstruction for a smoother, more disentangled latent.
The terms themselves are in `losses.py`, shared with the conditional VAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..config import check_off_or_positive
from ..errors import GenlabError
from . import register
from .base import GenerativeModel, LossOutput
from .blocks import AutoencoderConfig, encoder_decoder
from .losses import LOGVAR_RANGE, elbo_terms, reparameterize
from .neighbors import NeighborTerm

ReconLoss = Literal["mse", "bce"]


@dataclass
class ELBOConfig(AutoencoderConfig):
    """The fields of the VAE's loss, shared with the conditional VAE."""

    beta: float = 1.0  # weight of the KL term (β-VAE when > 1)
    recon_loss: ReconLoss = "mse"  # "mse" (lab notebook) or "bce" (Bernoulli likelihood)

    def validate(self) -> None:
        super().validate()
        if not self.beta >= 0:
            raise GenlabError(f"beta must be 0 or more, got {self.beta}")


@dataclass
class VAEConfig(ELBOConfig):
    latent_dim: int = 2  # 2-D for the latent scatter and manifold figures; 20 samples better
    # Larger than the AE's because the VAE's loss is summed over pixels (benchmarks/README.md, "2-D codes").
    neighbor_weight: float = 0.0  # weight of a loss that keeps pixel-space neighbours together in z (0: off; 100 separates 2-D codes best)

    def validate(self) -> None:
        super().validate()
        check_off_or_positive("neighbor_weight", self.neighbor_weight)


def vae_defaults(config: VAEConfig, epochs: int, batch_size: int) -> dict:
    """The MLP's `epochs` and `batch_size` with the notebook's ReLU; the conv net wants lr 2e-3,
    batch 64 and SiLU (chosen on the validation split, benchmarks/README.md, "VAE architecture")."""
    if config.arch == "conv":
        return {"epochs": epochs, "batch_size": 64, "lr": 2e-3, "activation": "silu"}
    return {"epochs": epochs, "batch_size": batch_size, "lr": 1e-3, "activation": "relu"}


@register("vae")
class VAE(GenerativeModel):
    config_class = VAEConfig
    can_encode = True
    can_sample = True
    has_likelihood = True

    @classmethod
    def defaults(cls, config: VAEConfig) -> dict:
        # Steps matter more than batch size for the 2-D codes: batch 32 (benchmarks/README.md, "2-D codes").
        return vae_defaults(config, epochs=35, batch_size=32)

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        # One head gives μ and log σ² side by side: (B, 2·D).
        self.encoder, self.decoder = encoder_decoder(self.config, 2 * self.config.latent_dim, self.config.latent_dim)
        self.neighbors = NeighborTerm(self.config.neighbor_weight)

    def prepare_training(self, x_train: torch.Tensor) -> None:
        self.neighbors.prepare(x_train)

    def encode_distribution(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 28, 28) -> μ (B, D), log σ² (B, D)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean μ: the code used for plots and representation metrics."""
        return self.encode_distribution(x)[0]

    def decode_logits(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) -> pixel logits (B, 1, 28, 28); sigmoid gives the Bernoulli means."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def loss(self, x, y, phase, cache) -> LossOutput:
        mu, logvar = self.encode_distribution(x)
        logits = self.decode_logits(reparameterize(mu, logvar))
        loss, logs = elbo_terms(mu, logvar, logits, x, self.config.recon_loss, self.config.beta, self.training)
        return LossOutput(loss=self.neighbors.add_to(loss, logs, self.encode, self.training), logs=logs)
