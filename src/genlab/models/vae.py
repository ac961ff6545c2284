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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..errors import GenlabError
from . import register
from .base import GenerativeModel, LossOutput
from .blocks import IMAGE_PIXELS, Flatten, Unflatten, mlp

# log σ² is clamped to this range: σ from e^-5 to e^5. Keeps exp() finite when the encoder
# starts badly or the learning rate is too high (a diverging KL otherwise ends in NaN).
LOGVAR_RANGE = (-10.0, 10.0)


@dataclass
class VAEConfig(ModelConfig):
    latent_dim: int = 2  # 2-D for the latent scatter and manifold figures; 20 samples better
    hidden_dims: tuple[int, ...] = (512, 256)  # encoder widths; the decoder mirrors them
    beta: float = 1.0  # weight of the KL term (β-VAE when > 1)
    recon_loss: str = "mse"  # "mse" (lab notebook) or "bce" (Bernoulli likelihood)

    def validate(self) -> None:
        super().validate()
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise GenlabError(f"hidden_dims must be positive widths, got {self.hidden_dims}")
        if not self.beta >= 0:
            raise GenlabError(f"beta must be 0 or more, got {self.beta}")
        if self.recon_loss not in ("mse", "bce"):
            raise GenlabError(f"recon_loss must be 'mse' or 'bce', got '{self.recon_loss}'")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, 1)) per latent dimension, (B, D): Kingma & Welling, appendix B."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-image reconstruction loss (B,), summed over pixels, from decoder logits."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return (torch.sigmoid(logits) - x).pow(2).flatten(1).sum(1)


@register("vae")
class VAE(GenerativeModel):
    config_class = VAEConfig
    default_epochs = 30

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        hidden = list(config.hidden_dims)
        # One head gives μ and log σ² side by side: (B, 2·D).
        self.encoder = torch.nn.Sequential(Flatten(), mlp([IMAGE_PIXELS, *hidden, 2 * config.latent_dim]))
        self.decoder = torch.nn.Sequential(mlp([config.latent_dim, *reversed(hidden), IMAGE_PIXELS]), Unflatten())

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 28, 28) -> μ (B, D), log σ² (B, D)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean μ: the code used for plots and representation metrics."""
        return self.encode_distribution(x)[0]

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) -> pixel logits (B, 1, 28, 28); sigmoid gives the Bernoulli means."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def sample(self, n, generator=None, labels=None) -> torch.Tensor:
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        return self.decode(z)

    def loss(self, x, y, phase, cache) -> LossOutput:
        mu, logvar = self.encode_distribution(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation: z ~ q(z|x)
        logits = self.decode_logits(z)
        recon = reconstruction_loss(logits, x, self.config.recon_loss).mean()
        kl_per_dim = gaussian_kl(mu, logvar).mean(0)  # (D,): shows which dimensions are used
        kl = kl_per_dim.sum()
        loss = recon + self.config.beta * kl
        logs = {"loss": loss, "recon": recon, "kl": kl}
        if not self.training:
            logs["mse"] = (torch.sigmoid(logits) - x).pow(2).mean()
        return LossOutput(loss=loss, logs=logs)
