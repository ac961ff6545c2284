"""Deep convolutional GAN (Radford, Metz & Chintala 2016, https://arxiv.org/abs/1511.06434),
sized for 28×28 digits on a small CPU.

The same game as `gan.py` (non-saturating generator loss, a detached fake batch for the
discriminator step), with DCGAN's architecture and stabilisers:
  - generator: z -> linear -> (2c, 7, 7) -> transposed convolutions -> (1, 28, 28), batch norm
    and ReLU after every hidden layer (`blocks.conv_decoder(batch_norm=True)`);
  - discriminator: strided convolutions with leaky ReLU(0.2);
  - Adam with β1 = 0.5;
  - optional one-sided label smoothing: real target 1 − s (Salimans et al. 2016,
    https://arxiv.org/abs/1606.03498), which keeps D from becoming over-confident.
The convolutions share weights across positions, so D and G learn strokes rather than whole
784-pixel templates.

Changed from the paper for 5,000 training digits and a 2-core CPU, each measured
(benchmarks/README.md section 2): D has no batch norm by default (with it, D told real from fake
at once and G learnt nothing recognisable), dropout after its activations and DiffAugment's random
translation of everything it sees, so it cannot memorise the small training set; G is wider than
D; batch 32 and learning rate 5e-4, for more steps per CPU second.

`ConvGAN` holds the networks DCGAN, CGAN and WGAN-GP share, each passing its own settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import ModelConfig, check_fraction
from ..data import NUM_CLASSES
from ..errors import GenlabError
from . import register
from .base import GenerativeModel, LossOutput
from .blocks import FEATURE_SIDE, conv_decoder, conv_features
from .losses import discriminator_loss, generator_loss


def check_channels(config) -> None:
    """The conv GANs' `channels` (D) and `g_channels` (G): two positive counts each."""
    for name in ("channels", "g_channels"):
        value = tuple(getattr(config, name))
        if len(value) != 2 or min(value) < 1:
            raise GenlabError(f"{name} must be two positive counts, got {value}")


