"""Flow matching (models/flow.py) and the ODE sampler (models/sampling.py): the training target
by hand, the solvers against exact solutions, the trace estimator against the exact trace, the
likelihood of a flow whose density is known in closed form, guidance, and the sampler options'
errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from conftest import assert_one_line_error, run_cli
from genlab.errors import GenlabError
from genlab.evaluate import bits_per_dim
from genlab.models import MODELS
from genlab.models.flow import SOLVER_SHIFTS, ot_pairing
from genlab.models.sampling import SamplerOptions, exact_divergence, hutchinson_divergence, integrate, log_likelihood, ode_step, time_grid


def _flow(name: str = "flow", **config):
    cls = MODELS[name]
    torch.manual_seed(0)
    return cls(cls.config_class(channels=(8, 8), **config)).eval()


class _Field(nn.Module):
    """A stand-in for the U-Net: a given function of (x, t, class)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.anchor = nn.Parameter(torch.zeros(()))  # model.device reads a parameter

    def forward(self, x, t, c=None):
        return self.fn(x, t, c)


def _loss_by_hand(n: int, pair: bool = False, logit_mean: float = 0.0, logit_std: float = 1.0, **config) -> tuple[torch.Tensor, torch.Tensor]:
    """(the model's loss, the same loss computed here) for n digits, the network replaced by
    v = 0.5·x + t; `pair`: the noises reordered by minibatch OT as the loss does."""
    model = _flow(logit_mean=logit_mean, logit_std=logit_std, **config)
    model.net = _Field(lambda x, t, c: 0.5 * x + t[:, None, None, None])
    x = torch.randint(0, 256, (n, 1, 28, 28)).float() / 255
    torch.manual_seed(11)
    out = model.loss(x, torch.zeros(n, dtype=torch.long), "model", {})
    torch.manual_seed(11)  # the same draws, in the loss's order: dequantization, noise, times
    x1 = ((x * 255).round() + torch.rand_like(x)) / 256 * 2 - 1
    x0 = torch.randn_like(x1)
    if pair:
        x0 = x0[ot_pairing(x0, x1)]
    t = torch.sigmoid(logit_mean + logit_std * torch.randn(n)).view(-1, 1, 1, 1)
    xt = (1 - t) * x0 + t * x1
    return out.loss, ((0.5 * xt + t - (x1 - x0)) ** 2).mean()


def test_the_loss_is_the_mse_to_the_straight_paths_velocity():
    torch.testing.assert_close(*_loss_by_hand(4, time_sampling="logit_normal", logit_mean=0.3, logit_std=0.7))


def test_minibatch_ot_pairs_noises_and_digits_at_the_least_summed_squared_distance():
    torch.manual_seed(3)
    x0, x1 = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    cost = lambda order: ((x1 - x0[order]) ** 2).sum().item()  # noqa: E731
    brute = min(itertools.permutations(range(6)), key=lambda p: cost(torch.tensor(p)))
    order = ot_pairing(x0, x1)
    assert sorted(order.tolist()) == list(range(6))
    assert cost(order) == pytest.approx(cost(torch.tensor(brute)))
    groups = torch.tensor([0, 1, 0, 1, 1, 0])
    grouped = ot_pairing(x0, x1, groups)
    assert torch.equal(groups[grouped], groups)  # a digit keeps a noise of its own group
    assert sorted(grouped.tolist()) == list(range(6)) and cost(grouped) >= cost(order) - 1e-6


def test_the_ot_coupled_loss_regresses_on_the_paired_noises_velocity():
    torch.testing.assert_close(*_loss_by_hand(5, pair=True, coupling="minibatch_ot"))


def test_uniform_times_cover_zero_to_one():
    t = _flow(time_sampling="uniform").sample_times(20000, torch.device("cpu"))
    assert 0 <= float(t.min()) < 0.01 and 0.99 < float(t.max()) <= 1 and abs(float(t.mean()) - 0.5) < 0.01


