"""What every genlab model is: an nn.Module that owns its math, declares its optimizers and says
what it can do.

The training loop (`genlab.train`) never asks which model it trains. Per batch it walks the
model's `phases` in order; for each phase it calls `model.loss(x, y, phase, cache)`, steps the
optimizer that owns that phase's parameters, and logs what the model returned. An AE or VAE has
one phase; a GAN has two ("discriminator" then "generator").

The phase contract, for every model: every parameter requires grad in every phase, and the
loop backpropagates a phase's loss into that phase's own parameters only (`phase_parameters`,
through autograd's `inputs`), after which only they step. `cache` is one dict per batch, shared
by its phases in order; what a phase leaves there, graph included, a later phase may use. So a
GAN runs G once per batch: D's phase makes the fake batch with G's graph, detaches it for its
own loss and leaves it in `cache`; G's phase judges it with the D just updated and
backpropagates through D into G (as pytorch/examples' dcgan/main.py). A phase that needs no
graph through other players' weights says so itself (`torch.no_grad()`, `.detach()`). Nothing
between the two phases may change in place a tensor that graph saved (a second forward through
G's batch norm would: its running statistics).

Everything else (evaluation, figures, the CLI, the explorer) reads the capability flags below and
calls the methods they promise, with one signature each: labels are always the keyword `labels`,
None for an unconditional model (or for a conditional one's default digits).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ModelConfig
from ..data import NUM_CLASSES
from ..errors import GenlabError
from .sampling import SamplerOptions


@dataclass
class LossOutput:
    """The loss to backpropagate and the scalar tensors worth logging (all batch means)."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class NotSupported(GenlabError):
    """A model was asked for something its capability flags say it cannot do."""


