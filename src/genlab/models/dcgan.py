"""Deep convolutional GAN (Radford, Metz & Chintala 2016, https://arxiv.org/abs/1511.06434),
sized for 28×28 digits on a small CPU.

The same game as `gan.py` (non-saturating generator loss, a detached fake batch for the
discriminator step), with DCGAN's architecture and stabilisers:
  - generator: z -> linear -> (2c, 7, 7) -> transposed convolutions -> (1, 28, 28), batch norm
    and ReLU after every hidden layer (`blocks.conv_decoder(batch_norm=True)`);
  - discriminator: strided convolutions with leaky ReLU(0.2), batch norm after the second
    (never on the input layer), real and fake batches passed separately;
  - Adam with β1 = 0.5, learning rate 2e-4;
  - optional one-sided label smoothing: real target 1 − s (Salimans et al. 2016,
    https://arxiv.org/abs/1606.03498), which keeps D from becoming over-confident.
The convolutions share weights across positions, so D and G learn strokes rather than whole
784-pixel templates: this is what lets a DCGAN cover every digit where an MLP GAN of the same
budget collapses to a few.

`cgan.py` and `wgan_gp.py` reuse this class's generator, discriminator and sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import GenlabError
from . import register
from .base import GenerativeModel, LossOutput
from .blocks import FEATURE_SIDE, conv_decoder, conv_features, one_hot

NUM_CLASSES = 10


@dataclass
class DCGANConfig(ModelConfig):
    latent_dim: int = 64  # noise size; GANs want more than 2 dimensions
    channels: tuple[int, ...] = (32, 64)  # D's conv channels (28->14->7); G mirrors them (7->14->28)
    d_norm: str = "batch"  # normalisation in D after the second conv: "batch" (DCGAN), "layer" or "none"
    label_smoothing: float = 0.0  # one-sided: real target = 1 − this (Salimans et al. 2016); 0.1 also works

    def validate(self) -> None:
        super().validate()
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise GenlabError(f"channels must be two positive counts, got {tuple(self.channels)}")
        if self.d_norm not in ("batch", "layer", "none"):
            raise GenlabError(f"d_norm must be 'batch', 'layer' or 'none', got '{self.d_norm}'")
        if not 0 <= self.label_smoothing < 0.5:
            raise GenlabError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


@register("dcgan")
class DCGAN(GenerativeModel):
    config_class = DCGANConfig
    family = "adversarial"
    phases = ("discriminator", "generator")
    default_lr = 2e-4
    default_epochs = 12  # lab budget on 2 CPU cores; see notes/benchmarks for the measured quality
    adam_betas = (0.5, 0.999)  # β1 = 0.5 (Radford et al. 2016): less momentum, fewer oscillations

    def __init__(self, config: DCGANConfig):
        super().__init__(config)
        channels = tuple(config.channels)
        n_labels = NUM_CLASSES if self.conditional else 0  # CGAN: a one-hot digit is appended to z
        self.generator = conv_decoder(config.latent_dim + n_labels, channels, batch_norm=True)  # (B, z) -> logits (B, 1, 28, 28)
        norm = None if config.d_norm == "none" else config.d_norm
        self.features = conv_features(channels, norm=norm)  # (B, 1, 28, 28) -> (B, F)
        self.head = nn.Linear(channels[1] * FEATURE_SIDE**2, 1)  # (B, F) -> (B, 1) logit

    # --- the two players ------------------------------------------------------------------
    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        generator = {id(p) for p in self.generator.parameters()}
        if phase == "generator":
            return list(self.generator.parameters())
        return [p for p in self.parameters() if id(p) not in generator]  # D: everything else

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim) -> images (B, 1, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.generator(z))

    def critic(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's logits (B,) for images in [0, 1] (rescaled to [−1, 1], the range DCGAN uses)."""
        return self.head(self.features(images * 2 - 1)).squeeze(1)

    def sample(self, n, generator=None, labels=None) -> torch.Tensor:
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        return self.generate(z, labels)

    # --- the game -------------------------------------------------------------------------
    def loss(self, x, y, phase, cache) -> LossOutput:
        if "z" not in cache:  # one noise batch per training batch, shared by both phases
            cache["z"] = torch.randn(x.shape[0], self.config.latent_dim, device=x.device)
        labels = y if self.conditional else None  # CGAN: fakes of the same digits as the real batch
        if phase == "discriminator":
            with torch.no_grad():
                fake = self.generate(cache["z"], labels)
            real_logits, fake_logits = self.critic(x, labels), self.critic(fake, labels)
            real_target = torch.full_like(real_logits, 1.0 - self.config.label_smoothing)
            d_loss = F.binary_cross_entropy_with_logits(real_logits, real_target) + F.binary_cross_entropy_with_logits(
                fake_logits, torch.zeros_like(fake_logits)
            )
            logs = {"d_loss": d_loss, "d_real": torch.sigmoid(real_logits).mean(), "d_fake": torch.sigmoid(fake_logits).mean()}
            return LossOutput(loss=d_loss, logs=logs)
        fake_logits = self.critic(self.generate(cache["z"], labels), labels)
        g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))  # −log D(G(z))
        return LossOutput(loss=g_loss, logs={"g_loss": g_loss})


def default_labels(n: int, device: torch.device) -> torch.Tensor:
    """Labels for a conditional model asked to sample without any: 0, 1, …, 9, 0, 1, … so the
    digits are equally frequent (what the metrics' class histogram expects)."""
    return torch.arange(n, device=device) % NUM_CLASSES


def check_labels(labels: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """Labels a user passed to `sample`/`decode` (or the balanced default when None), checked
    once here rather than in the training step: (n,) long on `device`."""
    if labels is None:
        return default_labels(n, device)
    labels = torch.as_tensor(labels, device=device).long().reshape(-1)
    if labels.shape[0] != n:
        raise GenlabError(f"expected {n} labels, one per image, got {labels.shape[0]}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise GenlabError(f"labels must be digits 0 to {NUM_CLASSES - 1}")
    return labels


def label_input(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, D) noise/code and (B,) digits -> (B, D + 10): the input of a conditional decoder."""
    return torch.cat([z, one_hot(labels, NUM_CLASSES).to(z.dtype)], dim=1)
