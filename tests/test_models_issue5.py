"""The models of issue 5 beyond the generic interface (tests/test_models.py covers that for every
registered model): conv variants of AE/VAE, the VAE's KL per dimension, DCGAN, WGAN-GP's
gradient penalty against hand computations, the conditional models' use of labels, the AAE,
and one real training step of each through the training loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import fit_killed_after, synthetic_digits, tiny_train_config
from genlab import fit, load_run
from genlab.cli import build_parser, main
from genlab.errors import GenlabError
from genlab.models import MODELS
from genlab.models.aae import AAE, AAEConfig
from genlab.models.ae import AE, AEConfig
from genlab.models.blocks import conv_decoder, conv_encoder
from genlab.models.cgan import CGAN, CGANConfig
from genlab.models.cvae import CVAE, CVAEConfig
from genlab.models.dcgan import DCGAN, DCGANConfig
from genlab.models.losses import ACTIVE_KL, kl_per_dimension
from genlab.models.vae import VAE, VAEConfig
from genlab.models.wgan_gp import WGANGP, WGANGPConfig, gradient_penalty

NEW_MODELS = ("dcgan", "wgan_gp", "cvae", "cgan", "aae")
SMALL = dict(channels=(4, 8))  # conv channels small enough for a fast test


def _batch(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = synthetic_digits(n, seed=5)
    return torch.from_numpy(images).float().div(255).unsqueeze(1), torch.from_numpy(labels).long()


def _input_recorder(module: nn.Module) -> list[torch.Tensor]:
    """Record the first positional input of every call of `module`."""
    seen: list[torch.Tensor] = []
    module.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    return seen


# --------------------------------------------------------------------------------------------
# Convolutional blocks and the arch option of AE / VAE
# --------------------------------------------------------------------------------------------


def test_conv_blocks_shapes():
    x = torch.rand(3, 1, 28, 28)
    assert conv_encoder(5, (4, 8))(x).shape == (3, 5)
    assert conv_decoder(7, (4, 8))(torch.randn(3, 7)).shape == (3, 1, 28, 28)
    assert conv_decoder(7, (4, 8), batch_norm=True)(torch.randn(3, 7)).shape == (3, 1, 28, 28)


@pytest.mark.parametrize("cls,config_cls", [(AE, AEConfig), (VAE, VAEConfig)])
def test_conv_arch_of_ae_and_vae(cls, config_cls):
    model = cls(config_cls(latent_dim=3, arch="conv", **SMALL)).eval()
    assert any(isinstance(m, nn.Conv2d) for m in model.encoder.modules())
    assert any(isinstance(m, nn.ConvTranspose2d) for m in model.decoder.modules())
    x, y = _batch()
    with torch.no_grad():
        assert model.encode(x).shape == (20, 3)
        out = model.reconstruct(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.isfinite(model.loss(x, y, "model", {}).loss)


@pytest.mark.parametrize("cls,config_cls", [(AE, AEConfig), (VAE, VAEConfig)])
def test_mlp_arch_keeps_the_weight_names(cls, config_cls):
    """Runs saved before `arch` existed still load: the MLP's tensors keep their names."""
    keys = set(cls(config_cls()).state_dict())
    assert {"encoder.1.0.weight", "decoder.0.0.weight"} <= keys
    assert not any(isinstance(m, nn.Conv2d) for m in cls(config_cls()).modules())


@pytest.mark.parametrize("config_cls", [AEConfig, VAEConfig, CVAEConfig, AAEConfig])
def test_arch_and_channels_are_validated(config_cls):
    with pytest.raises(GenlabError, match="arch must be"):
        config_cls(arch="rnn").validate()
    with pytest.raises(GenlabError, match="channels"):
        config_cls(arch="conv", channels=(8,)).validate()


def test_new_options_reach_the_command_line():
    parser = build_parser()
    for argv, dest, value in [
        (["train", "vae", "--arch", "conv"], "arch", "conv"),
        (["train", "wgan_gp", "--critic-steps", "3"], "critic_steps", 3),
        (["train", "dcgan", "--label-smoothing", "0.1"], "label_smoothing", 0.1),
        (["train", "cvae", "--plot-digit", "3"], "plot_digit", 3),
        (["train", "aae", "--adv-weight", "2"], "adv_weight", 2.0),
    ]:
        assert getattr(parser.parse_args(argv), dest) == value


# --------------------------------------------------------------------------------------------
# Denoising AE: noisy input in training, clean target, clean input in evaluation
# --------------------------------------------------------------------------------------------


