"""Metrics: reconstruction, ELBO / IWAE log-likelihood, FID, precision / recall, class coverage.

Small pure functions first (each testable against a hand computation), then `evaluate_run`,
which applies to a trained run every metric its model supports:

  reconstruct(x)            -> recon_mse_per_pixel, recon_bce_per_image          (AE, VAE)
  encode(x)                 -> knn5_accuracy of the test latents                  (AE, VAE)
  encode_distribution(x)    -> elbo_nats, kl_nats, iwae_log_px_nats               (VAE)
  can_sample                -> fid, precision, recall, class_entropy, class_frac_* (VAE, GAN)

Sample metrics look at digits through the penultimate layer of genlab's own MNIST classifier
(`genlab.classifier`), the way FID looks through Inception; the features of the real digits
are computed once per process and data set (`reference_features`). All sampling is seeded
with private torch.Generators, so evaluating a run twice gives the same numbers.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from .data import NUM_CLASSES, DataBundle, cache_dir, fixed_binarization, load_dataset
from .errors import GenlabError, RunFolderError
from .metrics import KNN_NEIGHBOURS, PR_NEIGHBOURS, PROB_EPS, direction, notes_for
from .models.base import default_labels
from .models.sampling import SamplerOptions
from .models.losses import gaussian_kl
from .limits import EVAL_FIELDS, check_eval_sizes, check_fields, parse_json, read_json_text
from .utils import atomic_write_json, make_generator, weights_sha256

EVAL_FILE = "eval.json"
DISTANCE_CHUNK = 2048  # rows of a pairwise-distance block: 2048 × 10k floats = 80 MB
IW_MAX_ROWS = 2048  # decoder rows per IWAE call (images × importance samples): bounds memory; larger calls are no faster
# The IWAE bound costs K decoder passes per digit: for the lab's conv VAE, K = 100 over the 10,000
# real test digits takes about 200 s on one core. The first 2,000 (the loss curves' subset too,
# TrainConfig.epoch_eval_images) take a fifth of that and give the mean with a standard error of
# about 0.7 nats (per-digit spread about 29 nats, benchmarks/README.md, "The lab on more data, and its cores"), far below the
# tens of nats between the lab's two VAEs; eval.json states the subset and its standard error.
IW_TEST_DIGITS = 2000
# The training digits the latent k-NN is fitted on and fid_floor compares with the test set: the
# first 10,000, as many as the test set and the FID's samples (so fid_floor is a floor at the same
# n), and a cost that does not grow with the training split (all of the offline 4,500).
TRAIN_REFERENCE_DIGITS = 10000
# bits/dim of a flow (benchmarks/README.md, "Flow matching"): the first DENSITY_DIGITS test
# digits, the ODE solved with DENSITY_SAMPLER (64 midpoint steps were within 0.03 bits/dim of 128
# Heun steps; 16 Heun steps were 0.1 off); the exact-trace check on DENSITY_CHECK_DIGITS of them
# with the cheaper DENSITY_CHECK_SAMPLER, against DENSITY_CHECK_PROBES Hutchinson probes each.
DENSITY_DIGITS = 100
DENSITY_SAMPLER = SamplerOptions(steps=64, solver="midpoint", shift=1.0)
DENSITY_BATCH = 250
DENSITY_CHECK_DIGITS = 1
DENSITY_CHECK_SAMPLER = SamplerOptions(steps=2, solver="euler", shift=1.0)
DENSITY_CHECK_PROBES = 16


# --------------------------------------------------------------------------------------------
# Feature-space metrics: FID, precision / recall
# --------------------------------------------------------------------------------------------


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), in float64 (unbiased, N − 1)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017,
    https://arxiv.org/abs/1706.08500):  |mu1 − mu2|² + Tr(S1 + S2 − 2 (S1 S2)^½).

    Tr (S1 S2)^½ is computed as Tr (S1^½ S2 S1^½)^½ — the same eigenvalues, since the two
    matrices are similar — which is symmetric positive semi-definite, so LAPACK's symmetric
    eigensolver (scipy.linalg.eigh) gives it without the complex round-off of a general sqrtm.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    w1, v1 = scipy.linalg.eigh(sigma1)
    sqrt1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T  # S1^½
    middle = sqrt1 @ sigma2 @ sqrt1
    trace_sqrt = np.sqrt(np.clip(scipy.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt, 0.0))


def fid_from_features(features_a, features_b) -> float:
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def _partial_sq_distances(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(len(a), len(b)): |b_j|² − 2 a_i·b_j (− bias_j), one fused matmul (addmm).

    The squared distance |a_i − b_j|² is this plus |a_i|², a constant along each row, so
    nearest neighbours and row minima can be found without adding it: one pass over the
    block fewer, which is most of the cost beside the matmul.
    """
    offset = (b * b).sum(1) if bias is None else (b * b).sum(1) - bias
    return torch.addmm(offset.unsqueeze(0), a, b.T, alpha=-2)


