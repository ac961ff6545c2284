"""Sampling as an ODE solve: the sampler options every model takes (one-step models ignore
them), fixed-step solvers, and the divergence of a velocity field for exact log-likelihoods.

A flow model (models/flow.py) learns a velocity field v(x, t) carrying noise at t = 0 to data
at t = 1; a sample is the solution of dx/dt = v(x, t) from x(0) ~ N(0, I). The solvers here
take `steps` fixed steps (Euler, Heun, midpoint: a few lines each, written out rather than
taken from torchdiffeq, whose adaptive solvers we do not need; README's dependency section),
equal ones or, with a time `shift` s > 1, shorter ones near the noise (SD3's shift, Esser et al.
2024): t = 1 − s·σ/(1 + (s − 1)·σ) at the even points σ = 1 − i/steps. The cost of a sample is
its number of function evaluations (NFE): Euler 1 per step, Heun and midpoint 2 per step.

Log-likelihood by the instantaneous change of variables (Chen et al. 2018, FFJORD: Grathwohl
et al. 2019, https://arxiv.org/abs/1810.01367):
    d log p(x_t) / dt = −div v(x_t, t),  so  log p_1(x_1) = log p_0(x_0) − ∫_0^1 div v(x_t, t) dt,
integrated from the data back to the noise together with x_t. The divergence is Hutchinson's
estimate ε·(∂v/∂x)ε with one Rademacher probe ε per trajectory (fixed along it, as in FFJORD),
one vector-Jacobian product per evaluation; `exact_divergence` sums all the diagonal terms
(one VJP per pixel, for checks on a few digits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import GenlabError

SOLVERS = ("euler", "heun", "midpoint")
MAX_STEPS = 1000
MAX_SHIFT = 1000.0
EVALS_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2}

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # v(x (B, ...), t (B,)) -> (B, ...)


@dataclass(frozen=True)
class SamplerOptions:
    """How an iterative model draws a sample; None: the model's own default. One-step models
    (VAE decoders, GAN generators) take and ignore them.

    guidance: classifier-free guidance scale of a conditional flow,
    v = v_uncond + guidance·(v_cond − v_uncond): 1 = the plain conditional field, 0 = the
    unconditional one, > 1 = pushed further towards the digit asked for.
    """

    steps: int | None = None  # solver steps from noise to image, 1 to MAX_STEPS
    solver: str | None = None  # euler, heun or midpoint
    guidance: float | None = None  # classifier-free guidance scale W >= 0 (conditional flows)
    shift: float | None = None  # time shift of the solver's grid: 1 = equal steps, > 1 shorter steps near the noise

    def __post_init__(self):
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS):
            raise GenlabError(f"steps must be an integer from 1 to {MAX_STEPS}, got {self.steps!r}")
        if self.solver is not None and self.solver not in SOLVERS:
            raise GenlabError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.guidance is not None and not (isinstance(self.guidance, (int, float)) and math.isfinite(self.guidance) and self.guidance >= 0):
            raise GenlabError(f"guidance must be a finite number >= 0, got {self.guidance!r}")
        if self.shift is not None and (isinstance(self.shift, bool) or not (isinstance(self.shift, (int, float)) and 0 < self.shift <= MAX_SHIFT)):
            raise GenlabError(f"shift must be a number above 0 and at most {MAX_SHIFT:g}, got {self.shift!r}")

    def nfe(self) -> int:
        """Function evaluations of one solve (steps and solver must be set)."""
        return self.steps * EVALS_PER_STEP[self.solver]


def ode_step(field: Field, x: torch.Tensor, t: float, h: float, solver: str) -> torch.Tensor:
    """One step of dx/dt = field(x, t) from t to t + h (h < 0 integrates backwards)."""
    tt = lambda s: x.new_full((x.shape[0],), s)  # noqa: E731 - the time as a (B,) tensor
    k1 = field(x, tt(t))
    if solver == "euler":
        return x + h * k1
    if solver == "midpoint":  # second order: the slope at the half step
        return x + h * field(x + 0.5 * h * k1, tt(t + 0.5 * h))
    k2 = field(x + h * k1, tt(t + h))  # heun: the trapezoid of the slopes at both ends
    return x + 0.5 * h * (k1 + k2)


def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """steps + 1 increasing times from 0 to 1: equally spaced for shift 1, closer together near
    t = 0 (the noise) for shift > 1."""
    sigmas = [1 - i / steps for i in range(steps + 1)]
    return [1 - shift * sigma / (1 + (shift - 1) * sigma) for sigma in sigmas]


def kept_steps(steps: int, keep: int) -> list[int]:
    """The step counts after which `integrate` keeps a state: `keep` of them evenly spaced from 0
    (the noise) to `steps` (the sample); just the sample for keep = 1, none for 0."""
    if keep > 1:
        return [round(i * steps / (keep - 1)) for i in range(keep)]
    return [steps] if keep == 1 else []


def integrate(
    field: Field, x: torch.Tensor, steps: int, solver: str, keep: int = 0, shift: float = 1.0
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Solve from t = 0 to 1 in `steps` steps on `time_grid(steps, shift)`: (x(1), `keep` states
    along the way, x(0) first and x(1) last, at evenly spaced step counts; [] for keep = 0)."""
    times = time_grid(steps, shift)
    marks = set(kept_steps(steps, keep))
    kept = [x] if 0 in marks else []
    for i in range(steps):
        x = ode_step(field, x, times[i], times[i + 1] - times[i], solver)
        if i + 1 in marks:
            kept.append(x)
    return x, kept


