"""What every genlab model is: an nn.Module that owns its math and declares its optimizers.

The training loop (`genlab.train`) never asks which model it trains. Per batch it walks the
model's `phases` in order; for each phase it calls `model.loss(x, y, phase, cache)`, steps the
optimizer that owns that phase's parameters, and logs what the model returned. An AE or VAE has
one phase; a GAN has two ("discriminator" then "generator"), sharing a per-batch `cache` so the
generator's fake batch is made once (detached for the discriminator step, as in DCGAN).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ModelConfig


@dataclass
class LossOutput:
    """The loss to backpropagate and the scalar tensors worth logging (all batch means)."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class GenerativeModel(nn.Module):
    """Base class; subclasses set the class attributes and implement `loss`."""

    config_class: type[ModelConfig] = ModelConfig
    family: str = "reconstruction"  # "reconstruction" or "adversarial": the report groups by it
    phases: tuple[str, ...] = ("model",)  # optimizer groups, in the order they step each batch
    default_lr: float = 1e-3
    default_epochs: int = 20
    default_batch_size: int = 128
    adam_betas: tuple[float, float] = (0.9, 0.999)
    conditional: bool = False  # True: sample/decode take digit labels

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config

    @classmethod
    def training_defaults(cls, config: ModelConfig) -> dict:
        """Epochs, lr and batch size for a run that leaves them unset; a family whose best
        settings depend on its config (the VAE's `arch`) overrides this."""
        return {"epochs": cls.default_epochs, "lr": cls.default_lr, "batch_size": cls.default_batch_size}

    # --- training -------------------------------------------------------------------------
    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        """Parameters the optimizer of `phase` updates. One phase: all of them."""
        return list(self.parameters())

    def loss(self, x: torch.Tensor, y: torch.Tensor, phase: str, cache: dict) -> LossOutput:
        raise NotImplementedError

    def prepare_training(self, x_train: torch.Tensor) -> None:
        """Called by the loop once before training (and again on resume) with all the training
        images, on the model's device. Most models need nothing; the AE and VAE build their
        neighbour graph here when `neighbor_weight` > 0 (models/neighbors.py)."""

    @torch.no_grad()
    def eval_losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Test-split figures for one batch, as batch means; the loop averages over batches."""
        logs: dict[str, torch.Tensor] = {}
        cache: dict = {}
        for phase in self.phases:
            logs.update(self.loss(x, y, phase, cache).logs)
        return logs

    # --- what a user calls ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def sample(self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n images (n, 1, 28, 28) in [0, 1]. Reconstruction models without a prior refuse."""
        raise NotImplementedError(f"{type(self).__name__} cannot sample: it has no prior over its latent space")

    @property
    def can_sample(self) -> bool:
        """True when the subclass implements `sample` (it has a prior or a generator)."""
        return type(self).sample is not GenerativeModel.sample

    def has_encoder(self) -> bool:
        return hasattr(self, "encode")

    def extra_repr(self) -> str:
        return f"latent_dim={self.config.latent_dim}"
