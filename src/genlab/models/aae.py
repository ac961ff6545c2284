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
import torch.nn.functional as F
from torch import nn

from ..config import check_widths
from ..errors import GenlabError
from . import register
from .ae import AE
from .base import LossOutput
from .blocks import AutoencoderConfig, mlp
from .vae import reconstruction_loss


@dataclass
class AAEConfig(AutoencoderConfig):
    latent_dim: int = 2  # 2-D: the codes can be drawn and compared with the Gaussian prior directly
    arch: str = "mlp"  # "mlp" or "conv", as for the AE (mlp: better codes per CPU second at 2-D, measured)
    disc_dims: tuple[int, ...] = (128, 128)  # hidden widths of the latent-space discriminator
    adv_weight: float = 1.0  # weight of the encoder's adversarial loss beside the reconstruction (nats per image)
    recon_loss: str = "bce"  # "bce" (Bernoulli, nats per image) or "mse" (summed over pixels)

    def validate(self) -> None:
        super().validate()
        check_widths("disc_dims", self.disc_dims)
        if not self.adv_weight >= 0:
            raise GenlabError(f"adv_weight must be 0 or more, got {self.adv_weight}")
        if self.recon_loss not in ("mse", "bce"):
            raise GenlabError(f"recon_loss must be 'mse' or 'bce', got '{self.recon_loss}'")


@register("aae")
class AAE(AE):
    """The AE's encoder and decoder (and its encode / decode / reconstruct), plus a latent-space
    discriminator and a prior to sample from."""

    config_class = AAEConfig
    phases = ("discriminator", "autoencoder")
    default_epochs = 30
    default_batch_size = 128  # not the AE's 32: the AAE's defaults were measured at 128

    def __init__(self, config: AAEConfig):
        super().__init__(config)  # the AE's encoder and decoder, built from the same config fields
        d = config.latent_dim
        # (B, D) code -> (B, 1) logit: "drawn from the prior" vs "made by the encoder"
        self.discriminator = mlp([d, *config.disc_dims, 1], nn.LeakyReLU, negative_slope=0.2)

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        if phase == "discriminator":
            return list(self.discriminator.parameters())
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    def sample(self, n, generator=None, labels=None) -> torch.Tensor:
        """Decode draws from the prior N(0, I) the codes were matched to."""
        return self.decode(torch.randn(n, self.config.latent_dim, generator=generator, device=self.device))

    def loss(self, x, y, phase, cache) -> LossOutput:
        if phase == "discriminator":
            with torch.no_grad():
                codes = self.encode(x)
            prior = torch.randn_like(codes)
            real_logits, fake_logits = self.discriminator(prior).squeeze(1), self.discriminator(codes).squeeze(1)
            d_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + F.binary_cross_entropy_with_logits(
                fake_logits, torch.zeros_like(fake_logits)
            )
            logs = {"d_loss": d_loss, "d_real": torch.sigmoid(real_logits).mean(), "d_fake": torch.sigmoid(fake_logits).mean()}
            return LossOutput(loss=d_loss, logs=logs)
        codes = self.encode(x)
        logits = self.decoder(codes)
        recon = reconstruction_loss(logits, x, self.config.recon_loss).mean()
        fool_logits = self.discriminator(codes).squeeze(1)
        g_loss = F.binary_cross_entropy_with_logits(fool_logits, torch.ones_like(fool_logits))  # −log D(E(x))
        loss = recon + self.config.adv_weight * g_loss
        logs = {"loss": loss, "recon": recon, "g_loss": g_loss}
        if not self.training:
            logs["mse"] = (torch.sigmoid(logits) - x).pow(2).mean()
        return LossOutput(loss=loss, logs=logs)