def test_denoising_ae_corrupts_only_the_training_input():
    model = AE(AEConfig(hidden_dims=(16,), input_noise=0.5))
    seen = _input_recorder(model.encoder)
    x, y = _batch()
    torch.manual_seed(0)
    loss = model.train().loss(x, y, "model", {}).loss
    noise = seen[-1] - x
    assert 0.45 < float(noise.std()) < 0.55 and abs(float(noise.mean())) < 0.02  # σ = 0.5 on 15,680 pixels
    torch.manual_seed(0)  # the same ε by hand: the loss scores the reconstruction of x + σ·ε against the clean x
    expected = F.mse_loss(torch.sigmoid(model.decoder(model.encoder(x + 0.5 * torch.randn_like(x)))), x)
    assert torch.allclose(loss, expected)
    model.eval().loss(x, y, "model", {})
    assert torch.equal(seen[-1], x)  # evaluation (and so every metric and figure) sees the clean digits
    plain = AE(AEConfig(hidden_dims=(16,), input_noise=0.0)).train()
    seen_plain = _input_recorder(plain.encoder)
    plain.loss(x, y, "model", {})
    assert torch.equal(seen_plain[-1], x)


def test_input_noise_is_validated_and_reaches_the_command_line():
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(GenlabError, match="input_noise"):
            AEConfig(input_noise=bad).validate()
    assert build_parser().parse_args(["train", "ae", "--input-noise", "0"]).input_noise == 0.0


# --------------------------------------------------------------------------------------------
# β-VAE: the KL per latent dimension
# --------------------------------------------------------------------------------------------


def test_kl_per_dimension_sums_to_the_kl_term():
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=4, hidden_dims=(16,))).eval()
    x, y = _batch(30)
    per_dim = kl_per_dimension(model, x, batch_size=7)  # uneven batches: the mean must still be exact
    assert per_dim.shape == (4,) and bool((per_dim >= 0).all())
    logs = model.eval_losses(x, y)
    assert float(per_dim.sum()) == pytest.approx(float(logs["kl"]), rel=1e-5)
    assert float(logs["active_dims"]) == float((per_dim > ACTIVE_KL).sum())


def test_active_dims_counts_only_informative_dimensions():
    """Dimension 0 follows the image, dimension 1 is the prior exactly (collapsed): 1 active."""
    model = VAE(VAEConfig(latent_dim=2, hidden_dims=(8,))).eval()
    head = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)][-1]  # -> (μ0, μ1, logσ²0, logσ²1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[0] = 1.5  # μ0 = 1.5 for every image: KL = 1.5² / 2
    x, y = _batch()
    per_dim = kl_per_dimension(model, x)
    torch.testing.assert_close(per_dim, torch.tensor([1.125, 0.0]))
    assert float(model.eval_losses(x, y)["active_dims"]) == 1.0
    assert "active_dims" not in model.train().loss(x, y, "model", {}).logs  # the training step stays lean


# --------------------------------------------------------------------------------------------
# DCGAN
# --------------------------------------------------------------------------------------------


def test_dcgan_architecture_follows_the_recipe():
    model = DCGAN(DCGANConfig(**SMALL))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.generator.modules())
    assert any(isinstance(m, nn.LeakyReLU) for m in model.features.modules())
    assert any(isinstance(m, nn.Dropout) for m in model.features.modules())
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
    x, y = _batch(16)
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
    x, y = _batch(12)
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
    x, y = _batch()
    with torch.inference_mode():
        logs = model.eval_losses(x, y)
    assert set(logs) == {"critic_loss", "wasserstein", "gp", "g_loss"}
    assert all(torch.isfinite(v) for v in logs.values()) and float(logs["gp"]) > 0


# --------------------------------------------------------------------------------------------
# Conditional models: labels are used
# --------------------------------------------------------------------------------------------


def _conditional(name: str):
    torch.manual_seed(0)
    if name == "cgan":
        return CGAN(CGANConfig(**SMALL)).eval(), "generator"
    return CVAE(CVAEConfig(arch="conv" if name == "cvae_conv" else "mlp", **SMALL)).eval(), "decoder"


