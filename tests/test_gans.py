"""The adversarial family beyond the generic contract: the DCGAN recipe and DiffAugment's
translation, WGAN-GP's gradient penalty against hand computations, and one generator pass per
training step (the fakes made in D's phase, reused by G's)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import QUIET, fit_killed_after, image_batch, tiny_train_config
from conftest import SMALL_CONV as SMALL
from genlab import MODELS
from genlab.errors import GenlabError
from genlab.models.blocks import Dropout
from genlab.models.dcgan import DCGAN, DCGANConfig
from genlab.models.losses import generator_loss
from genlab.models.wgan_gp import WGANGP, WGANGPConfig, gradient_penalty


# --------------------------------------------------------------------------------------------
# DCGAN
# --------------------------------------------------------------------------------------------


def test_dcgan_architecture_follows_the_recipe():
    model = DCGAN(DCGANConfig(**SMALL))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.generator.modules())
    assert any(isinstance(m, nn.LeakyReLU) for m in model.features.modules())
    assert any(isinstance(m, Dropout) for m in model.features.modules())
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in model.features.modules())  # default: no norm in D
    assert model.adam_betas[0] == 0.5
    paper = DCGAN(DCGANConfig(d_norm="batch", d_dropout=0.0, **SMALL))
    norms = [i for i, m in enumerate(paper.features) if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 1 and norms[0] > 1  # after the second convolution, never on the input layer
    wide = DCGAN(DCGANConfig(channels=(4, 8), g_channels=(6, 10)))
    assert wide.generator[0].out_features == 10 * 7 * 7 and wide.features[0].out_channels == 4
    with pytest.raises(GenlabError, match="d_norm"):
        DCGANConfig(d_norm="spectral").validate()


def test_dcgan_label_smoothing_changes_only_the_real_target():
    x, y = image_batch(16)
    losses = {}
    for smoothing in (0.0, 0.2):
        torch.manual_seed(0)
        model = DCGAN(DCGANConfig(label_smoothing=smoothing, d_dropout=0.0, translate=0, **SMALL)).train()  # D deterministic
        cache = {"z": torch.randn(16, model.config.latent_dim)}
        out = model.loss(x, y, "discriminator", cache)
        with torch.no_grad():
            torch.manual_seed(0)
            real_logits = model.critic(x)
        losses[smoothing] = (float(out.loss.detach()), real_logits)
    (plain, real_logits), (smoothed, _) = losses[0.0], losses[0.2]
    # BCE(l, t) differs between targets 1 and 0.8 by 0.2·l per example (the fake half is unchanged)
    assert smoothed - plain == pytest.approx(float((0.2 * real_logits).mean()), abs=1e-5)


def test_translate_shifts_each_image_and_passes_gradients():
    from genlab.models.dcgan import translate

    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # one bright pixel in the centre
    x.requires_grad_(True)
    torch.manual_seed(0)
    out = translate(x, 2)
    where = out.detach().flatten(1).argmax(1)
    dy, dx = where // 9 - 4, where % 9 - 4
    assert out.shape == x.shape and torch.equal(out.detach().sum((1, 2, 3)), torch.ones(64))  # moved, not lost
    assert int(dy.abs().max()) == 2 and int(dx.abs().max()) == 2 and len(set(zip(dy.tolist(), dx.tolist()))) > 10
    out.sum().backward()
    assert float(x.grad[:, 0, 4, 4].min()) == 1.0  # every bright pixel reached D
    edge = torch.zeros(1, 1, 3, 3)
    edge[0, 0, :, 0] = 1.0
    torch.manual_seed(0)
    shifted = [translate(edge, 1) for _ in range(20)]
    assert any(float(t.sum()) == 0 for t in shifted)  # shifted out of the frame: background fills in


# --------------------------------------------------------------------------------------------
# WGAN-GP: the gradient penalty by hand
# --------------------------------------------------------------------------------------------


def test_gradient_penalty_of_a_linear_critic():
    """D(x) = w·x + b has the gradient w everywhere: the penalty is (|w| − 1)², whatever ε,
    and its gradient with respect to w is 2 (|w| − 1) w / |w|."""
    critic = nn.Sequential(nn.Flatten(), nn.Linear(6, 1))
    with torch.no_grad():
        critic[1].weight.copy_(torch.tensor([[1.0, 2.0, -2.0, 0.0, 0.0, 0.0]]))  # |w| = 3
    real, fake = torch.rand(5, 1, 2, 3), torch.rand(5, 1, 2, 3)
    gp = gradient_penalty(lambda t: critic(t).squeeze(1), real, fake, torch.rand(5))
    assert float(gp.detach()) == pytest.approx((3.0 - 1.0) ** 2)
    gp.backward()  # the penalty must train the critic (create_graph=True)
    w = critic[1].weight.detach()
    torch.testing.assert_close(critic[1].weight.grad, 2 * (3.0 - 1.0) * w / 3.0)


def test_gradient_penalty_uses_one_epsilon_per_example():
    """D(x) = |x|²/2 has the gradient x: at x̂ = ε·real + (1 − ε)·fake the norm is |x̂|."""
    real = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]]).view(3, 1, 1, 2)
    fake = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]).view(3, 1, 1, 2)
    eps = torch.tensor([0.5, 0.25, 1.0])
    # |x̂| per example: 0.5·1 = 0.5, 0.25·2 = 0.5, 1·5 = 5
    expected = ((0.5 - 1) ** 2 + (0.5 - 1) ** 2 + (5 - 1) ** 2) / 3
    gp = gradient_penalty(lambda t: 0.5 * t.pow(2).flatten(1).sum(1), real, fake, eps)
    assert float(gp.detach()) == pytest.approx(expected)


def test_wgan_critic_loss_assembles_w_and_penalty():
    torch.manual_seed(0)
    model = WGANGP(WGANGPConfig(gp_weight=7.0, critic_steps=2, **SMALL)).train()
    x, y = image_batch(12)
    torch.manual_seed(1)
    out = model.loss(x, y, "critic", {})
    torch.manual_seed(1)  # the same noise and ε, by hand
    z = torch.randn(12, model.config.latent_dim)
    with torch.no_grad():
        fake = model.decode(z)
    eps = torch.rand(12)
    w = model.critic(x).mean() - model.critic(fake).mean()
    gp = gradient_penalty(model.critic, x, fake, eps)
    assert float(out.loss.detach()) == pytest.approx(float((-w + 7.0 * gp).detach()), rel=1e-5)
    # logs are shares of the mean over the two critic steps
    assert float(out.logs["wasserstein"].detach()) == pytest.approx(float(w.detach()) / 2, rel=1e-5)
    assert float(out.logs["gp"].detach()) == pytest.approx(float(gp.detach()) / 2, rel=1e-5)


def test_wgan_phases_and_recipe():
    model = WGANGP(WGANGPConfig(critic_steps=3, **SMALL))
    assert model.phases == ("critic", "critic", "critic", "generator")
    assert WGANGP.phases == ("discriminator", "generator")  # per instance, the class is untouched
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.features.modules())
    assert model.head.bias is None
    with pytest.raises(GenlabError, match="batch norm"):
        WGANGPConfig(d_norm="batch").validate()
    with pytest.raises(GenlabError, match="critic_steps"):
        WGANGPConfig(critic_steps=0).validate()


def test_wgan_eval_reports_the_penalty_under_inference_mode():
    torch.manual_seed(0)
    model = WGANGP(WGANGPConfig(**SMALL)).eval()
    x, y = image_batch()
    with torch.inference_mode():
        logs = model.eval_losses(x, y)
    assert set(logs) == {"critic_loss", "wasserstein", "gp", "g_loss"}
    assert all(torch.isfinite(v) for v in logs.values()) and float(logs["gp"]) > 0


# --------------------------------------------------------------------------------------------
# One generator pass per training step
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gan", "dcgan", "cgan", "scgan", "wgan_gp"])
def test_a_loop_step_runs_the_generator_once_with_its_graph(name, tmp_path, tiny_bundle, monkeypatch):
    import genlab.train as train_module

    calls: list[bool] = []  # one entry per forward of G: whether it kept a graph
    original = train_module.build_model

    def build_and_watch(*args):
        model = original(*args)
        model.generator.register_forward_hook(lambda module, inputs, output: calls.append(output.requires_grad))
        return model

    monkeypatch.setattr(train_module, "build_model", build_and_watch)
    small = {"gan": dict(hidden_dims=(32,))}.get(name, SMALL)
    fit_killed_after(1, tiny_train_config(name, ema=0.0), MODELS[name].config_class(**small), tmp_path / name, data=tiny_bundle, **QUIET)
    critic_steps = 5 if name == "wgan_gp" else 1  # WGAN-GP: the earlier critic steps' fakes need no graph
    assert calls == [False] * (critic_steps - 1) + [True]


def test_the_generator_step_reuses_the_fakes_and_reads_the_updated_discriminator():
    torch.manual_seed(0)
    model = DCGAN(DCGANConfig(d_dropout=0.0, translate=0, **SMALL)).train()  # D deterministic
    x, y = image_batch(16)
    d_params, g_params = model.phase_parameters("discriminator"), model.phase_parameters("generator")
    cache: dict = {}
    d_loss = model.loss(x, y, "discriminator", cache).loss
    assert all(g is None for g in torch.autograd.grad(d_loss, g_params, retain_graph=True, allow_unused=True))  # fakes detached for D
    d_loss.backward(inputs=d_params)
    with torch.no_grad():
        before_d_step = generator_loss(model.critic(cache["fake"]))
    torch.optim.SGD(d_params, lr=1.0).step()  # D's step, a large one
    g_loss = model.loss(x, y, "generator", cache).loss
    g_loss.backward(inputs=g_params)
    reused = [p.grad.clone() for p in g_params]
    # As if G ran again (the old second pass): the same loss and gradients, with the D after its step.
    for p in g_params:
        p.grad = None
    fresh = generator_loss(model.critic(model.decode(cache["z"])))
    fresh.backward(inputs=g_params)
    assert float(g_loss.detach()) == pytest.approx(float(fresh.detach()), rel=1e-6)
    assert float(g_loss.detach()) != pytest.approx(float(before_d_step), rel=1e-3)
    assert all(torch.allclose(a, p.grad, rtol=1e-5, atol=1e-7) for a, p in zip(reused, g_params))
