"""Conditional VAE (Sohn, Lee & Yan 2015, https://papers.nips.cc/paper/5775): the decoder
p(x | z, y) is told the digit y, so the code z only has to carry the *style* (slant, width,
stroke) and `sample(n, labels=[7, 7, …])` draws sevens.

Loss per image, the VAE's terms (`losses.elbo_terms`) with the label added to the decoder:
    recon(x, decoder(z, y)) + β · KL(q(z|x) || N(0, I)) + classifier_weight · CE(q(y|x), y)
Design choices, and why:
  - The encoder sees the image only, q(z|x) (Sohn et al. also feed y; on MNIST y is a function
    of x, so the encoder can work it out). This keeps `encode(x)` label-free, so the latent
    figures and the 5-NN metric work as for the VAE; a 5-NN accuracy near chance is then the
    evidence that z holds style rather than class.
  - The encoder also predicts the digit, q(y|x), from the same features (10 more outputs of
    its last layer, trained with cross-entropy; the classifier of Kingma et al. 2014's M2,
    https://arxiv.org/abs/1406.5298). `reconstruct(x)` without labels decodes with the
    predicted digit, so reconstructions need no labels either.
  - `decode(z)` without labels draws the digit `plot_digit` (the latent-manifold figure then
    shows that digit's styles); `sample(n)` without labels draws 0, 1, …, 9, 0, … in turn.
Defaults: the MLP encoder/decoder and the Bernoulli likelihood (benchmarks/README.md, "Other models").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import NUM_CLASSES
from ..errors import GenlabError
from . import register
from .base import GenerativeModel, LossOutput, check_digit
from .blocks import encoder_decoder, label_input
from .losses import LOGVAR_RANGE, elbo_terms, reparameterize
from .vae import ELBOConfig, ReconLoss, vae_defaults


@dataclass
class CVAEConfig(ELBOConfig):
    latent_dim: int = 2  # style code; 2-D so the style plane can be drawn (the digit comes from y)
    recon_loss: ReconLoss = "bce"  # Bernoulli likelihood (sharper samples than "mse")
    classifier_weight: float = 1.0  # weight of the encoder's digit cross-entropy (0: untrained head)
    plot_digit: int = 8  # the digit `decode(z)` draws when no labels are given (manifold figure)

    def validate(self) -> None:
        super().validate()
        if not self.classifier_weight >= 0:
            raise GenlabError(f"classifier_weight must be 0 or more, got {self.classifier_weight}")
        check_digit("plot_digit", self.plot_digit)


@register("cvae")
class CVAE(GenerativeModel):
    config_class = CVAEConfig
    can_encode = True
    can_sample = True
    has_likelihood = True
    conditional = True

    @classmethod
    def defaults(cls, config: CVAEConfig) -> dict:
        # The CVAE's figures were measured at batch 128 / 30 epochs: its 2-D code holds style, so the
        # VAE's 5-NN tuning does not apply. With --arch conv, the conv VAE's settings.
        return vae_defaults(config, epochs=30, batch_size=128)

    def __init__(self, config: CVAEConfig):
        super().__init__(config)
        d = self.config.latent_dim
        # Encoder: image -> (μ, log σ², digit logits) side by side, (B, 2·D + 10);
        # decoder: [z, onehot(y)] (B, D + 10) -> pixel logits.
        self.encoder, self.decoder = encoder_decoder(self.config, 2 * d + NUM_CLASSES, d + NUM_CLASSES)

    def _encoder_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 1, 28, 28) -> μ (B, D), log σ² (B, D), digit logits (B, 10)."""
        d = self.config.latent_dim
        out = self.encoder(x)
        mu, logvar, digit_logits = out[:, :d], out[:, d : 2 * d], out[:, 2 * d :]
        return mu, logvar.clamp(*LOGVAR_RANGE), digit_logits

    def encode_distribution(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) from the image alone: the labels are not needed (see the module docstring)."""
        mu, logvar, _ = self._encoder_heads(x)
        return mu, logvar

    def encode(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self._encoder_heads(x)[0]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's digit guess for each image: (B,) long."""
        return self._encoder_heads(x)[2].argmax(1)

    def decode_logits(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) codes and (B,) digits -> pixel logits (B, 1, 28, 28); no labels: `plot_digit`."""
        return self.decoder(label_input(z, labels, self.config.plot_digit))

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z, labels=labels))

    def reconstruct(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the posterior mean with the given digits, or with the encoder's guess."""
        mu, _, digit_logits = self._encoder_heads(x)
        return self.decode(mu, labels=digit_logits.argmax(1) if labels is None else labels)

    def loss(self, x, y, phase, cache) -> LossOutput:
        mu, logvar, digit_logits = self._encoder_heads(x)
        logits = self.decode_logits(reparameterize(mu, logvar), labels=y)
        loss, logs = elbo_terms(mu, logvar, logits, x, self.config.recon_loss, self.config.beta, self.training)
        class_ce = F.cross_entropy(digit_logits.float(), y)
        loss = loss + self.config.classifier_weight * class_ce
        logs.update(loss=loss, class_ce=class_ce)
        if not self.training:
            logs["class_acc"] = (digit_logits.argmax(1) == y).float().mean()
        return LossOutput(loss=loss, logs=logs)
