"""Adversarial autoencoder (Makhzani et al. 2015, https://arxiv.org/abs/1511.05644): the bridge
between the two families.

An autoencoder (the reconstruction family) whose codes are pushed towards a prior p(z) = N(0, I)
not by a KL term, as in the VAE, but by a GAN on the latent space (the adversarial family): a
small discriminator D tells prior samples from codes E(x), and the encoder learns to fool it.
Once the codes fill the prior, decoding z ~ N(0, I) draws digits: unlike the plain AE, an AAE
can sample. Two phases each batch:
  1. discriminator: BCE with prior samples as "real", the batch's codes (made without gradient)
     as "fake";
  2. autoencoder (encoder and decoder): reconstruction + adv_weight · (−log D(E(x))).
The paper steps the reconstruction and the encoder's adversarial loss with separate optimizers;
here they are one loss on one optimizer (`adv_weight` sets the balance), so that every
parameter belongs to exactly one phase, as the training loop expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import check_widths
from ..errors import GenlabError
from . import register
from .base import GenerativeModel, LossOutput
from .blocks import AutoencoderConfig, encoder_decoder, mlp
from .losses import discriminator_loss, generator_loss, reconstruction_loss
from .vae import ReconLoss


@dataclass
class AAEConfig(AutoencoderConfig):
    latent_dim: int = 2  # 2-D: the codes can be drawn and compared with the Gaussian prior directly
    disc_dims: tuple[int, ...] = (128, 128)  # hidden widths of the latent-space discriminator
    adv_weight: float = 1.0  # weight of the encoder's adversarial loss beside the reconstruction (nats per image)
    recon_loss: ReconLoss = "bce"  # "bce" (Bernoulli, nats per image) or "mse" (summed over pixels)

    def validate(self) -> None:
        super().validate()
        check_widths("disc_dims", self.disc_dims)
        if not self.adv_weight >= 0:
            raise GenlabError(f"adv_weight must be 0 or more, got {self.adv_weight}")


@register("aae")
class AAE(GenerativeModel):
    """An autoencoder (the networks of `encoder_decoder`, as the AE's) plus a latent-space
    discriminator; sampling decodes draws from the prior the codes were matched to."""

    config_class = AAEConfig
    phases = ("discriminator", "autoencoder")
    can_encode = True
    can_sample = True

    @classmethod
    def defaults(cls, config: AAEConfig) -> dict:
        return {"epochs": 30, "batch_size": 128, "lr": 1e-3, "activation": "relu"}

    def __init__(self, config: AAEConfig):
        super().__init__(config)
        d = self.config.latent_dim
        self.encoder, self.decoder = encoder_decoder(self.config, d, d)
        # (B, D) code -> (B, 1) logit: "drawn from the prior" vs "made by the encoder"
        self.discriminator = mlp([d, *self.config.disc_dims, 1], nn.LeakyReLU, negative_slope=0.2)

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        if phase == "discriminator":
            return list(self.discriminator.parameters())
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    def encode(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))

    def loss(self, x, y, phase, cache) -> LossOutput:
        if phase == "discriminator":
            with torch.no_grad():
                codes = self.encode(x)
            prior = torch.randn_like(codes)
            logs = discriminator_loss(self.discriminator(prior).squeeze(1), self.discriminator(codes).squeeze(1))
            return LossOutput(loss=logs["d_loss"], logs=logs)
        codes = self.encode(x)
        logits = self.decoder(codes)
        recon = reconstruction_loss(logits, x, self.config.recon_loss).mean()
        g_loss = generator_loss(self.discriminator(codes).squeeze(1))  # −log D(E(x))
        loss = recon + self.config.adv_weight * g_loss
        logs = {"loss": loss, "recon": recon, "g_loss": g_loss}
        if not self.training:
            logs["mse"] = (torch.sigmoid(logits) - x).pow(2).mean()
        return LossOutput(loss=loss, logs=logs)