@pytest.mark.parametrize("name", ["cgan", "cvae", "cvae_conv"])
def test_conditional_sampling_feeds_the_labels(name):
    model, net = _conditional(name)
    assert model.conditional
    first_layer = [m for m in getattr(model, net).modules() if isinstance(m, nn.Linear)][0]
    seen = _input_recorder(first_layer)
    labels = torch.tensor([7, 7, 3, 0, 9])
    with torch.no_grad():
        images = model.sample(5, generator=torch.Generator().manual_seed(1), labels=labels)
        assert images.shape == (5, 1, 28, 28)
        torch.testing.assert_close(seen[-1][:, -10:], F.one_hot(labels, 10).float())  # the digits, one-hot
        sevens = model.sample(4, generator=torch.Generator().manual_seed(1), labels=torch.full((4,), 7))
        threes = model.sample(4, generator=torch.Generator().manual_seed(1), labels=torch.full((4,), 3))
        assert not torch.equal(sevens, threes)  # same noise, other digit: other images
        torch.testing.assert_close(seen[-1][:, :-10], seen[-2][:, :-10])  # ... and the noise was the same
        model.sample(12)  # no labels: every digit in turn
        torch.testing.assert_close(seen[-1][:, -10:].argmax(1), torch.arange(12) % 10)


@pytest.mark.parametrize("name", ["cgan", "cvae"])
def test_conditional_sampling_refuses_bad_labels(name):
    model, _ = _conditional(name)
    with pytest.raises(GenlabError, match="labels"):
        model.sample(3, labels=torch.tensor([1, 2]))
    with pytest.raises(GenlabError, match="digits 0 to 9"):
        model.sample(2, labels=torch.tensor([3, 10]))


def test_cgan_discriminator_projects_the_label():
    model, _ = _conditional("cgan")
    with torch.no_grad():
        model.embed.weight.normal_()
    x, _ = _batch(4)
    with torch.no_grad():
        a, b = model.critic(x, torch.full((4,), 1)), model.critic(x, torch.full((4,), 2))
        phi = model.features(x * 2 - 1)
        torch.testing.assert_close(a - b, phi @ (model.embed.weight[1] - model.embed.weight[2]))


def test_cgan_fakes_take_the_real_batch_labels():
    torch.manual_seed(0)
    model = CGAN(CGANConfig(**SMALL)).train()
    seen = _input_recorder([m for m in model.generator.modules() if isinstance(m, nn.Linear)][0])
    x, y = _batch(10)
    model.loss(x, y, "discriminator", {})
    torch.testing.assert_close(seen[-1][:, -10:].argmax(1), y)


def test_cvae_loss_pieces_and_label_free_helpers():
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(beta=2.0, classifier_weight=0.5, **SMALL)).train()
    x, y = _batch()
    out = model.loss(x, y, "model", {})
    logs = {k: float(v.detach()) for k, v in out.logs.items()}
    assert float(out.loss.detach()) == pytest.approx(logs["recon"] + 2.0 * logs["kl"] + 0.5 * logs["class_ce"], rel=1e-5)
    model.eval()
    seen = _input_recorder([m for m in model.decoder.modules() if isinstance(m, nn.Linear)][0])
    with torch.no_grad():
        model.reconstruct(x)  # no labels: the encoder's own digit guess
        torch.testing.assert_close(seen[-1][:, -10:].argmax(1), model.classify(x))
        model.reconstruct(x, labels=y)
        torch.testing.assert_close(seen[-1][:, -10:].argmax(1), y)
        model.decode(torch.zeros(3, model.config.latent_dim))  # no labels: plot_digit
        assert seen[-1][:, -10:].argmax(1).tolist() == [model.config.plot_digit] * 3
        assert model.encode(x).shape == (20, model.config.latent_dim)  # no labels needed


# --------------------------------------------------------------------------------------------
# Adversarial autoencoder
# --------------------------------------------------------------------------------------------


def test_aae_losses():
    torch.manual_seed(0)
    x, y = _batch()
    model = AAE(AAEConfig(adv_weight=3.0, **SMALL)).train()
    out = model.loss(x, y, "autoencoder", {})
    assert float(out.loss.detach()) == pytest.approx(float(out.logs["recon"].detach()) + 3.0 * float(out.logs["g_loss"].detach()), rel=1e-5)
    d_out = model.loss(x, y, "discriminator", {})
    d_out.loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())  # codes were made without gradient
    assert all(p.grad is not None for p in model.discriminator.parameters())
    assert model.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 1, 28, 28)


# --------------------------------------------------------------------------------------------
# Through the real training loop, figures and CLI
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW_MODELS)
def test_a_loop_step_changes_every_phase(name, tmp_path, tiny_bundle, monkeypatch):
    """One batch of `fit` (requires_grad switching, an optimizer per phase): every weight of
    every phase moves."""
    import genlab.train as train_module

    built = []
    original = train_module.build_model
    monkeypatch.setattr(train_module, "build_model", lambda *a: built.append(original(*a)) or built[-1])
    torch.manual_seed(0)
    before = {n: p.detach().clone() for n, p in MODELS[name](MODELS[name].config_class()).named_parameters()}
    fit_killed_after(1, tiny_train_config(name, batch_size=16), None, tmp_path / name, data=tiny_bundle, progress=False, log=lambda _: None)
    after = dict(built[0].named_parameters())
    unchanged = [n for n, p in after.items() if torch.equal(before[n], p.detach())]
    assert not unchanged, f"{name}: one step left {unchanged[:3]} unchanged"


