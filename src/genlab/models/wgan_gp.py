"""Wasserstein GAN with gradient penalty (Gulrajani et al. 2017, https://arxiv.org/abs/1704.00028).

The critic D scores images (no sigmoid); it estimates the Wasserstein-1 distance
    W ≈ E_x[D(x)] − E_z[D(G(z))]
when D is 1-Lipschitz. Instead of clipping weights (the original WGAN), the critic's loss adds
a penalty that pulls the norm of its input gradient to 1 on random points between real and
fake images (eq. 3 of the paper):
    L_D = E[D(G(z))] − E[D(x)] + λ · E[(‖∇_x̂ D(x̂)‖₂ − 1)²],   x̂ = ε·x + (1 − ε)·G(z),
with one ε ~ U[0, 1] per example. The generator minimises −E[D(G(z))].

The paper's recipe, kept here: no batch norm in the critic (the penalty is per example, batch
norm would couple the examples; layer norm is allowed), `critic_steps` = 5 critic updates per
generator update, λ = 10, Adam with lr 1e-4 and β = (0, 0.9).

The training loop steps `model.phases` in order on each batch, so this model's phases are
("critic",) × critic_steps + ("generator",), built per instance. Every critic step sees the
same real batch with fresh noise and fresh ε (the paper draws a new real batch per critic step;
with one batch per loop step this keeps an epoch one pass over the data). The critic's logged
figures are divided by `critic_steps`, so the logs hold their mean over the critic steps.
G runs with its graph once per loop step: the last critic step's fakes are made with it and
kept in `cache`, and the generator step backpropagates through them (judged by the critic as
just updated); the earlier critic steps' fakes are made without a graph. The paper draws fresh
noise for the generator step; these fakes' noise is just as independent of G, and reusing the
fakes the critic last saw is what DCGAN does with its one D step (`dcgan.py`).
The critic's W estimate is the figure to watch: it should fall as the samples improve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import GenlabError
from . import register
from .base import LossOutput
from .dcgan import ConvGAN, check_channels


@dataclass
class WGANGPConfig(ModelConfig):
    latent_dim: int = 64  # noise size
    channels: tuple[int, ...] = (16, 32)  # critic's conv channels (28->14->7), as DCGAN's D
    g_channels: tuple[int, ...] = (32, 64)  # G's channels, mirrored (7->14->28), as DCGAN's G
    d_norm: Literal["layer", "none"] = "layer"  # critic normalisation after the second conv: "layer" or "none" (never batch)
    critic_steps: int = 5  # critic updates per generator update (n_critic in the paper)
    gp_weight: float = 10.0  # λ, weight of the gradient penalty (the paper's value)

    def validate(self) -> None:
        if self.d_norm not in ("layer", "none"):  # before the generic choice check: say why
            raise GenlabError(
                f"d_norm must be 'layer' or 'none' for WGAN-GP, got '{self.d_norm}' "
                "(batch norm couples the examples, which breaks the per-example gradient penalty)"
            )
        super().validate()
        check_channels(self)
        if self.critic_steps < 1:
            raise GenlabError(f"critic_steps must be at least 1, got {self.critic_steps}")
        if not self.gp_weight >= 0:
            raise GenlabError(f"gp_weight must be 0 or more, got {self.gp_weight}")


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """E[(‖∇_x̂ D(x̂)‖₂ − 1)²] on x̂ = ε·real + (1 − ε)·fake, one ε per example: eps (B,).

    `create_graph=True` keeps the gradient differentiable, so the penalty trains the critic.
    Always in float32, also under bf16/fp16 autocast: the input gradient is not under fp16's
    loss scaler (torch's AMP notes scale it by hand), so in fp16 its small entries would flush to
    zero, and in bf16 a norm near 1 has only 3 significant digits for the penalty to pull on.
    """
    eps = eps.view(-1, *([1] * (real.dim() - 1)))  # (B, 1, 1, 1): broadcast over the pixels
    x_hat = (eps * real.float() + (1 - eps) * fake.float()).requires_grad_(True)
    with torch.autocast(x_hat.device.type, enabled=False):
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)  # (B, 1, 28, 28)
    # The tiny constant keeps the norm differentiable where a gradient is exactly zero.
    norm = (grad.flatten(1).pow(2).sum(1) + 1e-12).sqrt()  # (B,)
    return (norm - 1).pow(2).mean()


@register("wgan_gp")
class WGANGP(ConvGAN):
    config_class = WGANGPConfig
    adam_betas = (0.0, 0.9)  # the paper's Adam settings for WGAN-GP

    @classmethod
    def defaults(cls, config: WGANGPConfig) -> dict:
        return {"epochs": 10, "batch_size": 64, "lr": 1e-4}  # the paper's lr and batch

    def __init__(self, config: WGANGPConfig):
        # No dropout and no translation: both would change the critic whose input gradient the
        # penalty constrains. The head has no bias: a constant cancels in E[D(x)] − E[D(G(z))]
        # and in the penalty, so it would never get a gradient.
        norm = None if config.d_norm == "none" else config.d_norm
        super().__init__(config, d_norm=norm, d_dropout=0.0, max_shift=0, head_bias=False)
        self.phases = ("critic",) * self.config.critic_steps + ("generator",)

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        return super().phase_parameters("generator" if phase == "generator" else "discriminator")

    def _fakes(self, n: int, device: torch.device, with_graph: bool) -> torch.Tensor:
        """n fakes from fresh noise; with G's graph only when a generator step will use them."""
        z = torch.randn(n, self.config.latent_dim, device=device)
        with torch.set_grad_enabled(with_graph and torch.is_grad_enabled()):
            return self.decode(z)

    def _critic_terms(self, x: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The critic's loss −W + λ·GP, the W estimate and the penalty, on these fakes and fresh ε."""
        fake = fake.detach()
        wasserstein = self.critic(x).float().mean() - self.critic(fake).float().mean()
        eps = torch.rand(x.shape[0], device=x.device)  # one interpolation coefficient per example
        gp = gradient_penalty(self.critic, x, fake, eps)
        return -wasserstein + self.config.gp_weight * gp, wasserstein, gp

    def loss(self, x, y, phase, cache) -> LossOutput:
        if phase == "critic":
            cache["critic_steps"] = cache.get("critic_steps", 0) + 1
            last = cache["critic_steps"] == self.config.critic_steps  # its fakes are the generator step's
            fake = self._fakes(x.shape[0], x.device, with_graph=last)  # fresh noise and ε at every critic step
            if last:
                cache["fake"] = fake
            loss, wasserstein, gp = self._critic_terms(x, fake)
            share = 1.0 / self.config.critic_steps  # the loop sums logs over the steps: keep their mean
            logs = {"critic_loss": loss.detach() * share, "wasserstein": wasserstein.detach() * share, "gp": gp.detach() * share}
            return LossOutput(loss=loss, logs=logs)
        g_loss = -self.critic(cache["fake"]).float().mean()
        return LossOutput(loss=g_loss, logs={"g_loss": g_loss})

    def eval_losses(self, x, y) -> dict[str, torch.Tensor]:
        """Test split: the same figures as in training, one critic evaluation per batch.

        The penalty needs the critic's input gradient, so autograd is switched back on here
        (evaluation runs under inference mode); x is copied out of inference mode for it.
        """
        with torch.inference_mode(False), torch.enable_grad():
            loss, wasserstein, gp = self._critic_terms(x.clone(), self._fakes(x.shape[0], x.device, with_graph=False))
        with torch.no_grad():
            g_loss = -self.critic(self._fakes(x.shape[0], x.device, with_graph=False)).mean()
        return {"critic_loss": loss.detach(), "wasserstein": wasserstein.detach(), "gp": gp.detach(), "g_loss": g_loss}
