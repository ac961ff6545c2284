"""Conditional models (cvae, cgan): the labels reach the networks, bad labels are refused, and
`genlab sample --digit` draws the asked digit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import SMALL_CONV as SMALL
from conftest import image_batch, input_recorder, run_cli
from genlab import load_run
from genlab.errors import GenlabError
from genlab.models.cgan import CGAN, CGANConfig
from genlab.models.cvae import CVAE, CVAEConfig


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
    seen = input_recorder(first_layer)
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
    x, _ = image_batch(4)
    with torch.no_grad():
        a, b = model.critic(x, torch.full((4,), 1)), model.critic(x, torch.full((4,), 2))
        phi = model.features(x * 2 - 1)
        torch.testing.assert_close(a - b, phi @ (model.embed.weight[1] - model.embed.weight[2]))


def test_cgan_fakes_take_the_real_batch_labels():
    torch.manual_seed(0)
    model = CGAN(CGANConfig(**SMALL)).train()
    seen = input_recorder([m for m in model.generator.modules() if isinstance(m, nn.Linear)][0])
    x, y = image_batch(10)
    model.loss(x, y, "discriminator", {})
    torch.testing.assert_close(seen[-1][:, -10:].argmax(1), y)


def test_cvae_loss_pieces_and_label_free_helpers():
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(beta=2.0, classifier_weight=0.5, **SMALL)).train()
    x, y = image_batch()
    out = model.loss(x, y, "model", {})
    logs = {k: float(v.detach()) for k, v in out.logs.items()}
    assert float(out.loss.detach()) == pytest.approx(logs["recon"] + 2.0 * logs["kl"] + 0.5 * logs["class_ce"], rel=1e-5)
    model.eval()
    seen = input_recorder([m for m in model.decoder.modules() if isinstance(m, nn.Linear)][0])
    with torch.no_grad():
        model.reconstruct(x)  # no labels: the encoder's own digit guess
        torch.testing.assert_close(seen[-1][:, -10:].argmax(1), model.classify(x))
        model.reconstruct(x, labels=y)
        torch.testing.assert_close(seen[-1][:, -10:].argmax(1), y)
        model.decode(torch.zeros(3, model.config.latent_dim))  # no labels: plot_digit
        assert seen[-1][:, -10:].argmax(1).tolist() == [model.config.plot_digit] * 3
        assert model.encode(x).shape == (20, model.config.latent_dim)  # no labels needed


@pytest.mark.parametrize("name", ["cgan", "cvae"])
def test_cli_sample_digit(name, tiny_runs, tmp_path):
    out = tmp_path / "sevens.npy"
    code, _, err = run_cli("sample", tiny_runs[name], "-n", "6", "--digit", "7", "--output", out)
    assert code == 0, err
    images = np.load(out)
    assert images.shape == (6, 28, 28)
    expected = load_run(tiny_runs[name]).sample(6, seed=0, labels=[7] * 6).squeeze(1).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-6)
    other = load_run(tiny_runs[name]).sample(6, seed=0, labels=[1] * 6).squeeze(1).numpy()
    assert not np.allclose(images, other)
