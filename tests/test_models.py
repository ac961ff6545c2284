"""Every registered model (parametrized over `genlab.models.MODELS`, so a model added later is
tested here without a new line): shapes, finite losses, one optimizer step per phase; and the
VAE's loss against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import CAN_ENCODE, CAN_SAMPLE, CONDITIONAL, HAS_DENSITY, HAS_LIKELIHOOD, ITERATIVE, image_batch
from genlab.config import from_dict, to_dict
from genlab.errors import GenlabError
from genlab.models import MODELS, GenerativeModel, NotSupported, get_model_class, register
from genlab.models.losses import gaussian_kl, reconstruction_loss
from genlab.models.vae import VAE, VAEConfig

NAMES = sorted(MODELS)
BATCH = 16


def _batch(n: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    return image_batch(n, seed=3)


def _model(name: str, seed: int = 0) -> GenerativeModel:
    torch.manual_seed(seed)
    cls = MODELS[name]
    return cls(cls.config_class())


def _check_images(images: torch.Tensor, n: int) -> None:
    assert images.shape == (n, 1, 28, 28)
    assert images.dtype == torch.float32
    assert torch.isfinite(images).all()
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_registry_is_filled_and_checked():
    assert {"ae", "vae", "gan"} <= set(MODELS)
    for name, cls in MODELS.items():
        assert cls.name == name and issubclass(cls, GenerativeModel)
    with pytest.raises(GenlabError, match="unknown model 'nope'"):
        get_model_class("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register("vae")(type("Again", (GenerativeModel,), {}))
    assert MODELS["vae"] is VAE  # the failed registration changed nothing


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips_through_json_dict(name):
    cls = MODELS[name]
    config = cls.config_class()
    assert from_dict(cls.config_class, to_dict(config)) == config
    with pytest.raises(GenlabError):
        from_dict(cls.config_class, {**to_dict(config), "latent_dim": 0})


@pytest.mark.parametrize("name", NAMES)
def test_each_capability_the_flags_promise_works_and_the_others_are_refused(name):
    """The flags are the contract: what they promise gives finite images or codes of the right
    shape, labels passed as the keyword; what they deny raises NotSupported, naming the flag."""
    model = _model(name).eval()
    x, y = _batch()
    labels = y if model.conditional else None
    latent = model.config.latent_dim
    with torch.no_grad():
        _check_images(model.decode(torch.randn(BATCH, latent), labels=labels), BATCH)  # every model decodes
        if model.can_encode:
            z = model.encode(x, labels=labels)
            assert z.shape == (BATCH, latent) and torch.isfinite(z).all()
            _check_images(model.reconstruct(x, labels=labels), BATCH)
        else:
            for method in (model.encode, model.reconstruct):
                with pytest.raises(NotSupported, match="can_encode"):
                    method(x)
        if model.has_likelihood:
            mu, logvar = model.encode_distribution(x, labels=labels)
            assert mu.shape == logvar.shape == (BATCH, latent)
            assert model.decode_logits(mu, labels=labels).shape == (BATCH, 1, 28, 28)
        else:
            with pytest.raises(NotSupported, match="has_likelihood"):
                model.encode_distribution(x)
        if model.can_sample:
            sample_labels = torch.arange(5) % 10 if model.conditional else None
            first = model.sample(5, generator=torch.Generator().manual_seed(1), labels=sample_labels)
            _check_images(first, 5)
            again = model.sample(5, generator=torch.Generator().manual_seed(1), labels=sample_labels)
            torch.testing.assert_close(first, again, rtol=0, atol=0)  # the generator fixes the noise
        else:
            with pytest.raises(NotSupported, match="can_sample"):
                model.sample(5)
    assert type(model).capabilities() == {
        "can_encode": name in CAN_ENCODE, "can_sample": name in CAN_SAMPLE,
        "has_likelihood": name in HAS_LIKELIHOOD, "conditional": name in CONDITIONAL,
        "iterative": name in ITERATIVE, "has_density": name in HAS_DENSITY,
    }


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_for_every_phase(name):
    model = _model(name).train()
    x, y = _batch()
    cache: dict = {}
    for phase in model.phases:
        out = model.loss(x, y, phase, cache)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss), phase
        assert out.loss.requires_grad, f"{phase}: the loss does not depend on the weights"
        assert out.logs, f"{phase}: nothing logged"
        for key, value in out.logs.items():
            assert value.ndim == 0 and torch.isfinite(value), f"{phase}: {key} = {value}"
    test_logs = model.eval().eval_losses(x, y)
    assert test_logs and all(torch.isfinite(v) for v in test_logs.values())


@pytest.mark.parametrize("name", NAMES)
def test_phases_split_the_parameters(name):
    """Each trainable parameter belongs to exactly one phase's optimizer."""
    model = _model(name)
    owners: dict[int, list[str]] = {}
    for phase in dict.fromkeys(model.phases):  # a phase may repeat (WGAN-GP: 5 critic steps)
        for p in model.phase_parameters(phase):
            owners.setdefault(id(p), []).append(phase)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert sorted(by_id[i] for i in owners) == sorted(trainable), "a parameter no optimizer updates"
    shared = [by_id[i] for i, phases in owners.items() if len(phases) > 1]
    assert not shared, f"parameters stepped by several phases: {shared[:3]}"