def test_an_euler_step_is_x_plus_h_times_the_field():
    x, field = torch.randn(3, 5), lambda x, t: torch.sin(x) * t[:, None]
    torch.testing.assert_close(ode_step(field, x, 0.25, 0.1, "euler"), x + 0.1 * torch.sin(x) * 0.25)


def test_euler_is_exact_on_a_constant_field_and_heun_and_midpoint_on_a_field_affine_in_t():
    x0 = torch.randn(4, 3)
    a, b = torch.randn(3), torch.randn(3)
    x1, _ = integrate(lambda x, t: a.expand_as(x), x0, 3, "euler")
    torch.testing.assert_close(x1, x0 + a)
    for solver in ("heun", "midpoint"):  # x(1) = x(0) + ∫ (a + b t) dt = x(0) + a + b/2
        x1, _ = integrate(lambda x, t: a + b * t[:, None], x0, 3, solver)
        torch.testing.assert_close(x1, x0 + a + b / 2)
    x1, _ = integrate(lambda x, t: a + b * t[:, None], x0, 3, "euler")
    assert not torch.allclose(x1, x0 + a + b / 2)  # Euler is not: the test can tell them apart


def test_a_shifted_time_grid_takes_shorter_steps_near_the_noise():
    assert time_grid(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert time_grid(2, shift=3.0)[1] == pytest.approx(0.25)  # σ = 1/2: t = 1 − 3·(1/2)/(1 + 2·(1/2))
    grid = time_grid(8, shift=10.0)
    steps = [b - a for a, b in zip(grid, grid[1:])]
    assert grid[0] == 0 and grid[-1] == pytest.approx(1) and steps == sorted(steps) and steps[0] < 0.125 / 5
    x0, a = torch.randn(4, 3), torch.randn(3)
    torch.testing.assert_close(integrate(lambda x, t: a.expand_as(x), x0, 5, "euler", shift=10.0)[0], x0 + a)  # any grid spans t = 0 to 1


def test_a_flow_samples_on_its_configured_shift_unless_told_otherwise():
    model = _flow(sample_shift=4.0)
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    field = model.velocity_field(None, 1.0)
    for asked, grid in ((None, 4.0), (1.0, 1.0)):
        expected, _ = integrate(field, torch.randn(2, 1, 28, 28, generator=gen()), 3, "midpoint", shift=grid)
        got = model.sample(2, generator=gen(), sampler=SamplerOptions(steps=3, solver="midpoint", shift=asked))
        torch.testing.assert_close(got, model.to_pixels(expected))
    assert model.solve_times(SamplerOptions(steps=3)) == time_grid(3, 4.0)
    other = "euler" if model.config.solver != "euler" else "heun"  # a shift set for its own solver: another takes its own grid
    assert model.resolve_sampler(SamplerOptions(solver=other)).shift == SOLVER_SHIFTS[other]
    assert model.resolve_sampler(SamplerOptions(solver=other, shift=3.0)).shift == 3.0
    default = _flow()  # no shift in the config: each solver its own
    assert {s: default.resolve_sampler(SamplerOptions(solver=s)).shift for s in SOLVER_SHIFTS} == SOLVER_SHIFTS
    assert SOLVER_SHIFTS["euler"] == SOLVER_SHIFTS["heun"] == 1.0 and SOLVER_SHIFTS["midpoint"] > 1


def test_trajectory_keeps_the_noise_first_and_the_sample_last():
    model = _flow()
    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    sampler = SamplerOptions(steps=6, solver="midpoint")
    path = model.trajectory(3, generator=gen(), sampler=sampler, keep=4)
    assert path.shape == (4, 3, 1, 28, 28)
    torch.testing.assert_close(path[-1], model.sample(3, generator=gen(), sampler=sampler))
    torch.testing.assert_close(path[0], ((torch.randn(3, 1, 28, 28, generator=gen()) + 1) / 2).clamp(0, 1))


def test_sampling_is_reproducible_from_the_seed_and_the_seed_matters():
    model = _flow()
    draw = lambda seed: model.sample(4, generator=torch.Generator().manual_seed(seed), sampler=SamplerOptions(steps=3))  # noqa: E731
    torch.testing.assert_close(draw(1), draw(1), rtol=0, atol=0)
    assert not torch.equal(draw(1), draw(2))


def test_nfe_counts_network_passes_per_sample():
    model = _flow()
    assert model.nfe(SamplerOptions(steps=5, solver="euler")) == 5
    assert model.nfe(SamplerOptions(steps=5, solver="heun")) == 10
    assert model.nfe(SamplerOptions(steps=5, solver="midpoint")) == 10
    assert model.nfe() == model.config.sample_steps * (2 if model.config.solver != "euler" else 1)
    assert MODELS["vae"](MODELS["vae"].config_class()).nfe(SamplerOptions(steps=5)) == 1


def test_hutchinsons_estimate_averaged_over_every_sign_probe_is_the_exact_divergence():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4))
    field = lambda x, t: net(x) * (1 + t[:, None])  # noqa: E731
    x, t = torch.randn(3, 4), torch.full((3,), 0.3)
    exact = exact_divergence(field, x, t, chunk=3)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: field(v[None], t[:1])[0], row) for row in x])
    torch.testing.assert_close(exact, jac.diagonal(dim1=1, dim2=2).sum(1))  # the exact trace is the trace
    estimates = []
    for signs in itertools.product((-1.0, 1.0), repeat=4):  # E[εεᵀ] = I exactly over all 16 probes
        xg = x.clone().requires_grad_(True)
        estimates.append(hutchinson_divergence(field(xg, t), xg, torch.tensor(signs).expand(3, 4)))
    torch.testing.assert_close(torch.stack(estimates).mean(0), exact)
    assert torch.stack(estimates).std(0).max() > 1e-3  # each single probe is only an estimate