def kth_neighbour_sq_radius(points: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) squared distance from each point to its k-th nearest *other* point in `points`."""
    if len(points) <= k:
        raise ValueError(f"need more than k={k} points for k-NN radii, got {len(points)}")
    radii = []
    for start in range(0, len(points), DISTANCE_CHUNK):
        a = points[start : start + DISTANCE_CHUNK]
        d = _partial_sq_distances(a, points)
        # k + 1 smallest: the first is the point itself (distance 0)
        radii.append((d.topk(k + 1, dim=1, largest=False).values[:, k] + (a * a).sum(1)).clamp_min(0))
    return torch.cat(radii)


def inside_manifold(queries: torch.Tensor, points: torch.Tensor, sq_radii: torch.Tensor) -> torch.Tensor:
    """(Q,) bool: is each query inside at least one ball (points[j], radius_j)?

    |q − p_j|² ≤ r_j²  for some j   <=>   min_j (|p_j|² − r_j² − 2 q·p_j) ≤ −|q|².
    """
    inside = []
    for start in range(0, len(queries), DISTANCE_CHUNK):
        q = queries[start : start + DISTANCE_CHUNK]
        inside.append(_partial_sq_distances(q, points, bias=sq_radii).amin(1) <= -(q * q).sum(1))
    return torch.cat(inside)


def precision_recall(real, fake, k: int = PR_NEIGHBOURS, real_sq_radii=None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, https://arxiv.org/abs/1904.06991).

    Each set's manifold is the union of balls around its points reaching their k-th nearest
    neighbour. precision = share of fake points inside the real manifold (are samples
    realistic?); recall = share of real points inside the fake manifold (is all of the data
    covered?). Features (N, D); `real_sq_radii` may be passed in when cached.
    """
    real = torch.as_tensor(real, dtype=torch.float32)
    fake = torch.as_tensor(fake, dtype=torch.float32, device=real.device)
    # Centre both on the real mean: smaller norms, less float32 cancellation in |a|² + |b|² − 2a·b.
    centre = real.mean(0)
    real, fake = real - centre, fake - centre
    if real_sq_radii is None:
        real_sq_radii = kth_neighbour_sq_radius(real, k)
    fake_sq_radii = kth_neighbour_sq_radius(fake, k)
    precision = inside_manifold(fake, real, real_sq_radii.to(real.device)).float().mean()
    recall = inside_manifold(real, fake, fake_sq_radii).float().mean()
    return float(precision), float(recall)


# --------------------------------------------------------------------------------------------
# Class coverage and latent k-NN accuracy
# --------------------------------------------------------------------------------------------


