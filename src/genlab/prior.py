"""A fitted prior for a trained VAE: a Gaussian mixture over its codes, sampled instead of N(0, I).

A VAE is trained to make the codes of the training images, together, look like N(0, I); they
never do exactly, and the prior puts mass where no training image put its code ("holes"), so
some decoded prior samples are not digits. Fitting a Gaussian mixture to the codes after
training and sampling from it ("ex-post density estimation", Ghosh et al. 2020,
https://arxiv.org/abs/1903.12436; the two-stage VAE of Dai & Wipf 2019 is the same idea) keeps
the samples where the decoder was trained. It is also a valid prior for the likelihood bound:
`genlab eval RUN --prior gmm` scores the same decoder with p(z) = the mixture, and since the
mixture is fitted to the training codes it usually bounds log p(x) higher, not lower.

What it gains on the 16-D Bernoulli VAEs is measured in benchmarks/README.md, "VAE architecture". The
file is `RUN/prior.safetensors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from .errors import GenlabError, RunFolderError
from .models.losses import reparameterize
from .runs import PRIOR_FILE, load_tensors, save_tensors

DEFAULT_COMPONENTS = 50  # chosen on the validation split over 10 (benchmarks/README.md, "VAE architecture")
CODE_DRAWS = 4  # codes z ~ q(z|x) drawn per training image for the fit: the posterior's spread, not just its mean


@dataclass
class MixturePrior:
    """p(z) = Σ_k w_k N(z; m_k, L_k L_kᵀ): weights (K,), means (K, D), scale_tril (K, D, D)."""

    weights: torch.Tensor
    means: torch.Tensor
    scale_tril: torch.Tensor

    @property
    def components(self) -> int:
        return len(self.weights)

    @property
    def latent_dim(self) -> int:
        return self.means.shape[1]

    def distribution(self) -> MixtureSameFamily:
        return MixtureSameFamily(Categorical(probs=self.weights), MultivariateNormal(self.means, scale_tril=self.scale_tril))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) (...,) for codes z (..., D)."""
        return self.distribution().log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes (n, D), reproducible from `generator` (torch.distributions' sample is not seedable per call)."""
        device = self.means.device
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        eps = torch.randn(n, self.latent_dim, 1, generator=generator, device=device)  # (n, D, 1)
        return self.means[component] + (self.scale_tril[component] @ eps).squeeze(-1)

    def to(self, device) -> MixturePrior:
        return MixturePrior(self.weights.to(device), self.means.to(device), self.scale_tril.to(device))


def fit_mixture_prior(codes: torch.Tensor, components: int = DEFAULT_COMPONENTS, seed: int = 0) -> MixturePrior:
    """A full-covariance Gaussian mixture fitted by EM (scikit-learn) to codes (N, D)."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    if components < 1:
        raise GenlabError(f"--components must be at least 1, got {components}")
    if components > len(codes):
        raise GenlabError(f"--components {components} is more than the {len(codes)} codes to fit")
    mixture = GaussianMixture(components, covariance_type="full", random_state=seed, max_iter=200)
    # EM's small matrix products: BLAS threads cost more than they give (benchmarks/README.md, "What the lab's evaluation costs")
    with threadpool_limits(1):
        mixture.fit(codes.detach().cpu().double().numpy())
    as_float = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    covariances = as_float(mixture.covariances_)
    return MixturePrior(as_float(mixture.weights_), as_float(mixture.means_), torch.linalg.cholesky(covariances))


@torch.inference_mode()
def posterior_codes(model, x: torch.Tensor, draws: int = CODE_DRAWS, seed: int = 0, batch_size: int = 1000) -> torch.Tensor:
    """`draws` codes z ~ q(z|x) per image, (draws·N, D): what the mixture is fitted to."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    codes = []
    for start in range(0, len(x), batch_size):
        mu, logvar = model.encode_distribution(x[start : start + batch_size])
        for _ in range(draws):
            codes.append(reparameterize(mu, logvar, generator))
    return torch.cat(codes)


def save_prior(run_dir: Path, prior: MixturePrior, info: dict) -> Path:
    path = Path(run_dir) / PRIOR_FILE
    tensors = {"weights": prior.weights, "means": prior.means, "scale_tril": prior.scale_tril}
    save_tensors(path, tensors, {"kind": "gaussian_mixture", **info})
    return path


def load_prior(run_dir: Path, latent_dim: int, weights_sha256: str | None = None) -> MixturePrior:
    """The run's fitted prior, validated (shapes, finite, weights summing to 1, positive scales;
    with `weights_sha256`, fitted to exactly those model weights, not to an earlier state of a
    run trained further since)."""
    path = Path(run_dir) / PRIOR_FILE
    if not path.is_file():
        raise RunFolderError(f"{run_dir} has no fitted prior: run genlab fit-prior {run_dir} first")
    tensors, meta = load_tensors(path)
    if set(tensors) != {"weights", "means", "scale_tril"} or meta.get("kind") != "gaussian_mixture":
        raise RunFolderError(f"{path}: not a genlab Gaussian-mixture prior (refit it with genlab fit-prior {run_dir})")
    if weights_sha256 is not None and meta.get("weights_sha256") != weights_sha256:
        raise RunFolderError(f"{path} was fitted to other weights than the run's (trained further since?): refit it with genlab fit-prior {run_dir}")
    weights, means, scale_tril = (tensors[k].float() for k in ("weights", "means", "scale_tril"))
    k = len(weights)
    if weights.ndim != 1 or k < 1 or means.shape != (k, latent_dim) or scale_tril.shape != (k, latent_dim, latent_dim):
        raise RunFolderError(
            f"{path}: shapes {tuple(weights.shape)}, {tuple(means.shape)}, {tuple(scale_tril.shape)} do not fit a "
            f"{latent_dim}-D latent (refit it with genlab fit-prior)"
        )
    finite = all(bool(torch.isfinite(t).all()) for t in (weights, means, scale_tril))
    diagonal = scale_tril.diagonal(dim1=-2, dim2=-1)
    if not finite or weights.min() < 0 or abs(float(weights.sum()) - 1) > 1e-3 or diagonal.min() <= 0:
        raise RunFolderError(f"{path}: not a valid mixture (weights, means or scales broken; refit it with genlab fit-prior)")
    return MixturePrior(weights / weights.sum(), means, scale_tril.tril())


def fit_run_prior(
    run, x_train: torch.Tensor, components: int = DEFAULT_COMPONENTS, seed: int = 0, data_sha256: str | None = None
) -> tuple[MixturePrior, Path, int]:
    """Fit the mixture to the run's codes of its training images x_train and save it beside the
    weights (`genlab fit-prior`, and the lab's conv VAE): (prior, its path, number of codes).
    A `--binarize` run is fitted on the binarised digits it learned from."""
    from .data import fixed_binarization
    from .modelcard import write_card
    from .utils import weights_sha256

    if run.train_config.binarize:
        x_train = fixed_binarization(x_train)
    codes = posterior_codes(run.model.eval(), x_train, seed=seed)
    prior = fit_mixture_prior(codes, components, seed)
    info = {"components": components, "seed": seed, "codes": len(codes), "data_sha256": data_sha256, "weights_sha256": weights_sha256(run.model)}
    path = save_prior(run.path, prior, info)
    write_card(run.path)  # the card names the prior
    return prior, path, len(codes)
