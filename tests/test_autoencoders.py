"""The reconstruction family beyond the generic contract: the denoising AE, the β-VAE's KL per
latent dimension and the adversarial autoencoder's two losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import SMALL_CONV as SMALL
from conftest import image_batch, input_recorder
from genlab.cli import build_parser
from genlab.errors import GenlabError
from genlab.models.aae import AAE, AAEConfig
from genlab.models.ae import AE, AEConfig
from genlab.models.losses import ACTIVE_KL, kl_per_dimension
from genlab.models.vae import VAE, VAEConfig


# --------------------------------------------------------------------------------------------
# Denoising AE: noisy input in training, clean target, clean input in evaluation
# --------------------------------------------------------------------------------------------


def test_denoising_ae_corrupts_only_the_training_input():
    model = AE(AEConfig(hidden_dims=(16,), input_noise=0.5))
    seen = input_recorder(model.encoder)
    x, y = image_batch()
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
    seen_plain = input_recorder(plain.encoder)
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
    x, y = image_batch(30)
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
    x, y = image_batch()
    per_dim = kl_per_dimension(model, x)
    torch.testing.assert_close(per_dim, torch.tensor([1.125, 0.0]))
    assert float(model.eval_losses(x, y)["active_dims"]) == 1.0
    assert "active_dims" not in model.train().loss(x, y, "model", {}).logs  # the training step stays lean


# --------------------------------------------------------------------------------------------
# Adversarial autoencoder
# --------------------------------------------------------------------------------------------


def test_aae_losses():
    torch.manual_seed(0)
    x, y = image_batch()
    model = AAE(AAEConfig(adv_weight=3.0, **SMALL)).train()
    out = model.loss(x, y, "autoencoder", {})
    assert float(out.loss.detach()) == pytest.approx(float(out.logs["recon"].detach()) + 3.0 * float(out.logs["g_loss"].detach()), rel=1e-5)
    d_out = model.loss(x, y, "discriminator", {})
    d_out.loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())  # codes were made without gradient
    assert all(p.grad is not None for p in model.discriminator.parameters())
    assert model.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 1, 28, 28)
