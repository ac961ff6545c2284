"""The loss pieces several models share, written once: the VAE's reparameterisation, Gaussian KL
and reconstruction terms (VAE, CVAE), and the GAN game's two losses (GAN, DCGAN, CGAN, AAE).

Every helper reduces in float32: under bf16/fp16 autocast (genlab.precision) the networks' outputs
arrive in low precision, and a sum over 784 pixels in bf16 (8 significant bits) would round the
loss itself. `.float()` is a no-op on float32 tensors, so fp32 runs compute exactly as before."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# log σ² is clamped to this range: σ from e^-5 to e^5. Keeps exp() finite when the encoder
# starts badly or the learning rate is too high (a diverging KL otherwise ends in NaN).
LOGVAR_RANGE = (-10.0, 10.0)
# nats: a latent dimension with less KL than this counts as collapsed; the threshold between the
# used and the collapsed dimensions measured in benchmarks/README.md, "KL per latent dimension".
ACTIVE_KL = 0.1


# --- variational autoencoders --------------------------------------------------------------
def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = μ + σ·ε, ε ~ N(0, I): a draw from q(z|x) that gradients flow through (Kingma &
    Welling 2014, section 2.4). `generator`: seeded noise (evaluation); None: the global RNG."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * (0.5 * logvar).exp()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, 1)) per latent dimension, (B, D): Kingma & Welling, appendix B."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-image reconstruction loss (B,), summed over pixels, from decoder logits: "bce" the
    Bernoulli likelihood (grey pixels as soft targets), "mse" squared error of the means."""
    logits = logits.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return (torch.sigmoid(logits) - x).pow(2).flatten(1).sum(1)


def elbo_terms(
    mu: torch.Tensor, logvar: torch.Tensor, logits: torch.Tensor, x: torch.Tensor, recon_kind: str, beta: float, training: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The negative ELBO per image, recon + β·KL (nats, batch mean), and its logs. Outside
    training also the pixel MSE and the number of active latent dimensions (KL > ACTIVE_KL): a
    posterior collapse at a glance, skipped in training to keep the step cheap."""
    logits = logits.float()
    recon = reconstruction_loss(logits, x, recon_kind).mean()
    kl_per_dim = gaussian_kl(mu, logvar).mean(0)  # (D,): shows which dimensions are used
    kl = kl_per_dim.sum()
    loss = recon + beta * kl
    logs = {"loss": loss, "recon": recon, "kl": kl}
    if not training:
        logs["mse"] = (torch.sigmoid(logits) - x).pow(2).mean()
        logs["active_dims"] = (kl_per_dim > ACTIVE_KL).sum().float()
    return loss, logs


@torch.inference_mode()
def kl_per_dimension(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per latent dimension of a model with `has_likelihood`, averaged over the
    images x: (D,) in nats. The values sum to the model's KL term; a dimension near 0 is unused
    (collapsed to the prior); with β > 1 fewer stay active (Higgins et al. 2017,
    https://openreview.net/forum?id=Sy2fzU9gl; Burda et al. 2015 count "active units")."""
    total = torch.zeros(model.latent_dim, device=x.device)
    for start in range(0, len(x), batch_size):
        mu, logvar = model.encode_distribution(x[start : start + batch_size])
        total += gaussian_kl(mu, logvar).sum(0)
    return total / len(x)


# --- the GAN game ----------------------------------------------------------------------------
def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """D's loss, BCE(real -> 1 − smoothing) + BCE(fake -> 0) (one-sided label smoothing,
    Salimans et al. 2016, https://arxiv.org/abs/1606.03498), with the mean D(x) and D(G(z)):
    the logs {"d_loss", "d_real", "d_fake"}."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    real_target = torch.full_like(real_logits, 1.0 - label_smoothing)
    d_loss = F.binary_cross_entropy_with_logits(real_logits, real_target) + F.binary_cross_entropy_with_logits(
        fake_logits, torch.zeros_like(fake_logits)
    )
    return {"d_loss": d_loss, "d_real": torch.sigmoid(real_logits).mean(), "d_fake": torch.sigmoid(fake_logits).mean()}


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss −log D(G(z)) (Goodfellow et al. 2014, section 3):
    strong gradients early on, when D rejects every fake with confidence."""
    fake_logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