@pytest.mark.parametrize("name", NAMES)
def test_one_step_changes_exactly_that_phases_weights(name):
    """As the training loop does it: per phase, zero grads, loss, backward, step."""
    model = _model(name).train()
    x, y = _batch()
    optimizers = {
        phase: torch.optim.Adam(model.phase_parameters(phase), lr=model.defaults(model.config)["lr"], betas=model.adam_betas)
        for phase in model.phases
    }
    cache: dict = {}
    for phase in model.phases:
        mine = {id(p) for p in model.phase_parameters(phase)}
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizers[phase].zero_grad(set_to_none=True)
        model.loss(x, y, phase, cache).loss.backward()
        optimizers[phase].step()
        for n, p in model.named_parameters():
            changed = not torch.equal(before[n], p.detach())
            if id(p) in mine:
                assert changed, f"{phase} step left {n} unchanged (no gradient reaches it?)"
            else:
                assert not changed, f"{phase} step changed {n}, which belongs to another phase"


# --------------------------------------------------------------------------------------------
# The VAE's loss, by hand
# --------------------------------------------------------------------------------------------


def test_gaussian_kl_matches_closed_form():
    # KL(N(mu, s^2) || N(0, 1)) = (mu^2 + s^2 - 1 - ln s^2) / 2 per dimension.
    mu = torch.tensor([[0.0, 1.0, 0.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0, math.log(2.0), math.log(0.5)]])
    expected = [0.0, 0.5, (2 - 1 - math.log(2)) / 2, (4 + 0.5 - 1 - math.log(0.5)) / 2]
    torch.testing.assert_close(gaussian_kl(mu, logvar), torch.tensor([expected]))


def test_reconstruction_loss_sums_over_pixels():
    x = torch.zeros(2, 1, 28, 28)
    x[1] = 1.0
    logits = torch.zeros(2, 1, 28, 28)  # sigmoid = 0.5 everywhere
    torch.testing.assert_close(reconstruction_loss(logits, x, "mse"), torch.full((2,), 784 * 0.25))
    torch.testing.assert_close(reconstruction_loss(logits, x, "bce"), torch.full((2,), 784 * math.log(2.0)))


def _fixed_vae(recon_loss: str, beta: float) -> VAE:
    """A 2-D VAE whose encoder always says mu = (1, 0), log s^2 = (0, ln 2), and whose decoder
    always outputs 0.5 per pixel (last layers' weights zeroed), so the loss is known by hand."""
    model = VAE(VAEConfig(latent_dim=2, hidden_dims=(8,), beta=beta, recon_loss=recon_loss))
    encoder_out = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)][-1]
    decoder_out = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        encoder_out.weight.zero_()
        encoder_out.bias.copy_(torch.tensor([1.0, 0.0, 0.0, math.log(2.0)]))  # (mu, log s^2)
        decoder_out.weight.zero_()
        decoder_out.bias.zero_()
    return model


@pytest.mark.parametrize("recon_loss", ["mse", "bce"])
def test_vae_loss_by_hand(recon_loss):
    beta = 2.0
    model = _fixed_vae(recon_loss, beta).train()
    x = torch.zeros(2, 1, 28, 28)
    x[1] = 0.25
    out = model.loss(x, torch.zeros(2, dtype=torch.long), "model", {})
    logs = {k: float(v.detach()) for k, v in out.logs.items()}
    # Reconstruction per image, summed over 784 pixels, then averaged over the 2 images.
    if recon_loss == "mse":
        recon = (784 * 0.5**2 + 784 * 0.25**2) / 2  # = 122.5
    else:  # BCE(0.5, t) = ln 2 whatever the target t
        recon = 784 * math.log(2.0)
    kl = 0.5 + (2 - 1 - math.log(2.0)) / 2  # dimension 1: mu = 1; dimension 2: s^2 = 2
    assert logs["recon"] == pytest.approx(recon, rel=1e-5)
    assert logs["kl"] == pytest.approx(kl, rel=1e-5)
    assert float(out.loss.detach()) == pytest.approx(recon + beta * kl, rel=1e-5)
    assert logs["loss"] == pytest.approx(recon + beta * kl, rel=1e-5)
    mu, logvar = model.encode_distribution(x)
    torch.testing.assert_close(mu, torch.tensor([[1.0, 0.0]] * 2))
    torch.testing.assert_close(logvar, torch.tensor([[0.0, math.log(2.0)]] * 2))


def test_vae_reparameterisation_samples_the_posterior():
    """z = mu + s * eps: the decoder sees noisy codes in training (not mu itself)."""
    model = _fixed_vae("mse", 1.0).train()
    seen = []
    model.decoder.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    torch.manual_seed(0)
    model.loss(torch.zeros(4000, 1, 28, 28), torch.zeros(4000, dtype=torch.long), "model", {})
    z = seen[0]
    assert z.shape == (4000, 2)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, 0.0]), atol=0.08, rtol=0)
    torch.testing.assert_close(z.var(0), torch.tensor([1.0, 2.0]), atol=0.15, rtol=0)


def test_vae_beta_zero_ignores_the_kl_term():
    out = _fixed_vae("mse", 0.0).loss(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), "model", {})
    assert float(out.loss.detach()) == pytest.approx(784 * 0.25, rel=1e-5)
    assert float(out.logs["kl"].detach()) > 0  # still logged
