"""The shared building blocks of the autoencoders: conv encoders and decoders, and the arch,
kernel and activation options that AE, VAE, CVAE and AAE read alike."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import SMALL_CONV as SMALL
from conftest import image_batch
from genlab.cli import build_parser
from genlab.errors import GenlabError
from genlab.models.aae import AAE, AAEConfig
from genlab.models.ae import AE, AEConfig
from genlab.models.blocks import Dropout, conv_decoder, conv_encoder
from genlab.models.cvae import CVAE, CVAEConfig
from genlab.models.vae import VAE, VAEConfig


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
    x, y = image_batch()
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


# --------------------------------------------------------------------------------------------
# The discriminators' dropout
# --------------------------------------------------------------------------------------------


def test_dropout_zeroes_a_share_p_and_scales_the_rest_to_keep_the_mean():
    x = torch.full((200_000,), 2.0)
    y = Dropout(0.3).train()(x)
    zeroed = (y == 0).float().mean().item()
    assert zeroed == pytest.approx(0.3, abs=0.005)  # 200k draws: the share's standard error is 0.001
    assert torch.allclose(y[y != 0], torch.tensor(2.0 / 0.7))
    assert y.mean().item() == pytest.approx(2.0, rel=0.01)


def test_dropout_passes_gradients_through_the_kept_values_only():
    x = torch.randn(64, 8, 7, 7, requires_grad=True)
    y = Dropout(0.5).train()(x)
    y.sum().backward()
    kept = y.detach() != 0
    assert torch.allclose(x.grad[kept], torch.tensor(2.0)) and (x.grad[~kept] == 0).all()


def test_dropout_is_the_identity_in_eval_mode_and_at_p_0_and_repeats_with_the_seed():
    x = torch.randn(32, 16)
    assert Dropout(0.3).eval()(x) is x and Dropout(0.0).train()(x) is x
    draws = []
    for _ in range(2):
        torch.manual_seed(7)
        draws.append(Dropout(0.3).train()(x))
    assert torch.equal(*draws)
