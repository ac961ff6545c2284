"""Flow matching (Lipman et al. 2023, https://arxiv.org/abs/2210.02747) with the straight path
of rectified flow (Liu et al. 2022, https://arxiv.org/abs/2209.03003): the way today's image
generators turn noise into a picture, in its simplest form.

  - a training pair is a digit x₁ (pixels scaled to [−1, 1]) and noise x₀ ~ N(0, I) of the same
    shape; on the straight line x_t = (1 − t)·x₀ + t·x₁ the velocity is x₁ − x₀, and a U-Net
    v(x_t, t) learns it by mean squared error. Its best answer is the average velocity through
    x_t, a field whose flow carries N(0, I) at t = 0 onto the data at t = 1;
  - a sample solves dx/dt = v(x, t) from x(0) ~ N(0, I) to t = 1 in `steps` solver steps
    (models/sampling.py): the cost of an image is steps × one or two network passes, where a
    VAE decoder or a GAN generator takes one;
  - t is drawn logit-normal by default (Esser et al. 2024, SD3, https://arxiv.org/abs/2403.03206;
    minRF): more training on the middle times, where the velocity is hardest to predict;
  - training digits are dequantized (x = (pixel + u)/256, u ~ U(0, 1)), so the model's density
    is one over continuous pixels and its log-likelihood (`log_density`, bits per dimension in
    `genlab eval`) is the dequantized one the flow papers report.
`cflow` adds the digit: a class embedding beside the time, dropped to a "no class" token with
probability `label_dropout` in training, so one network gives both the conditional and the
unconditional field and sampling can mix them (classifier-free guidance, Ho & Salimans 2022,
https://arxiv.org/abs/2207.12598): v = v_uncond + W·(v_cond − v_uncond), W = 1 the plain
conditional field, W = 0 the unconditional one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ModelConfig, check_fraction, check_widths
from ..data import NUM_CLASSES
from ..errors import GenlabError
from . import register
from .base import GenerativeModel, LossOutput, check_labels
from .blocks import IMAGE_PIXELS, IMAGE_SHAPE, UNet
from .sampling import MAX_STEPS, SamplerOptions, integrate, log_likelihood, time_grid

# The grid each solver samples on unless told otherwise (benchmarks/README.md, "Flow matching"):
# midpoint's shift was chosen on the validation split; a shifted grid's long last step wrecks
# Euler's one evaluation and Heun's corrector at t = 1, so they keep equal steps.
SOLVER_SHIFTS = {"midpoint": 10.0, "euler": 1.0, "heun": 1.0}
HEALTH_SAMPLER = SamplerOptions(steps=4, solver="euler", shift=1.0)  # the per-epoch diversity check: 4 passes of 64 images
SOLVE_ROWS = 250  # images solved at a time: a block of 1,000 ran ~25% slower per image (its activations outgrow the caches)
LOG_2 = math.log(2.0)


def ot_pairing(x0: torch.Tensor, x1: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """The order of the noises x0 that pairs them with the digits x1 at the least summed squared
    distance, an exact assignment within the batch (and within each of `groups` if given):
    minibatch OT-CFM (Tong et al. 2023, https://arxiv.org/abs/2302.00482; Pooladian et al. 2023).
    Paths that cross less are straighter, so a few solver steps follow them better; any pairing
    keeps both marginals, so the flow still carries N(0, I) onto the data."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(x1.flatten(1).float(), x0.flatten(1).float()).pow(2).cpu().numpy()
    order = torch.arange(len(x0))
    for members in [torch.arange(len(x0))] if groups is None else [(groups == g).nonzero()[:, 0].cpu() for g in groups.unique()]:
        rows, cols = linear_sum_assignment(cost[np.ix_(members.numpy(), members.numpy())])
        order[members[rows]] = members[cols]
    return order.to(x0.device)


@dataclass
class FlowConfig(ModelConfig):
    latent_dim: int = IMAGE_PIXELS  # the noise x₀ is an image: 784 numbers (fixed)
    channels: tuple[int, ...] = (16, 32, 32)  # U-Net widths at 28×28, 14×14, 7×7 (one entry per resolution)
    blocks: int = 1  # residual blocks per resolution, down and up
    time_sampling: Literal["uniform", "logit_normal"] = "logit_normal"  # how training draws t
    logit_mean: float = 0.0  # logit-normal t = sigmoid(N(mean, std))
    logit_std: float = 1.0
    sample_steps: int = 8  # solver steps of a sample unless --steps says otherwise
    solver: Literal["euler", "heun", "midpoint"] = "midpoint"  # ODE solver of a sample unless --solver says otherwise (benchmarks/README.md, "Flow matching")
    sample_shift: float | None = None  # time shift of a sample's grid unless --shift says otherwise (None: its solver's own, SOLVER_SHIFTS)
    coupling: Literal["independent", "minibatch_ot"] = "independent"  # how a training batch pairs noises with digits: as drawn, or by minibatch optimal transport (straighter paths)

    def validate(self) -> None:
        super().validate()
        if self.latent_dim != IMAGE_PIXELS:
            raise GenlabError(f"a flow's noise is an image: latent_dim must be {IMAGE_PIXELS}, got {self.latent_dim}")
        check_widths("channels", self.channels)
        if not 1 <= len(self.channels) <= 3:
            raise GenlabError(f"channels: one width per resolution (28, 14, 7), 1 to 3 of them, got {len(self.channels)}")
        if not 1 <= self.blocks <= 4:
            raise GenlabError(f"blocks must be 1 to 4, got {self.blocks}")
        if not (math.isfinite(self.logit_mean) and math.isfinite(self.logit_std) and self.logit_std > 0):
            raise GenlabError(f"logit_mean must be finite and logit_std positive, got {self.logit_mean}, {self.logit_std}")
        SamplerOptions(steps=self.sample_steps, solver=self.solver, shift=self.sample_shift)  # one-line errors for bad values (None passes)
        if self.sample_steps > MAX_STEPS:
            raise GenlabError(f"sample_steps must be at most {MAX_STEPS}")


@register("flow")
class FlowMatching(GenerativeModel):
    config_class = FlowConfig
    family = "flow"
    can_sample = True
    iterative = True
    has_density = True
    channels_last = False  # group norm on channels-last bf16 tensors ran 5-15x slower (benchmarks/README.md, "Flow matching")

    def __init__(self, config: FlowConfig):
        super().__init__(config)
        # a conditional flow has one more class than digits: the "no class" token of guidance
        self.net = UNet(self.config.channels, self.config.blocks, num_classes=NUM_CLASSES + 1 if self.conditional else 0)

    @classmethod
    def defaults(cls, config: FlowConfig) -> dict:
        # chosen on the validation split (benchmarks/README.md, "Flow matching"); 25 epochs of the
        # 5,000 default digits are ~2,000 steps, the lab's budget
        return {"epochs": 25, "batch_size": 64, "lr": 4e-3, "ema": 0.995, "lr_schedule": "cosine", "warmup_steps": 100}

    # --- training -------------------------------------------------------------------------
    def sample_times(self, n: int, device: torch.device) -> torch.Tensor:
        """Training times t (n,) in (0, 1)."""
        if self.config.time_sampling == "uniform":
            return torch.rand(n, device=device)
        return torch.sigmoid(self.config.logit_mean + self.config.logit_std * torch.randn(n, device=device))

    def training_labels(self, y: torch.Tensor) -> torch.Tensor | None:
        """The class input of a training batch: None for the unconditional flow."""
        return None

    def pairing_groups(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """The groups within which minibatch OT pairs noises with digits: one for the unconditional flow."""
        return None

    def loss(self, x, y, phase, cache):
        # x (B, 1, 28, 28) in [0, 1] holds pixel/255: dequantize to (pixel + u)/256, scale to [−1, 1]
        x1 = ((x * 255).round() + torch.rand_like(x)) / 128 - 1
        x0 = torch.randn_like(x1)
        if self.config.coupling == "minibatch_ot":
            x0 = x0[ot_pairing(x0, x1, self.pairing_groups(y))]
        t = self.sample_times(len(x1), x1.device)
        tb = t[:, None, None, None]
        xt = (1 - tb) * x0 + tb * x1  # the straight path
        v = self.net(xt, t, self.training_labels(y))
        loss = F.mse_loss(v.float(), x1 - x0)  # the path's velocity is x₁ − x₀
        return LossOutput(loss, {"loss": loss.detach()})

    def health_sampler(self) -> SamplerOptions:
        return HEALTH_SAMPLER

    # --- sampling -------------------------------------------------------------------------
    def resolve_sampler(self, sampler: SamplerOptions | None) -> SamplerOptions:
        """`sampler` with what it leaves unset taken from the config: steps, solver, guidance and shift
        all set. An unset shift is the config's `sample_shift` for the config's solver, else the
        solver's own (SOLVER_SHIFTS): a shift chosen for one solver is not right for another."""
        sampler = sampler or SamplerOptions()
        if sampler.guidance is not None and not self.conditional:
            raise GenlabError(f"guidance needs a conditional flow (cflow); model '{self.name}' is unconditional")
        solver = sampler.solver or self.config.solver
        own_shift = self.config.sample_shift if self.config.sample_shift is not None and solver == self.config.solver else SOLVER_SHIFTS[solver]
        return replace(
            sampler,
            steps=sampler.steps if sampler.steps is not None else self.config.sample_steps,
            solver=solver,
            guidance=sampler.guidance if sampler.guidance is not None else self.default_guidance(),
            shift=sampler.shift if sampler.shift is not None else own_shift,
        )

    def default_guidance(self) -> float:
        return 1.0

    def nfe(self, sampler: SamplerOptions | None = None) -> int:
        return self.resolve_sampler(sampler).nfe()

    def solve_times(self, sampler: SamplerOptions | None = None) -> list[float]:
        sampler = self.resolve_sampler(sampler)
        return time_grid(sampler.steps, sampler.shift)

    def velocity_field(self, labels: torch.Tensor | None, guidance: float):
        """v(x, t) the solver calls, in float32 whatever autocast computes it in; `labels` None
        (or guidance 0): the unconditional field."""
        return lambda x, t: self.net(x, t).float()

    def _solve(self, x0: torch.Tensor, labels, sampler: SamplerOptions | None, keep: int):
        sampler = self.resolve_sampler(sampler)
        field = self.velocity_field(labels, sampler.guidance)
        return integrate(field, x0, sampler.steps, sampler.solver, keep, sampler.shift)

    def _noise(self, n: int, generator) -> torch.Tensor:
        return torch.randn(n, *IMAGE_SHAPE, generator=generator, device=self.device)

    def _labels(self, labels, n: int):
        return check_labels(labels, n, self.device) if self.conditional else None

    @staticmethod
    def to_pixels(x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1)

    def sample(self, n, *, generator=None, labels=None, sampler=None):
        labels = self._labels(labels, n)
        x0 = self._noise(n, generator)  # all the noise first: the same images whatever the blocks
        blocks = [
            self._solve(x0[i : i + SOLVE_ROWS], None if labels is None else labels[i : i + SOLVE_ROWS], sampler, keep=0)[0]
            for i in range(0, max(n, 1), SOLVE_ROWS)
        ]
        return self.to_pixels(torch.cat(blocks))

    def trajectory(self, n, *, generator=None, labels=None, sampler=None, keep=8):
        if not 2 <= keep <= MAX_STEPS + 1:
            raise GenlabError(f"keep must be 2 to {MAX_STEPS + 1} states, got {keep}")
        labels = self._labels(labels, n)
        _, states = self._solve(self._noise(n, generator), labels, sampler, keep)
        return self.to_pixels(torch.stack(states))

    def decode(self, z, *, labels=None):
        """Noise (B, 784) -> images (B, 1, 28, 28): the flow solved with the default sampler."""
        labels = self._labels(labels, len(z))
        return self.to_pixels(self._solve(z.reshape(-1, *IMAGE_SHAPE), labels, None, keep=0)[0])

    def log_density(self, x, *, generator=None, exact=False, sampler=None):
        """log p(x) (B,) in nats for x in [0, 1]: the flow's density on [−1, 1]^784 at 2x − 1,
        plus the log-determinant 784·log 2 of that map. Integrated with `sampler`'s steps and
        solver (the model's default sampler when None)."""
        sampler = self.resolve_sampler(sampler)
        field = self.velocity_field(None, 0.0)  # the unconditional field: the density of p(x), not p(x | y)
        return log_likelihood(field, x * 2 - 1, sampler.steps, sampler.solver, generator, exact, sampler.shift) + IMAGE_PIXELS * LOG_2

    def extra_repr(self) -> str:
        return f"channels={self.config.channels}, blocks={self.config.blocks}"


@dataclass
class CFlowConfig(FlowConfig):
    label_dropout: float = 0.1  # share of training digits shown as "no class", which teaches the unconditional field guidance needs
    guidance: float = 1.0  # classifier-free guidance W of a sample unless --guidance says otherwise (1: plain conditional)

    def validate(self) -> None:
        super().validate()
        check_fraction("label_dropout", self.label_dropout, 1.0)
        SamplerOptions(guidance=self.guidance)


@register("cflow")
class ConditionalFlow(FlowMatching):
    """The class-conditional flow: `genlab sample RUN --digit 7`, `--guidance W`."""

    config_class = CFlowConfig
    conditional = True
    NULL_CLASS = NUM_CLASSES  # the class embedding's last row: "no class"

    def pairing_groups(self, y):
        return y  # within a digit: each digit's noises stay N(0, I), so guidance still mixes the right fields

    def training_labels(self, y):
        dropped = torch.rand(len(y), device=y.device) < self.config.label_dropout
        return torch.where(dropped, torch.full_like(y, self.NULL_CLASS), y)

    def default_guidance(self) -> float:
        return self.config.guidance

    def velocity_field(self, labels, guidance):
        if labels is None or guidance == 0:  # the unconditional field
            return lambda x, t: self.net(x, t, torch.full((len(x),), self.NULL_CLASS, device=x.device)).float()
        if guidance == 1:
            return lambda x, t: self.net(x, t, labels).float()
        null = torch.full_like(labels, self.NULL_CLASS)

        def guided(x, t):  # one network pass over [conditional; unconditional]
            v = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).float()
            v_cond, v_uncond = v.chunk(2)
            return v_uncond + guidance * (v_cond - v_uncond)

        return guided
