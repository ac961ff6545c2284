"""Conditional VAE (Sohn, Lee & Yan 2015, https://papers.nips.cc/paper/5775): the decoder
p(x | z, y) is told the digit y, so the code z only has to carry the *style* (slant, width,
stroke) and `sample(n, labels=[7, 7, …])` draws sevens.

Loss per image, as in `vae.py` with the label added to the decoder:
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
Defaults: the MLP encoder/decoder (at a 2-D code it beat `--arch conv` on FID per CPU second:
225 vs 257, notes/issue5_results.md) and the Bernoulli likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import GenlabError
from . import register
from .base import GenerativeModel, LossOutput
from .blocks import encoder_decoder
from .dcgan import NUM_CLASSES, check_labels, label_input
from .vae import ACTIVE_KL, LOGVAR_RANGE, VAE, VAEConfig, gaussian_kl, reconstruction_loss


@dataclass
class CVAEConfig(VAEConfig):
    NOT_OPTIONS = ("neighbor_weight",)  # see validate()

    latent_dim: int = 2  # style code; 2-D so the style plane can be drawn (the digit comes from y)
    arch: str = "mlp"  # "mlp" or "conv", as for the VAE (mlp: better samples per CPU second at 2-D, measured)
    recon_loss: str = "bce"  # Bernoulli likelihood (sharper samples than "mse")
    classifier_weight: float = 1.0  # weight of the encoder's digit cross-entropy (0: untrained head)
    plot_digit: int = 8  # the digit `decode(z)` draws when no labels are given (manifold figure)

    def validate(self) -> None:
        super().validate()
        if not self.classifier_weight >= 0:
            raise GenlabError(f"classifier_weight must be 0 or more, got {self.classifier_weight}")
        if not 0 <= self.plot_digit < NUM_CLASSES:
            raise GenlabError(f"plot_digit must be 0 to {NUM_CLASSES - 1}, got {self.plot_digit}")
        if self.neighbor_weight:
            # The CVAE's z is meant to hold style, not class (the label y gives the digit); pulling
            # same-looking digits together in z would put the class back into it.
            raise GenlabError("neighbor_weight is not available for cvae: its z holds style, the digit comes from the label")


@register("cvae")
class CVAE(VAE):
    config_class = CVAEConfig
    conditional = True
    # Not the 2-D VAE's batch 32 / 35 epochs: the CVAE's figures were measured at these (its 2-D
    # code holds style, not the digit, so the VAE's 5-NN tuning does not apply). With --arch conv
    # it takes the conv VAE's lr / batch (VAE.training_defaults): the same networks.
    default_epochs = 30
    default_batch_size = 128

    def __init__(self, config: CVAEConfig):
        GenerativeModel.__init__(self, config)  # not VAE's: both networks get different sizes
        d = config.latent_dim
        # Encoder: image -> (μ, log σ², digit logits) side by side, (B, 2·D + 10);
        # decoder: [z, onehot(y)] (B, D + 10) -> pixel logits.
        self.encoder, self.decoder = encoder_decoder(config, 2 * d + NUM_CLASSES, d + NUM_CLASSES)

    def _encoder_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 1, 28, 28) -> μ (B, D), log σ² (B, D), digit logits (B, 10)."""
        d = self.config.latent_dim
        out = self.encoder(x)
        mu, logvar, digit_logits = out[:, :d], out[:, d : 2 * d], out[:, 2 * d :]
        return mu, logvar.clamp(*LOGVAR_RANGE), digit_logits

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar, _ = self._encoder_heads(x)
        return mu, logvar

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's digit guess for each image: (B,) long."""
        return self._encoder_heads(x)[2].argmax(1)

    def decode_logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) codes and (B,) digits -> pixel logits (B, 1, 28, 28); no labels: `plot_digit`."""
        if labels is None:
            labels = torch.full((z.shape[0],), self.config.plot_digit, dtype=torch.long, device=z.device)
        return self.decoder(label_input(z, labels))

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z, labels))

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the posterior mean with the given digits, or with the encoder's guess."""
        mu, _, digit_logits = self._encoder_heads(x)
        return self.decode(mu, digit_logits.argmax(1) if labels is None else labels)

    def sample(self, n, generator=None, labels=None) -> torch.Tensor:
        """n images of the given digits (n,); no labels: 0, 1, …, 9, 0, … (equal frequencies)."""
        labels = check_labels(labels, n, self.device)
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        return self.decode(z, labels)

    def loss(self, x, y, phase, cache) -> LossOutput:
        mu, logvar, digit_logits = self._encoder_heads(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation: z ~ q(z|x)
        logits = self.decode_logits(z, y)
        recon = reconstruction_loss(logits, x, self.config.recon_loss).mean()
        kl_per_dim = gaussian_kl(mu, logvar).mean(0)  # (D,)
        kl = kl_per_dim.sum()
        class_ce = F.cross_entropy(digit_logits, y)
        loss = recon + self.config.beta * kl + self.config.classifier_weight * class_ce
        logs = {"loss": loss, "recon": recon, "kl": kl, "class_ce": class_ce}
        if not self.training:
            logs["mse"] = (torch.sigmoid(logits) - x).pow(2).mean()
            logs["active_dims"] = (kl_per_dim > ACTIVE_KL).sum().float()
            logs["class_acc"] = (digit_logits.argmax(1) == y).float().mean()
        return LossOutput(loss=loss, logs=logs)