def class_histogram(predictions, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Share of each class among predicted labels (num_classes,), summing to 1."""
    counts = np.bincount(np.asarray(predictions, dtype=np.int64).ravel(), minlength=num_classes)[:num_classes]
    return counts / max(counts.sum(), 1)


def normalised_entropy(histogram) -> float:
    """Entropy of a histogram divided by log(number of bins): 1 = uniform, 0 = a single bin."""
    p = np.asarray(histogram, dtype=np.float64)
    p = p / p.sum()
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(len(p))) + 0.0  # + 0.0: no "-0" for one class


def knn_accuracy(train_z, train_y, test_z, test_y, k: int = KNN_NEIGHBOURS) -> float:
    """Accuracy of a k-nearest-neighbour vote (Euclidean) fit on (train_z, train_y).

    Ties between classes go to the lower label, as in scikit-learn's KNeighborsClassifier.
    """
    train_z = torch.as_tensor(train_z, dtype=torch.float32)
    test_z = torch.as_tensor(test_z, dtype=torch.float32, device=train_z.device)
    train_y = torch.as_tensor(train_y, dtype=torch.long, device=train_z.device)
    test_y = torch.as_tensor(test_y, dtype=torch.long, device=train_z.device)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for start in range(0, len(test_z), DISTANCE_CHUNK):
        d = _partial_sq_distances(test_z[start : start + DISTANCE_CHUNK], train_z)
        nearest = d.topk(k, dim=1, largest=False).indices  # (C, k): row constants do not change the order
        votes = F.one_hot(train_y[nearest], n_classes).sum(1)  # (C, n_classes)
        correct += int((votes.argmax(1) == test_y[start : start + DISTANCE_CHUNK]).sum())
    return correct / len(test_z)


# --------------------------------------------------------------------------------------------
# Reconstruction and likelihood
# --------------------------------------------------------------------------------------------


def reconstruction_errors(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (B,): mean squared error per pixel, and Bernoulli cross-entropy summed over
    pixels with grey pixels as soft targets, from reconstructions x̂ in [0, 1]."""
    x_hat, x = x_hat.flatten(1), x.flatten(1)
    mse = (x_hat - x).pow(2).mean(1)
    p = x_hat.clamp(PROB_EPS, 1 - PROB_EPS)
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).sum(1)
    return mse, bce


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) = Σ_pixels x log σ(l) + (1 − x) log(1 − σ(l)), (..., 1, 28, 28) -> (...);
    the leading dimensions of logits and x broadcast.

    Written as Σ x·l − softplus(l) (the same thing, since log σ(l) = l − softplus(l)): a dot
    product and one elementwise pass, about twice as fast as BCE-with-logits per pixel, which
    matters for IWAE's K decoder outputs per image.
    """
    logits, x = logits.flatten(-3), x.flatten(-3)  # (..., 784)
    return torch.linalg.vecdot(logits, x) - F.softplus(logits).sum(-1)


def _standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)


@torch.inference_mode()
def importance_weighted_bounds(
    model,
    x: torch.Tensor,
    k: int,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
    max_rows: int = IW_MAX_ROWS,
    prior_log_prob=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image (N,): ELBO, KL(q(z|x) || p(z)) and the IWAE bound on log p(x), in nats.

    IWAE (Burda et al. 2015, https://arxiv.org/abs/1509.00519), z_k ~ q(z|x):
        log p(x) ≥ log (1/K) Σ_k p(x|z_k) p(z) / q(z_k|x)
    with K = `k`; the bound tightens as K grows and equals the ELBO in expectation for K = 1.
    The ELBO here is the mean of log p(x|z_k) over the same K samples minus the analytic KL
    (Kingma & Welling 2014, appendix B): an unbiased, low-variance estimate.
    Work is cut into decoder calls of at most `max_rows` rows (images × samples), so K = 5000
    fits in memory; the noise is drawn per call, so the numbers repeat for the same generator
    seed and `max_rows` (keep the default to compare runs). `labels` (N,): a conditional decoder's digits, giving bounds on log p(x|y).
    `prior_log_prob`: log p(z) of another prior than N(0, I) (a fitted `prior.MixturePrior`); the
    KL then has no closed form, so it and the ELBO are averaged over the same K samples.
    """
    log_prior = prior_log_prob or _standard_normal_log_density
    n = len(x)
    batch = max(1, min(n, max_rows // k))  # images per outer step
    chunk = max(1, min(k, max_rows // batch))  # importance samples per decoder call
    elbo, kl, iwae = [], [], []
    for start in range(0, n, batch):
        xb = x[start : start + batch]  # (B, 1, 28, 28)
        yb = None if labels is None else labels[start : start + batch]
        mu, logvar = model.encode_distribution(xb)  # (B, D) each
        std = (0.5 * logvar).exp()
        log_w, recon = [], torch.zeros(len(xb), device=xb.device)
        for done in range(0, k, chunk):
            kc = min(chunk, k - done)
            eps = torch.randn(kc, *mu.shape, generator=generator, device=mu.device)  # (kc, B, D)
            z = mu + std * eps
            z_rows = z.reshape(-1, z.shape[-1])  # (kc·B, D), sample-major
            logits = model.decode_logits(z_rows, labels=None if yb is None else yb.repeat(kc)).view(kc, len(xb), *xb.shape[1:])
            log_px_z = bernoulli_log_likelihood(logits, xb)  # (kc, B)
            # log q(z|x) for z = μ + σ ε: N(ε; 0, I) density with the Jacobian 1/σ
            log_q = _standard_normal_log_density(eps) - 0.5 * logvar.sum(-1)
            log_w.append(log_px_z + log_prior(z) - log_q)
            recon += log_px_z.sum(0)
        log_w = torch.cat(log_w)  # (K, B)
        if prior_log_prob is None:
            kl_b = gaussian_kl(mu, logvar).sum(-1)
        else:  # Monte Carlo: KL = E_q[log q(z|x) − log p(z)] = mean log p(x|z) − mean log w
            kl_b = recon / k - log_w.mean(0)
        elbo.append(recon / k - kl_b)
        kl.append(kl_b)
        iwae.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.cat(elbo), torch.cat(kl), torch.cat(iwae)


# --------------------------------------------------------------------------------------------
# Reference features of the real digits (computed once per process and data)
# --------------------------------------------------------------------------------------------


@dataclass
class RealFeatures:
    """Classifier features of one split, with what FID and precision / recall reuse."""

    features: torch.Tensor  # (N, 128) float32
    mu: np.ndarray  # (128,) float64
    sigma: np.ndarray  # (128, 128) float64
    sq_radii: torch.Tensor | None = None  # (N,) squared k-NN radii, for precision / recall


_REFERENCE: dict[tuple, RealFeatures] = {}


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reference_features(images: np.ndarray, classifier, with_radii: bool) -> RealFeatures:
    """Features of real uint8 digits (N, 28, 28), cached by their SHA-256, the classifier's
    weights and the device: in memory (a lab evaluates several models against the same test
    set) and as safetensors in `~/.cache/genlab/features/` (each `genlab eval` is a new process).
    """
    from .classifier import predict

    device = next(classifier.parameters()).device
    key = (_sha256_bytes(np.ascontiguousarray(images).tobytes()), weights_sha256(classifier), device.type)
    path = cache_dir("features") / f"{key[0][:20]}-{key[1][:20]}-{key[2]}.safetensors"
    ref = _REFERENCE.get(key) or _read_cached(path, len(images), device)
    changed = ref is None
    if ref is None:
        x = torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
        feats, _ = predict(classifier, x)
        ref = RealFeatures(feats, *feature_statistics(feats.double().cpu().numpy()))
    if with_radii and ref.sq_radii is None:
        # distances do not change under a shift; centring only tames float32 round-off
        ref.sq_radii = kth_neighbour_sq_radius(ref.features - ref.features.mean(0), PR_NEIGHBOURS)
        changed = True
    _REFERENCE[key] = ref
    if changed:
        _write_cached(path, ref)
    return ref


def _read_cached(path: Path, n: int, device: torch.device) -> RealFeatures | None:
    """The cached features, or None when absent or not what we expect (then they are recomputed)."""
    from .runs import load_tensors

    if not path.is_file():
        return None
    try:
        t, _ = load_tensors(path)
        ref = RealFeatures(t["features"].to(device), t["mu"].numpy(), t["sigma"].numpy(), t.get("sq_radii"))
    except (GenlabError, KeyError):
        return None
    d = ref.features.shape[-1]
    if ref.features.shape != (n, d) or ref.mu.shape != (d,) or ref.sigma.shape != (d, d):
        return None
    if ref.sq_radii is not None:
        ref.sq_radii = ref.sq_radii.to(device) if ref.sq_radii.shape == (n,) else None
    return ref


def _write_cached(path: Path, ref: RealFeatures) -> None:
    from .runs import save_tensors

    tensors = {"features": ref.features, "mu": torch.from_numpy(ref.mu), "sigma": torch.from_numpy(ref.sigma)}
    if ref.sq_radii is not None:
        tensors["sq_radii"] = ref.sq_radii
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(path, tensors, {"what": "classifier features of real digits"})
    except OSError:
        pass  # a read-only cache only costs time


def _batched(fn, x: torch.Tensor, y: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    """fn(x, labels=y) over x in batches (y None: unconditional), concatenated on the CPU."""
    out = []
    for start in range(0, len(x), batch_size):
        labels = None if y is None else y[start : start + batch_size]
        out.append(fn(x[start : start + batch_size], labels=labels).float().cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# evaluate_run: one function per group of metrics (the table of names, directions and notes is
# metrics.py), each returning its values
# --------------------------------------------------------------------------------------------


@dataclass
class EvalContext:
    """What the groups share: the model, the test split as scored, the seed and budgets, and
    the notes and warnings that depend on the run rather than on a metric."""

    run: object  # a runs.Run
    data: DataBundle
    x_test: torch.Tensor
    y_test: torch.Tensor
    seed: int
    n_samples: int
    iw_samples: int
    iw_digits: int  # the first this many test digits are scored by the likelihood bounds
    train_digits: int  # the first this many training digits are the latent k-NN's and fid_floor's reference
    batch_size: int
    prior: object | None  # a fitted prior.MixturePrior, or None for N(0, I)
    classifier: object | None
    sampler: SamplerOptions = field(default_factory=SamplerOptions)  # an iterative model's steps / solver / guidance / shift
    density_digits: int = DENSITY_DIGITS
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    classifier_info: dict = field(default_factory=dict)

    @property
    def model(self):
        return self.run.model

    @property
    def labels(self) -> torch.Tensor | None:
        """The test digits' labels for a conditional model (it is told them), else None."""
        return self.y_test if self.model.conditional else None

    def context(self) -> dict:
        """The fields the metric notes of metrics.py are formatted with."""
        return {
            "n_test": len(self.x_test), "n_train": self.train_digits, "n_samples": self.n_samples,
            "iw_samples": self.iw_samples, "seed": self.seed, "likelihood_seed": self.seed + 1,
            "density_digits": min(self.density_digits, len(self.x_test)),
        }

    def test_digits(self, group: str) -> int:
        """How many test digits (the first ones) a group of metrics scores."""
        first = {"likelihood": self.iw_digits, "density": self.density_digits}.get(group, len(self.x_test))
        return min(first, len(self.x_test))


def reconstruction_metrics(ctx: EvalContext) -> dict[str, float]:
    x_hat = _batched(ctx.model.reconstruct, ctx.x_test, ctx.labels, ctx.batch_size)
    mse, bce = reconstruction_errors(x_hat, ctx.x_test.cpu())
    if ctx.model.conditional:
        ctx.notes.append("The model is conditional: its reconstructions are decoded with each test digit's true label.")
    return {"recon_mse_per_pixel": float(mse.mean()), "recon_bce_per_image": float(bce.mean())}


def latent_metrics(ctx: EvalContext) -> dict[str, float]:
    x_train, y_train = (t[: ctx.train_digits] for t in ctx.data.tensors("train", ctx.x_test.device))
    if ctx.run.train_config.binarize:
        x_train = fixed_binarization(x_train)
    z_train = _batched(ctx.model.encode, x_train, y_train if ctx.model.conditional else None, ctx.batch_size)
    z_test = _batched(ctx.model.encode, ctx.x_test, ctx.labels, ctx.batch_size)
    return {f"knn{KNN_NEIGHBOURS}_accuracy": knn_accuracy(z_train, y_train.cpu(), z_test, ctx.y_test.cpu(), KNN_NEIGHBOURS)}


def likelihood_metrics(ctx: EvalContext) -> dict[str, float]:
    device = ctx.x_test.device
    prior_log_prob = None if ctx.prior is None else ctx.prior.to(device).log_prob
    n = ctx.iw_digits
    labels = None if ctx.labels is None else ctx.labels[:n]
    elbo, kl, iwae = importance_weighted_bounds(
        ctx.model, ctx.x_test[:n], ctx.iw_samples, make_generator(ctx.seed + 1, device), labels, prior_log_prob=prior_log_prob
    )
    if n < len(ctx.x_test):
        ctx.notes.append(
            f"elbo_nats, kl_nats and iwae_log_px_nats are means over the first {n} of the {len(ctx.x_test)} test digits "
            f"(K={ctx.iw_samples} decoder passes per digit: the bound's cost kept bounded; the mean's standard error is "
            f"{float(iwae.std()) / math.sqrt(n):.2g} nats); genlab eval --iw-digits 0 scores them all."
        )
    ctx.notes.append(
        "elbo_nats and iwae_log_px_nats: lower bounds on log p(x) in nats per test digit (higher is better; "
        "the negative log-likelihood is minus iwae_log_px_nats). Decoder likelihood: Bernoulli on pixels, "
        "log p(x|z) = sum x log p + (1 - x) log(1 - p), p = sigmoid(decoder logits); "
        + (
            "the test digits are binary, so this is the setting of the binarised-MNIST papers (Burda et al. 2015: "
            "86.76 nats for a one-stochastic-layer VAE trained on the 60,000 training digits). "
            if ctx.run.train_config.binarize
            else "grey pixels are soft targets, not a normalised density for grey values, so compare only with other "
            "soft-target numbers, not with binarised-MNIST papers (train with --binarize for those). "
        )
        + "A VAE trained with MSE loss is still evaluated with the Bernoulli likelihood of its decoder means."
    )
    if ctx.model.conditional:
        ctx.notes.append("The decoder is conditional: elbo_nats and iwae_log_px_nats bound log p(x | y) given each test digit's true label y.")
    values = {"elbo_nats": float(elbo.mean()), "kl_nats": float(kl.mean()), "iwae_log_px_nats": float(iwae.mean())}
    if not (math.isfinite(values["elbo_nats"]) and math.isfinite(values["iwae_log_px_nats"])):
        ctx.warnings.append("the ELBO or IWAE bound is not finite: the decoder gives probability 0 to some test pixels")
    return values


def sample_metrics(ctx: EvalContext) -> dict[str, float]:
    from .classifier import default_path, load_classifier, predict, provenance

    model, n, device = ctx.model, ctx.n_samples, ctx.x_test.device
    asked = default_labels(n, device) if model.conditional else None  # ten classes in turn
    s = ctx.sampler
    samples = ctx.run.sample(n, seed=ctx.seed, labels=None if asked is None else asked.cpu(), prior=ctx.prior, **asdict(s))
    ctx.notes.append(f"Samples drawn with torch.Generator(seed = {ctx.seed}) on {device}; same run + seed = same numbers.")
    if model.iterative:
        used = model.resolve_sampler(s)
        ctx.notes.append(
            f"Samples solved from noise with {used.steps} {used.solver} steps, time shift {used.shift:g} "
            f"({model.nfe(s)} function evaluations per image"
            + (f", guidance {used.guidance:g}" if model.conditional else "")
            + f") in the run's precision ({ctx.run.train_config.precision})."
        )
    if n < 10000:
        ctx.warnings.append(f"FID and precision/recall from {n} samples: both are biased for small n; compare runs only at equal n")
    if ctx.data.name != "mnist":
        ctx.warnings.append(f"sample metrics use a classifier of MNIST digits, but the data is {ctx.data.name}: read FID with care")
    if not torch.isfinite(samples).all():
        ctx.warnings.append("the model's samples contain NaN or infinite values: sample metrics skipped")
        return {}
    classifier = ctx.classifier
    if classifier is None:
        classifier = load_classifier(device=device)
        made = provenance()
        ctx.classifier_info = {"weights": default_path().name, "weights_sha256": made.get("weights_sha256"), "test_accuracy": made.get("test_accuracy")}
    feats, pred = predict(classifier, samples)
    real = reference_features(ctx.data.test_images, classifier, with_radii=True)
    train = reference_features(ctx.data.train_images[: ctx.train_digits], classifier, with_radii=False)
    values = {
        "fid": frechet_distance(*feature_statistics(feats.double().cpu().numpy()), real.mu, real.sigma),
        "fid_floor": frechet_distance(train.mu, train.sigma, real.mu, real.sigma),
    }
    values["precision"], values["recall"] = precision_recall(real.features, feats, PR_NEIGHBOURS, real.sq_radii)
    hist = class_histogram(pred.cpu().numpy())
    values["class_entropy"] = normalised_entropy(hist)
    values.update({f"class_frac_{digit}": float(share) for digit, share in enumerate(hist)})
    if asked is not None:
        values["label_agreement"] = float((pred == asked.to(pred.device)).float().mean())
    return values


# --------------------------------------------------------------------------------------------
# FID against the number of function evaluations: what sampling costs an iterative model
# --------------------------------------------------------------------------------------------

NFE_STEPS = (1, 2, 4, 8, 16, 32)  # solver steps of the curve's points
# Samples per point: Euler at 1 + 2 + ... + 32 steps is 63 network evaluations per sample, so the
# lab's flow draws its curve in about 25 s on one thread at 1,000 (2,000 would take ~50 s, over the
# lab's budget). FID is biased upwards at small n: compare points only at the same count.
NFE_SAMPLES = 1000
NFE_SOLVER = "euler"  # one evaluation per step: the points sit at NFE 1, 2, 4, ..., 32


@torch.inference_mode()
def fid_vs_nfe(
    run,
    data: DataBundle,
    *,
    steps=NFE_STEPS,
    n_samples: int = NFE_SAMPLES,
    seed: int = 0,
    solver: str = NFE_SOLVER,
    guidance: float | None = None,
    classifier=None,
    prior=None,
) -> dict:
    """FID of `n_samples` samples against the test digits' features, at each number of solver
    `steps` for an iterative model (the same seed, so the same noises: only the integration
    changes), or once for a one-step model (one network evaluation per sample). JSON-ready:
    {"samples", "seed", "solver", "points": [{"steps", "nfe", "fid"}, ...]} in increasing NFE;
    "fid" is None where the samples were not finite. `guidance`: a conditional flow's (its default
    when None); `prior`: a one-step model's fitted prior."""
    from .classifier import load_classifier, predict

    model = run.model
    if not model.can_sample:
        raise GenlabError(f"model '{run.name}' cannot sample: it has no FID to measure")
    if n_samples <= 1:
        raise GenlabError(f"FID needs at least 2 samples, got {n_samples}")
    classifier = classifier if classifier is not None else load_classifier(device=model.device)
    real = reference_features(data.test_images, classifier, with_radii=False)
    # equal steps: a shifted grid's long last step costs Euler, first order, more than it gains
    settings = [SamplerOptions(steps=s, solver=solver, guidance=guidance, shift=1.0) for s in sorted(set(steps))] if model.iterative else [SamplerOptions()]
    points = []
    for sampler in settings:
        samples = run.sample(n_samples, seed=seed, prior=prior, **asdict(sampler))
        fid = None
        if torch.isfinite(samples).all():
            feats, _ = predict(classifier, samples.to(model.device))
            fid = frechet_distance(*feature_statistics(feats.double().cpu().numpy()), real.mu, real.sigma)
        points.append({"steps": sampler.steps or 1, "nfe": int(model.nfe(sampler)), "fid": fid})
    points.sort(key=lambda p: p["nfe"])
    return {"samples": n_samples, "seed": seed, "solver": solver if model.iterative else None, "points": points}


def dequantize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """8-bit digits x = pixel/255 -> (pixel + u)/256, u ~ U(0, 1): continuous values whose density
    is a likelihood of the 8-bit digits (Theis et al. 2016, https://arxiv.org/abs/1511.01844)."""
    return ((x * 255).round() + torch.rand(x.shape, generator=generator, device=x.device)) / 256


def bits_per_dim(log_px: torch.Tensor) -> torch.Tensor:
    """log p(x) in nats of a density on [0, 1]^784 -> bits per pixel of the same density on
    [0, 256)^784 (the 8-bit scale the papers report): −log₂ p(x)/784 + 8."""
    return -log_px / (784 * math.log(2)) + 8


def density_metrics(ctx: EvalContext) -> dict[str, float]:
    """bits/dim of the model's exact density (a flow's, by the change of variables) on the
    first `density_digits` test digits, dequantized; Hutchinson's estimator, its spread, and a
    check against the exact trace on a few digits."""
    model, n = ctx.model, min(ctx.density_digits, len(ctx.x_test))
    gen = make_generator(ctx.seed + 2, ctx.x_test.device)
    with torch.inference_mode(False):  # the divergence needs autograd
        x = dequantize(ctx.x_test[:n].clone(), gen)
        bpd = torch.cat([bits_per_dim(model.log_density(x[i : i + DENSITY_BATCH], generator=gen, sampler=DENSITY_SAMPLER)) for i in range(0, n, DENSITY_BATCH)])
        check = x[:DENSITY_CHECK_DIGITS]
        exact = bits_per_dim(model.log_density(check, exact=True, sampler=DENSITY_CHECK_SAMPLER))
        probes = check.repeat(DENSITY_CHECK_PROBES, 1, 1, 1)  # probe-major: (P·C, 1, 28, 28)
        hutch = bits_per_dim(model.log_density(probes, generator=gen, sampler=DENSITY_CHECK_SAMPLER)).view(DENSITY_CHECK_PROBES, -1)
    values = {
        "bits_per_dim": float(bpd.mean()),
        "bits_per_dim_sem": float(bpd.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "bits_per_dim_probe_std": float(hutch.std(0).mean()),
        "bits_per_dim_check_error": float((hutch.mean(0) - exact).abs().max()),
    }
    used = model.resolve_sampler(DENSITY_SAMPLER)
    ctx.notes.append(
        f"bits_per_dim: the ODE solved from each digit back to the noise with {used.steps} {used.solver} steps (time shift {used.shift:g}) in float32; "
        f"test digits 0 to {n - 1}, dequantized with torch.Generator(seed + 2 = {ctx.seed + 2}). Check on digits 0 to "
        f"{len(check) - 1} with {DENSITY_CHECK_SAMPLER.steps} {DENSITY_CHECK_SAMPLER.solver} steps: exact trace "
        f"{', '.join(f'{v:.4f}' for v in exact.tolist())} bits/dim vs the mean of {DENSITY_CHECK_PROBES} Hutchinson probes "
        f"{', '.join(f'{v:.4f}' for v in hutch.mean(0).tolist())}."
    )
    if not math.isfinite(values["bits_per_dim"]):
        ctx.warnings.append("bits_per_dim is not finite: the flow's ODE diverged on some test digits")
    return values


# Each group, the capability it needs and its function, in the order eval.json lists them.
GROUPS = (
    ("reconstruction", "can_encode", reconstruction_metrics),
    ("latent", "can_encode", latent_metrics),
    ("likelihood", "has_likelihood", likelihood_metrics),
    ("density", "has_density", density_metrics),
    ("samples", "can_sample", sample_metrics),
)


@torch.inference_mode()
def evaluate_run(
    run,
    data: DataBundle | None = None,
    seed: int = 0,
    n_samples: int = 10000,
    iw_samples: int = 100,
    batch_size: int = 1000,
    classifier=None,
    prior=None,
    iw_digits: int = IW_TEST_DIGITS,
    train_digits: int = TRAIN_REFERENCE_DIGITS,
    steps: int | None = None,
    solver: str | None = None,
    guidance: float | None = None,
    density_digits: int = DENSITY_DIGITS,
    nfe_samples: int | None = None,
    shift: float | None = None,
) -> dict:
    """Every metric that applies to `run` (a `Run` or a run folder), as a JSON-ready dict:
    {"model", "seed", "n_samples", "iw_samples", "prior", "metrics": {name: float}, "notes", "warnings",
    "seconds": {group: float}, "test_digits": {group: int}, "classifier": {...}}, and for a model that samples
    "fid_vs_nfe" (`fid_vs_nfe`, `nfe_samples` per point: by default NFE_SAMPLES or n_samples if fewer; 0 leaves
    it out). Same run, data and seed -> the same numbers. The likelihood bounds score the first `iw_digits` test
    digits, the latent k-NN and fid_floor use the first `train_digits` training digits (0: all, for both).
    `prior`: a fitted `prior.MixturePrior` used for sampling and the likelihood bounds instead of N(0, I).
    `steps`, `solver`, `guidance`, `shift`: an iterative model's sampler (its defaults when None; ignored by
    one-step models); `density_digits`: test digits scored in bits/dim (models with a density)."""
    from .runs import Run, load_run, other_training_data

    if not isinstance(run, Run):
        with torch.inference_mode(False):  # normal weights: the density's divergence takes gradients through them
            run = load_run(run)
    _check_eval_args(n_samples, iw_samples, iw_digits, train_digits, density_digits)
    run.model.eval()
    data = data if data is not None else load_dataset(run.train_config.dataset, run.train_config.data_dir)
    x_test, y_test = data.tensors("test", run.model.device)
    if run.train_config.binarize:  # the run learned binary pixels: score the same fixed binary test digits as its loss curves
        x_test = fixed_binarization(x_test)
    iw_digits = min(iw_digits or len(x_test), len(x_test))
    train_digits = min(train_digits or len(data.train_images), len(data.train_images))
    sampler = run.sampler(steps, solver, guidance, shift)
    ctx = EvalContext(
        run, data, x_test, y_test, seed, n_samples, iw_samples, iw_digits, train_digits, batch_size, prior, classifier, sampler, density_digits
    )
    trained_on = other_training_data(run.info, data)
    if trained_on:
        ctx.warnings.append(
            f"scored on other data ({data.source}) than the run was trained with ({trained_on.get('source', '?')}): "
            "pass the training --data DIR (or GENLAB_DATA) to compare with its loss curves"
        )
    metrics, seconds, test_digits = _measure_groups(ctx)
    ctx.notes += _reference_notes(ctx, scored=seconds.keys())
    nfe_samples = min(NFE_SAMPLES, n_samples) if nfe_samples is None else nfe_samples
    curve = _fid_curve(ctx, nfe_samples, classifier) if run.model.can_sample and nfe_samples else None
    results = {
        "model": run.name,
        "seed": seed,
        "prior": "standard normal" if prior is None else f"gaussian mixture ({prior.components})",
        "n_samples": n_samples if run.model.can_sample else 0,
        "iw_samples": iw_samples if "iwae_log_px_nats" in metrics else 0,
        "sampler": _sampler_record(run.model, sampler),
        "density_digits": min(density_digits, len(x_test)) if "bits_per_dim" in metrics else 0,
        "n_test": int(len(x_test)),
        "metrics": metrics,
        "notes": [_split_note(data, x_test, run.train_config.binarize), *notes_for(metrics, ctx.context()), *ctx.notes],
        "warnings": ctx.warnings,
        "seconds": seconds,
        "test_digits": test_digits,  # the first N test digits each group scored (samples: against all of them)
        "train_digits": train_digits,  # the first N training digits: the latent k-NN's reference and fid_floor's
        "classifier": ctx.classifier_info,
    }
    if curve is not None:
        results["fid_vs_nfe"] = curve
    return results


def _measure_groups(ctx: EvalContext) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Every metric group the model can be scored in (GROUPS): (metrics, seconds per group, the
    test digits each group scored)."""
    metrics: dict[str, float] = {}
    seconds: dict[str, float] = {}
    test_digits: dict[str, int] = {}
    for group, capability, measure in GROUPS:
        if getattr(ctx.model, capability):  # a flag the base class declares
            t = time.perf_counter()
            metrics.update(measure(ctx))
            seconds[group] = round(time.perf_counter() - t, 3)
            test_digits[group] = ctx.test_digits(group)
    return metrics, seconds, test_digits


def _check_eval_args(n_samples: int, iw_samples: int, iw_digits: int, train_digits: int, density_digits: int) -> None:
    """One line for an evaluation size out of range, before any work."""
    check_eval_sizes(n_samples, iw_samples)
    if n_samples <= PR_NEIGHBOURS or iw_samples < 1 or iw_digits < 0 or train_digits < 0:
        raise GenlabError(
            f"n_samples must be at least {PR_NEIGHBOURS + 1}, iw_samples at least 1, iw_digits and train_digits 0 (all) or more, "
            f"got {n_samples}, {iw_samples}, {iw_digits} and {train_digits}"
        )
    if density_digits < 2:
        raise GenlabError(f"density_digits must be at least 2, got {density_digits}")


def _reference_notes(ctx: EvalContext, scored) -> list[str]:
    """The notes on what the scores were measured against: a capped training reference, a fitted prior."""
    notes = []
    n_train = len(ctx.data.train_images)
    if ctx.train_digits < n_train and {"latent", "samples"} & set(scored):
        notes.append(
            f"knn{KNN_NEIGHBOURS}_accuracy and fid_floor use the first {ctx.train_digits} of the {n_train} training digits "
            "(as many as the test digits and samples: a cost that does not grow with the training split)."
        )
    if ctx.prior is not None:
        notes.append(
            f"Prior: the Gaussian mixture of {ctx.prior.components} components fitted to the training codes (prior.safetensors, "
            "genlab fit-prior), for the samples and for log p(z) in the bounds; kl_nats and elbo_nats are then Monte Carlo "
            "estimates over the same K samples."
        )
    return notes


def _fid_curve(ctx: EvalContext, nfe_samples: int, classifier) -> dict:
    """evaluate_run's "fid_vs_nfe" section (`fid_vs_nfe` with the eval's seed, guidance and prior),
    timed, and the note that says how to read it."""
    run, t = ctx.run, time.perf_counter()
    curve = fid_vs_nfe(run, ctx.data, n_samples=nfe_samples, seed=ctx.seed, guidance=ctx.sampler.guidance, classifier=classifier, prior=ctx.prior)
    curve["seconds"] = round(time.perf_counter() - t, 3)  # beside the curve: "seconds" holds the metric groups'
    ctx.notes.append(
        f"fid_vs_nfe: FID of {nfe_samples} samples (seed {ctx.seed}) against the {len(ctx.x_test)} test digits at each number of "
        "network evaluations per sample (NFE); "
        + (f"the same noises integrated with {curve['solver']} at {', '.join(str(p['steps']) for p in curve['points'])} equal steps. "
           if run.model.iterative else "one evaluation per sample for this model. ")
        + ("Fewer samples than fid's, so higher: " if nfe_samples < ctx.n_samples else "")
        + "compare its points only with other models' fid_vs_nfe points at the same sample count."
    )
    return curve


def _sampler_record(model, sampler: SamplerOptions) -> dict:
    """eval.json's "sampler": what an iterative model's samples were solved with, and their cost."""
    if not (model.iterative and model.can_sample):
        return {"nfe": model.nfe(sampler)}
    used = model.resolve_sampler(sampler)
    return {
        "steps": used.steps, "solver": used.solver, "shift": used.shift, "guidance": used.guidance if model.conditional else None,
        "nfe": model.nfe(sampler),
    }


def _split_note(data: DataBundle, x_test: torch.Tensor, binarized: bool) -> str:
    return f"Test split: {len(x_test)} digits ({data.source}). " + (
        "The run was trained with --binarize: reconstruction, latent and likelihood metrics use one fixed stochastic "
        "binarisation of the test digits (and of the training digits for the latent k-NN); FID compares samples with "
        "the grey test digits."
        if binarized
        else "Pixels are uint8/255 in [0, 1], never binarised."
    )


# --------------------------------------------------------------------------------------------
# eval.json
# --------------------------------------------------------------------------------------------


def write_eval(run_dir: str | os.PathLike, results: dict, name: str = EVAL_FILE) -> Path:
    """Write the results, then what shows them: the model card and, for eval.json, TensorBoard's hparams."""
    from .modelcard import write_card
    from .runs import CONFIG_FILE
    from .tracking import log_evaluation

    path = Path(run_dir) / name
    atomic_write_json(path, results)
    if (Path(run_dir) / CONFIG_FILE).is_file():  # a run folder (results may also go elsewhere)
        if name == EVAL_FILE:
            log_evaluation(Path(run_dir), results)
        write_card(run_dir)
    return path


def read_eval(run_dir: str | os.PathLike, name: str = EVAL_FILE) -> dict:
    """The run's eval.json (or `name`; {} when it has not been evaluated); RunFolderError if corrupt."""
    path = Path(run_dir) / name
    if not path.is_file():
        return {}
    try:
        results = parse_json(read_json_text(path), str(path))
        if not isinstance(results, dict) or not isinstance(results.get("metrics"), dict):
            raise RunFolderError(f"{path}: no 'metrics' object")
        check_fields(results, EVAL_FIELDS, str(path))
        fid_curve(results, str(path))
    except RunFolderError as e:
        raise RunFolderError(f"{e}; rerun `genlab eval {run_dir}`") from None
    return results


def fid_curve(results: dict, where: str = EVAL_FILE) -> dict | None:
    """The "fid_vs_nfe" section of an eval.json (`fid_vs_nfe`'s dict), checked: None when absent;
    RunFolderError when it is not a sample count and a list of points of positive steps and NFE
    and a finite FID or null."""
    curve = results.get("fid_vs_nfe")
    if curve is None:
        return None

    def bad(what: str):
        return RunFolderError(f"{where}: 'fid_vs_nfe' {what}; rerun `genlab eval`")

    def number(v, low=0.0):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= low

    if not isinstance(curve, dict) or not number(curve.get("samples"), 2) or not isinstance(curve.get("points"), list):
        raise bad("needs a sample count of at least 2 and a list of points")
    if not 1 <= len(curve["points"]) <= 64:
        raise bad("must hold 1 to 64 points")
    for point in curve["points"]:
        if not isinstance(point, dict) or not number(point.get("steps"), 1) or not number(point.get("nfe"), 1):
            raise bad("points need steps and nfe of at least 1")
        if point.get("fid") is not None and not number(point["fid"]):
            raise bad("point FIDs must be finite numbers >= 0 or null")
    return curve


def format_results(results: dict) -> str:
    """A plain-text table of `results` for the terminal."""
    head = f"{results['model']}: seed {results['seed']}, {results['n_test']} test digits"
    if results.get("n_samples"):
        head += f", {results['n_samples']} samples"
    if results.get("iw_samples"):
        iw_digits = results.get("test_digits", {}).get("likelihood", results["n_test"])
        head += f", K={results['iw_samples']} importance samples" + (f" on the first {iw_digits} digits" if iw_digits < results["n_test"] else "")
    if results.get("prior", "standard normal") != "standard normal":
        head += f", prior: {results['prior']}"
    metrics = results["metrics"]
    width = max((len(k) for k in metrics), default=0)
    lines = [head] + [f"  {k:<{width}}  {v:<12.6g}{direction(k)}".rstrip() for k, v in metrics.items()]
    curve = results.get("fid_vs_nfe")
    if curve and len(curve["points"]) > 1:
        fids = ", ".join(f"{p['nfe']}: {'-' if p['fid'] is None else format(p['fid'], '.4g')}" for p in curve["points"])
        lines.append(f"  FID by NFE ({curve['samples']} samples, {curve['solver']}): {fids}")
    lines += [f"warning: {w}" for w in results.get("warnings", [])]
    return "\n".join(lines)