def hutchinson_divergence(v: torch.Tensor, x: torch.Tensor, probe: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """ε·(∂v/∂x)ε per row (B,): an unbiased estimate of div v = tr ∂v/∂x when E[εεᵀ] = I.
    `v` must be computed from `x` with grad enabled."""
    (vjp,) = torch.autograd.grad(v, x, probe, create_graph=create_graph)  # εᵀ ∂v/∂x, (B, ...)
    return (vjp * probe).flatten(1).sum(1)


def exact_divergence(field: Field, x: torch.Tensor, t: torch.Tensor, chunk: int = 196) -> torch.Tensor:
    """tr ∂v/∂x per row (B,), exactly: the diagonal of the Jacobian from one VJP per dimension,
    `chunk` of them at a time as one batch of copies of a row (for checks on a few digits)."""
    dims = x[0].numel()
    eye = torch.eye(dims, device=x.device)
    total = torch.zeros(x.shape[0], device=x.device)
    for row in range(x.shape[0]):
        for start in range(0, dims, chunk):
            probes = eye[start : start + chunk]  # (c, D): unit vectors e_i
            with torch.enable_grad():
                xr = x[row : row + 1].detach().expand(len(probes), *x.shape[1:]).clone().requires_grad_(True)
                v = field(xr, t[row : row + 1].expand(len(probes)))
                (g,) = torch.autograd.grad(v, xr, probes.view_as(xr))  # row i: e_iᵀ ∂v/∂x
            total[row] += (g.flatten(1) * probes).sum()
    return total


def rademacher(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """±1 with equal probability: Hutchinson's probe of least variance for a fixed matrix."""
    return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1


def log_likelihood(
    field: Field, x1: torch.Tensor, steps: int, solver: str, generator: torch.Generator | None = None, exact: bool = False,
    shift: float = 1.0,
) -> torch.Tensor:
    """log p_1(x1) (B,) in nats under the flow of `field` from N(0, I) at t = 0, by integrating
    (x, ∫ div v) from t = 1 back to t = 0 with the fixed-step `solver` on `time_grid(steps,
    shift)` reversed. Hutchinson's estimate with one Rademacher probe per row, or the exact
    trace (`exact`, slow)."""
    probe = None if exact else rademacher(x1.shape, generator, x1.device)

    def augmented(state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # state (B, D + 1): the image flattened and the running integral of the divergence
        x = state[:, :-1].reshape(x1.shape)
        if exact:
            with torch.no_grad():
                v = field(x, t)
            div = exact_divergence(field, x, t)
        else:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                v = field(xg, t)
                div = hutchinson_divergence(v, xg, probe)
            v = v.detach()
        return torch.cat([v.flatten(1), div.detach()[:, None]], 1)

    state = torch.cat([x1.flatten(1), x1.new_zeros(x1.shape[0], 1)], 1)
    times = time_grid(steps, shift)[::-1]
    for i in range(steps):
        state = ode_step(augmented, state, times[i], times[i + 1] - times[i], solver)
    x0, div_integral = state[:, :-1], state[:, -1]  # div_integral = ∫_1^0 div v dt = −∫_0^1 div v dt
    log_p0 = -0.5 * (x0.pow(2) + math.log(2 * math.pi)).sum(1)
    return log_p0 + div_integral