@pytest.mark.parametrize("name", NEW_MODELS)
def test_figures_for_every_new_model(name, tiny_runs, tiny_bundle):
    from genlab import plots

    run = load_run(tiny_runs[name])
    figures = plots.make_figures(run, tiny_bundle)
    assert "samples" in figures and "losses" in figures and "interpolation" in figures
    if name in ("cvae", "aae"):
        assert {"reconstructions", "latent_space", "manifold"} <= set(figures)
    for path in figures.values():
        assert path.is_file() and path.stat().st_size > 1000


@pytest.mark.parametrize("name", ["cgan", "cvae"])
def test_cli_sample_digit(name, tiny_runs, tmp_path, capsys):
    out = tmp_path / "sevens.npy"
    assert main(["sample", str(tiny_runs[name]), "-n", "6", "--digit", "7", "--output", str(out)]) in (0, None)
    images = np.load(out)
    assert images.shape == (6, 28, 28)
    expected = load_run(tiny_runs[name]).sample(6, seed=0, labels=[7] * 6).squeeze(1).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-6)
    other = load_run(tiny_runs[name]).sample(6, seed=0, labels=[1] * 6).squeeze(1).numpy()
    assert not np.allclose(images, other)


@pytest.mark.parametrize("kernel", [3, 4, 5])
def test_conv_autoencoder_kernels_keep_28_by_28(kernel):
    model = VAE(VAEConfig(arch="conv", latent_dim=4, kernel=kernel))
    x = torch.rand(3, 1, 28, 28)
    mu, logvar = model.encode_distribution(x)
    assert mu.shape == (3, 4) and model.decode(mu).shape == (3, 1, 28, 28)
    assert model.encoder[0][0].kernel_size == (kernel, kernel)


def _activation_types(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.SiLU))}


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_activation_option_sets_every_hidden_layer(arch):
    """--activation silu puts SiLU after every hidden layer of encoder and decoder (none of the
    ReLUs stay); "relu" is the networks as before, with the conv encoder's leaky ReLU."""
    silu = VAE(VAEConfig(arch=arch, latent_dim=4, activation="silu"))
    assert _activation_types(silu.encoder) == {nn.SiLU} and _activation_types(silu.decoder) == {nn.SiLU}
    relu = VAE(VAEConfig(arch=arch, latent_dim=4, activation="relu"))
    assert nn.SiLU not in _activation_types(relu) and nn.ReLU in _activation_types(relu.decoder)
    assert (nn.LeakyReLU in _activation_types(relu.encoder)) == (arch == "conv")
    # the same count of activations either way: the option swaps them, it adds or drops none
    count = lambda m: sum(isinstance(x, (nn.ReLU, nn.LeakyReLU, nn.SiLU)) for x in m.modules())
    assert count(silu) == count(relu)
    x = torch.rand(3, 1, 28, 28)
    assert silu.reconstruct(x).shape == x.shape


def test_activation_default_depends_on_model_and_arch():
    """Unset, the conv VAE (and the CVAE, its subclass) takes SiLU, everything else ReLU; the
    training setup writes the choice into the config, so a saved run records it."""
    from genlab import TrainConfig
    from genlab.train import resolve_configs

    assert VAE.defaults(VAEConfig(arch="conv"))["activation"] == "silu"
    assert CVAE.defaults(CVAEConfig(arch="conv"))["activation"] == "silu"
    assert VAE.defaults(VAEConfig())["activation"] == "relu"
    for cls, config_class in ((AE, AEConfig), (AAE, AAEConfig)):
        assert cls.defaults(config_class(arch="conv"))["activation"] == "relu"
    assert _activation_types(VAE(VAEConfig(arch="conv", latent_dim=4))) == {nn.SiLU}  # None: built with the default
    _, filled = resolve_configs(TrainConfig(model="vae"), VAEConfig(arch="conv"))
    assert filled.activation == "silu"
    _, mine = resolve_configs(TrainConfig(model="vae"), VAEConfig(arch="conv", activation="relu"))
    assert mine.activation == "relu"
    with pytest.raises(GenlabError, match="activation must be one of relu, silu"):
        VAEConfig(activation="tanh").validate()