def test_bits_per_dim_of_a_linear_flow_match_the_gaussian_it_makes():
    """v(x, t) = a·x + b moves N(0, I) at t = 0 to N(m, e^{2a} I) at t = 1, m = b(e^a − 1)/a;
    its divergence a·784 is exact for every Rademacher probe."""
    a, b = -0.4, 0.3
    model = _flow()
    model.net = _Field(lambda x, t, c: a * x + b)
    x = torch.rand(3, 1, 28, 28)
    log_px = model.log_density(x, generator=torch.Generator().manual_seed(0), sampler=SamplerOptions(steps=200, solver="heun"))
    y, m, sigma = 2 * x - 1, b * (math.exp(a) - 1) / a, math.exp(a)
    log_py = (-0.5 * ((y - m) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    expected = -(log_py + 784 * math.log(2)) / (784 * math.log(2)) + 8  # the map x -> 2x - 1, then bits on the 8-bit scale
    torch.testing.assert_close(bits_per_dim(log_px), expected, rtol=0, atol=1e-4)
    exact = log_likelihood(lambda x, t: a * x + b, y, 200, "heun", exact=True)
    torch.testing.assert_close(exact + 784 * math.log(2), log_px, rtol=0, atol=1e-2)


def test_guidance_one_is_the_conditional_field_zero_the_unconditional_and_w_mixes_them():
    model = _flow("cflow")
    labels = torch.tensor([3, 7])
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    sampler = dict(steps=3, solver="euler", shift=2.0)  # the model solves on the grid it is given
    net = model.net
    conditional, _ = integrate(lambda x, t: net(x, t, labels), torch.randn(2, 1, 28, 28, generator=gen()), **sampler)
    guided = model.sample(2, generator=gen(), labels=labels, sampler=SamplerOptions(guidance=1.0, **sampler))
    torch.testing.assert_close(guided, model.to_pixels(conditional))
    null = torch.full((2,), model.NULL_CLASS)
    unconditional, _ = integrate(lambda x, t: net(x, t, null), torch.randn(2, 1, 28, 28, generator=gen()), **sampler)
    torch.testing.assert_close(model.sample(2, generator=gen(), labels=labels, sampler=SamplerOptions(guidance=0.0, **sampler)), model.to_pixels(unconditional))
    x, t = torch.randn(2, 1, 28, 28), torch.full((2,), 0.4)
    v_c, v_u = net(x, t, labels), net(x, t, null)
    torch.testing.assert_close(model.velocity_field(labels, 2.5)(x, t), v_u + 2.5 * (v_c - v_u))


def test_label_dropout_shows_the_no_class_token():
    model = _flow("cflow", label_dropout=0.5)
    torch.manual_seed(0)
    shown = model.training_labels(torch.full((2000,), 4))
    assert set(shown.unique().tolist()) == {4, model.NULL_CLASS}
    assert abs(float((shown == model.NULL_CLASS).float().mean()) - 0.5) < 0.05


@pytest.mark.parametrize(
    "options, fragment",
    [(dict(steps=0), "steps"), (dict(steps=1001), "steps"), (dict(steps=2.5), "steps"), (dict(solver="rk4"), "solver"),
     (dict(guidance=-1.0), "guidance"), (dict(guidance=float("nan")), "guidance"), (dict(guidance=float("inf")), "guidance"),
     (dict(shift=0.0), "shift"), (dict(shift=float("nan")), "shift"), (dict(shift=1e6), "shift"), (dict(shift=True), "shift")],
)
def test_bad_sampler_options_are_refused_in_one_line(options, fragment):
    with pytest.raises(GenlabError, match=fragment):
        SamplerOptions(**options)


def test_the_cli_refuses_bad_sampler_options_with_status_2(tiny_runs, tmp_path):
    out = tmp_path / "s.png"
    assert_one_line_error(run_cli("sample", tiny_runs["flow"], "-o", out, "--steps", "0", "--device", "cpu"), "steps")
    assert_one_line_error(run_cli("sample", tiny_runs["flow"], "-o", out, "--solver", "rk4"), "solver")
    assert_one_line_error(run_cli("sample", tiny_runs["flow"], "-o", out, "--shift", "-2", "--device", "cpu"), "shift")
    assert_one_line_error(run_cli("sample", tiny_runs["flow"], "-o", out, "--guidance", "2", "--device", "cpu"), "guidance")
    assert_one_line_error(run_cli("sample", tiny_runs["cflow"], "-o", out, "--guidance", "-1", "--device", "cpu"), "guidance")
    assert_one_line_error(run_cli("eval", tiny_runs["flow"], "--steps", "5000", "--device", "cpu"), "steps")
    assert not out.exists()


def test_the_cli_samples_a_conditional_flow_digit_with_steps_and_guidance(tiny_runs, tmp_path):
    import numpy as np

    from genlab.runs import load_run

    out = tmp_path / "sevens.npy"
    code, stdout, err = run_cli("sample", tiny_runs["cflow"], "-n", "3", "-o", out, "--digit", "7", "--steps", "2", "--solver", "midpoint", "--guidance", "2", "--seed", "9", "--device", "cpu")
    assert code == 0, err
    run = load_run(tiny_runs["cflow"], device="cpu")
    expected = run.sample(3, seed=9, labels=[7, 7, 7], steps=2, solver="midpoint", guidance=2.0).squeeze(1).numpy()
    np.testing.assert_array_equal(np.load(out), expected)
    assert not np.array_equal(expected, run.sample(3, seed=9, labels=[7, 7, 7], steps=2, solver="midpoint", guidance=1.0).squeeze(1).numpy())


def test_the_per_epoch_health_samples_use_the_models_cheap_sampler(monkeypatch):
    from genlab.health import sample_diversity

    model = _flow()
    asked = []
    original = model.sample
    monkeypatch.setattr(model, "sample", lambda n, **kw: asked.append(kw["sampler"]) or original(n, **kw))
    assert sample_diversity(model, seed=0, n=8) > 0
    assert asked == [model.health_sampler()] and model.nfe(asked[0]) <= 4


def test_run_trajectory_ends_at_the_runs_sample_for_the_same_seed(tiny_runs):
    from genlab.runs import load_run

    run = load_run(tiny_runs["flow"], device="cpu")
    path = run.trajectory(2, seed=3, steps=4, solver="euler", keep=3)
    assert path.shape == (3, 2, 1, 28, 28)
    torch.testing.assert_close(path[-1], run.sample(2, seed=3, steps=4, solver="euler"))