class ConvGAN(GenerativeModel):
    """A conv generator G (noise -> 28×28, `blocks.conv_decoder` with batch norm) and a conv
    critic (`blocks.conv_features` and a linear head), split into the phases "discriminator"
    (everything but G) and "generator". Subclasses pass their own critic settings."""

    family = "adversarial"
    can_sample = True
    phases = ("discriminator", "generator")
    adam_betas = (0.5, 0.999)  # β1 = 0.5 (Radford et al. 2016): less momentum, fewer oscillations

    def __init__(self, config, *, d_norm: str | None, d_dropout: float, max_shift: int, head_bias: bool = True):
        super().__init__(config)
        channels = tuple(self.config.channels)
        # (B, z + one-hot inputs) -> logits (B, 1, 28, 28)
        self.generator = conv_decoder(self.config.latent_dim + self.one_hot_inputs(), tuple(self.config.g_channels), batch_norm=True)
        self.max_shift = max_shift  # pixels (DiffAugment)
        self.features = conv_features(channels, norm=d_norm, dropout=d_dropout)  # (B, 1, 28, 28) -> (B, F)
        self.head = nn.Linear(channels[1] * FEATURE_SIDE**2, 1, bias=head_bias)  # (B, F) -> (B, 1) logit

    def one_hot_inputs(self) -> int:
        """How many one-hot entries G reads beside z: CGAN's digit (10); SCGAN's cluster."""
        return NUM_CLASSES if self.conditional else 0

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        if phase == "generator":
            return list(self.generator.parameters())
        not_g = {id(p) for p in self.generator.parameters()}
        return [p for p in self.parameters() if id(p) not in not_g]  # D: everything else

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The generator: (B, latent_dim) -> images (B, 1, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.generator(z))

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """What D looks at: real and fake images alike shifted by up to `max_shift` pixels
        (DiffAugment, Zhao et al. 2020, https://arxiv.org/abs/2006.10738). Differentiable, so G
        learns through it; it keeps D from memorising the 5,000 training digits."""
        return translate(images, self.max_shift) if self.max_shift else images

    def critic(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's logits (B,) for images in [0, 1] (rescaled to [−1, 1], the range DCGAN uses)."""
        return self.head(self.features(images * 2 - 1)).squeeze(1)


@dataclass
class DCGANConfig(ModelConfig):
    latent_dim: int = 64  # noise size; GANs want more than 2 dimensions
    channels: tuple[int, ...] = (16, 32)  # D's conv channels (28->14->7); small: a 2-core CPU budget
    g_channels: tuple[int, ...] = (32, 64)  # G's channels, mirrored (7->14->28): G wider than D
    d_norm: Literal["none", "batch", "layer"] = "none"  # D's norm after the second conv: "none", "batch" (the paper's; D wins outright on 5k digits) or "layer"
    d_dropout: float = 0.3  # dropout after each of D's activations (keeps D from memorising a small data set)
    label_smoothing: float = 0.0  # one-sided: real target = 1 − this (Salimans et al. 2016); 0.1 also works
    translate: int = 2  # DiffAugment: shift every image D sees by up to this many pixels (0: off)

    def validate(self) -> None:
        super().validate()
        check_channels(self)
        check_fraction("d_dropout", self.d_dropout, 1)
        check_fraction("label_smoothing", self.label_smoothing, 0.5)
        if not 0 <= self.translate < 14:
            raise GenlabError(f"translate must be 0 to 13 pixels, got {self.translate}")


@register("dcgan")
class DCGAN(ConvGAN):
    config_class = DCGANConfig

    @classmethod
    def defaults(cls, config: DCGANConfig) -> dict:
        # lr 5e-4 and batch 32: twice the steps per CPU second, better at this budget (benchmarks/README.md section 2).
        return {"epochs": 20, "batch_size": 32, "lr": 5e-4}

    def __init__(self, config: DCGANConfig):
        norm = None if config.d_norm == "none" else config.d_norm
        super().__init__(config, d_norm=norm, d_dropout=config.d_dropout, max_shift=config.translate)

    def loss(self, x, y, phase, cache) -> LossOutput:
        if "z" not in cache:  # one noise batch per training batch, shared by both phases
            cache["z"] = torch.randn(x.shape[0], self.config.latent_dim, device=x.device)
        return self._game_loss(x, y if self.conditional else None, phase, cache)  # CGAN: fakes of the real batch's digits

    def _game_loss(self, x, labels, phase, cache) -> LossOutput:
        """One phase of the game on real images x and the fakes G(cache["z"]), both judged
        with `labels` (None: unconditional)."""
        if phase == "discriminator":
            with torch.no_grad():
                fake = self.decode(cache["z"], labels=labels)
            logs = discriminator_loss(
                self.critic(self.augment(x), labels), self.critic(self.augment(fake), labels), self.config.label_smoothing
            )
            return LossOutput(loss=logs["d_loss"], logs=logs)
        g_loss = generator_loss(self.critic(self.augment(self.decode(cache["z"], labels=labels)), labels))  # −log D(G(z))
        return LossOutput(loss=g_loss, logs={"g_loss": g_loss})

    @torch.no_grad()
    def eval_losses(self, x, y) -> dict[str, torch.Tensor]:
        """The training figures on a test batch in one pass: one fake batch, judged once, gives
        both players' losses (the base class would make and judge it once per phase)."""
        labels = y if self.conditional else None
        fake = self.decode(torch.randn(x.shape[0], self.config.latent_dim, device=x.device), labels=labels)
        fake_logits = self.critic(fake, labels)
        logs = discriminator_loss(self.critic(x, labels), fake_logits, self.config.label_smoothing)
        logs["g_loss"] = generator_loss(fake_logits)
        return logs


def translate(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each image (B, C, H, W) by its own random (dy, dx) in [−max_shift, max_shift],
    filling with 0 (background); a gather, so gradients flow to the images."""
    b, c, h, w = images.shape
    shift = torch.randint(-max_shift, max_shift + 1, (2, b, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device).view(1, h, 1) - shift[0]  # (B, H, 1): source row
    cols = torch.arange(w, device=images.device).view(1, 1, w) - shift[1]  # (B, 1, W): source column
    inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1)  # (B, 1, H, W)
    source = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
    return images.flatten(2).gather(2, source).view(b, c, h, w) * inside
