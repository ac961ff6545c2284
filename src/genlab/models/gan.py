"""Generative adversarial network (Goodfellow et al. 2014, https://arxiv.org/abs/1406.2661).

A generator G maps noise z ~ N(0, I) to images; a discriminator D tells real from generated.
One model, two optimizers stepping in order each batch:
  1. discriminator: maximise log D(x) + log(1 − D(G(z))) on a fake batch G(z), detached;
  2. generator: the non-saturating loss −log D(G(z)) on the same fake batch, judged by the D
     just updated (strong gradients early on, when D rejects every fake with confidence).
G runs once per batch: its fake batch is made with its graph in D's phase and kept in the
phases' `cache`, so G's phase backpropagates through it (as pytorch/examples' dcgan/main.py).
Logged: d_loss, g_loss, D(x) = mean D on real digits, D(G(z)) = mean D on fakes. At the game's
equilibrium D(x) ≈ D(G(z)) ≈ 0.5; the two losses oscillate rather than fall, which is normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig, check_fraction, check_widths
from . import register
from .base import GenerativeModel, LossOutput
from .blocks import IMAGE_PIXELS, Dropout, Flatten, Unflatten
from .losses import discriminator_loss, generator_loss

# An epoch-mean discriminator loss below this counts as "D wins every step": at the game's
# equilibrium it is 2·log 2 ≈ 1.39; 0.05 means D(x) ≈ 0.98 and D(G(z)) ≈ 0.02 throughout.
D_LOSS_COLLAPSE = 0.05


@dataclass
class GANConfig(ModelConfig):
    latent_dim: int = 64  # noise size; GANs want more than 2 dimensions
    hidden_dims: tuple[int, ...] = (256, 512, 1024)  # generator widths; the discriminator mirrors them
    batch_norm: bool = True  # batch norm in the generator's hidden layers (keeps G from collapsing early)
    dropout: float = 0.3  # dropout in the discriminator's hidden layers (slows D down, fewer vanishing G gradients)
    label_smoothing: float = 0.0  # one-sided: real target = 1 − this (Salimans et al. 2016)

    def validate(self) -> None:
        super().validate()
        check_widths("hidden_dims", self.hidden_dims)
        check_fraction("dropout", self.dropout, 1)
        check_fraction("label_smoothing", self.label_smoothing, 0.5)


@register("gan")
class GAN(GenerativeModel):
    config_class = GANConfig
    family = "adversarial"
    phases = ("discriminator", "generator")
    can_sample = True
    adam_betas = (0.5, 0.999)  # β1 = 0.5 (Radford et al. 2016): less momentum, fewer oscillations

    @classmethod
    def defaults(cls, config: GANConfig) -> dict:
        # Batch 64: more, smaller steps; the game needs steps more than large batches.
        return {"epochs": 40, "batch_size": 64, "lr": 2e-4}

    def __init__(self, config: GANConfig):
        super().__init__(config)
        config = self.config
        hidden = list(config.hidden_dims)
        g_layers: list[nn.Module] = []
        for n_in, n_out in zip([config.latent_dim, *hidden[:-1]], hidden):
            g_layers += [nn.Linear(n_in, n_out), *([nn.BatchNorm1d(n_out)] if config.batch_norm else []), nn.LeakyReLU(0.2)]
        self.generator = nn.Sequential(*g_layers, nn.Linear(hidden[-1], IMAGE_PIXELS), Unflatten())  # (B, z) -> (B, 1, 28, 28) logits
        d_layers: list[nn.Module] = [Flatten()]
        for n_in, n_out in zip([IMAGE_PIXELS, *hidden[::-1][:-1]], hidden[::-1]):
            d_layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.2), *([Dropout(config.dropout)] if config.dropout else [])]
        self.discriminator = nn.Sequential(*d_layers, nn.Linear(hidden[0], 1))  # (B, 1, 28, 28) -> (B, 1) logits

    def phase_parameters(self, phase):
        return list((self.discriminator if phase == "discriminator" else self.generator).parameters())

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The generator: (B, latent_dim) -> images (B, 1, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.generator(z))

    def critic(self, images: torch.Tensor) -> torch.Tensor:
        """Discriminator logits (B,) for images in [0, 1] (rescaled to [−1, 1] inside)."""
        return self.discriminator(images * 2 - 1).squeeze(1)

    def health_warnings(self, train_logs: dict[str, float]) -> list[str]:
        """An epoch-mean d_loss near 0 means D won nearly every step of it, so G's gradient
        vanishes or G collapses (Arjovsky & Bottou 2017, https://arxiv.org/abs/1701.04862)."""
        d_loss = train_logs.get("d_loss")
        if d_loss is not None and d_loss < D_LOSS_COLLAPSE:
            return [
                f"discriminator loss {d_loss:.3g} (epoch mean) is near 0: D tells every fake apart, so the generator "
                "learns little or collapses; try a lower --lr or --label-smoothing 0.1"
            ]
        return []

    def loss(self, x, y, phase, cache) -> LossOutput:
        if phase == "discriminator":  # G's one pass of the batch: the fakes keep its graph for G's phase
            cache["fake"] = self.decode(torch.randn(x.shape[0], self.config.latent_dim, device=x.device))
            logs = discriminator_loss(self.critic(x), self.critic(cache["fake"].detach()), self.config.label_smoothing)
            return LossOutput(loss=logs["d_loss"], logs=logs)
        g_loss = generator_loss(self.critic(cache["fake"]))  # −log D(G(z)), D as just updated
        return LossOutput(loss=g_loss, logs={"g_loss": g_loss})