class GenerativeModel(nn.Module):
    """Base class. A subclass sets `config_class`, its flags and `phases`, states its `defaults`,
    and implements `loss`, `decode` and whatever its flags promise."""

    config_class: type[ModelConfig] = ModelConfig
    family: str = "reconstruction"  # "reconstruction", "adversarial" or "flow": the report groups by it
    phases: tuple[str, ...] = ("model",)  # optimizer groups, in the order they step each batch
    adam_betas: tuple[float, float] = (0.9, 0.999)

    # What the model can do; callers read these, never probe for methods.
    can_encode: bool = False  # encode(x) and reconstruct(x): it has an encoder (AE, VAE, CVAE, AAE)
    can_sample: bool = False  # sample(n): codes from a prior N(0, I), decoded (VAE, AAE, CVAE, GANs)
    has_likelihood: bool = False  # encode_distribution(x), decode_logits(z): ELBO / IWAE bounds (VAE, CVAE)
    conditional: bool = False  # `labels` picks the digit in decode / sample / reconstruct (CVAE, CGAN)
    # True: a sample integrates an ODE, `sampler.steps` sets its cost (nfe(sampler) network passes
    # per image, not one); trajectory() shows the way from noise to digit (flow)
    iterative: bool = False
    has_density: bool = False  # log_density(x): an exact log-likelihood of grey digits, reported in bits/dim (flow)
    # load_run stores conv weights channels-last on CPU, where oneDNN infers faster; False for a
    # network whose group norm runs several times slower on channels-last tensors (the flow's U-Net)
    channels_last: bool = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = self.resolved_config(config)

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        """The flags above by name: what `genlab eval`, the figures and the explorer can ask of it."""
        return {name: getattr(cls, name) for name in CAPABILITIES}

    @classmethod
    def defaults(cls, config: ModelConfig) -> dict:
        """Every default of a run that may depend on the model's config, in one place: the loop's
        `epochs`, `batch_size` and `lr`, any other TrainConfig field left None that the model
        wants set its own way (`ema`, `lr_schedule`, `warmup_steps`: SCGAN's `ema`; what a model
        leaves unstated comes from `config.LOOP_DEFAULTS`), and any model-config field left None
        (the autoencoders' `activation`). Filled in once when a run starts
        (`train.resolve_configs`) and written to config.json, so a run folder records what it
        trained with."""
        return {"epochs": 20, "batch_size": 128, "lr": 1e-3}

    @classmethod
    def resolved_config(cls, config: ModelConfig) -> ModelConfig:
        """A validated copy of `config` with the fields left None set from `defaults`."""
        config.validate()
        unset = {f.name for f in dataclasses.fields(config) if getattr(config, f.name) is None}
        config = dataclasses.replace(config, **{k: v for k, v in cls.defaults(config).items() if k in unset})
        config.validate()
        return config

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

    def health_warnings(self, train_logs: dict[str, float]) -> list[str]:
        """Model-specific warnings read once per epoch by genlab.health (the GANs' D-loss check)."""
        return []

    # --- what a user calls ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def decode(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Codes or noise (B, latent_dim) -> images (B, 1, 28, 28) in [0, 1]: the decoder of an
        autoencoder, the generator of a GAN. Every model has one."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 1, 28, 28) -> codes (B, latent_dim) (a VAE's posterior mean)."""
        raise self._unsupported("encode", "can_encode")

    def reconstruct(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """decode(encode(x)): images (B, 1, 28, 28) in [0, 1]."""
        if not self.can_encode:
            raise self._unsupported("reconstruct", "can_encode")
        return self.decode(self.encode(x, labels=labels), labels=labels)

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None, sampler: SamplerOptions | None = None
    ) -> torch.Tensor:
        """n images (n, 1, 28, 28) in [0, 1], decoded from z ~ N(0, I) drawn with `generator`.
        A conditional model without labels draws the digits 0, 1, …, 9, 0, … in turn.
        `sampler`: steps / solver / guidance of an iterative model; a one-step model ignores it."""
        if not self.can_sample:
            raise self._unsupported("sample", "can_sample")
        if self.conditional:
            labels = check_labels(labels, n, self.device)
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        return self.decode(z, labels=labels)

    def nfe(self, sampler: SamplerOptions | None = None) -> int:
        """Network function evaluations per sample under `sampler`: 1 for a one-step model."""
        return 1

    def solve_times(self, sampler: SamplerOptions | None = None) -> list[float]:
        """The times t an iterative model's solve under `sampler` steps through, 0 (the noise)
        first and 1 (the sample) last."""
        raise self._unsupported("solve_times", "iterative")

    def health_sampler(self) -> SamplerOptions | None:
        """The sampler of the per-epoch health samples (genlab.health): None, the model's default;
        an iterative model names a cheap one, so an epoch's end stays cheap."""
        return None

    def trajectory(
        self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
        sampler: SamplerOptions | None = None, keep: int = 8,
    ) -> torch.Tensor:
        """(keep, n, 1, 28, 28) in [0, 1]: n samples at `keep` evenly spaced steps along t, from
        the noise (first) to the sample (last), drawn exactly as `sample` draws them."""
        raise self._unsupported("trajectory", "iterative")

    def log_density(
        self, x: torch.Tensor, *, generator: torch.Generator | None = None, exact: bool = False, sampler: SamplerOptions | None = None
    ) -> torch.Tensor:
        """log p(x) (B,) in nats of images (B, 1, 28, 28) in [0, 1] under the model's density on
        [0, 1]^784 (a flow: Hutchinson's estimate with probes from `generator`, or the exact trace;
        its ODE solved with `sampler`'s steps and solver). Needs autograd: not in inference mode."""
        raise self._unsupported("log_density", "has_density")

    def encode_distribution(self, x: torch.Tensor, *, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian posterior q(z|x): μ (B, D) and log σ² (B, D)."""
        raise self._unsupported("encode_distribution", "has_likelihood")

    def decode_logits(self, z: torch.Tensor, *, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) -> the Bernoulli decoder's pixel logits (B, 1, 28, 28)."""
        raise self._unsupported("decode_logits", "has_likelihood")

    def _unsupported(self, method: str, flag: str) -> NotSupported:
        return NotSupported(f"model '{self.name}' has no {method}() ({flag} is False)")

    def extra_repr(self) -> str:
        return f"latent_dim={self.config.latent_dim}"


CAPABILITIES = ("can_encode", "can_sample", "has_likelihood", "conditional", "iterative", "has_density")


def check_digit(name: str, value: int) -> None:
    """A config field naming one digit (the conditional models' `plot_digit`): 0 to 9."""
    if not 0 <= value < NUM_CLASSES:
        raise GenlabError(f"{name} must be 0 to {NUM_CLASSES - 1}, got {value}")


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
