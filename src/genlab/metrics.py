"""The one table of genlab's metrics: each metric's name, group, direction and the note that
explains it. `genlab eval` (evaluate.py) writes the notes of the metrics it measured, the
report ranks models on the `ranked` ones and the lab prints the `headline` ones, all from here.

Adding a metric: compute it in its group's function in evaluate.py and add its row below.
A note is a format string over the evaluation's context (`evaluate.EvalContext` fields:
n_test, n_train, n_samples, iw_samples, seed, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

PR_NEIGHBOURS = 3  # k of the k-NN balls of precision / recall (Kynkäänniemi et al. use 3)
KNN_NEIGHBOURS = 5  # k of the latent k-NN classifier
PROB_EPS = 1e-7  # reconstructed probabilities are clamped to [eps, 1 − eps] for the BCE


@dataclass(frozen=True)
class Metric:
    name: str
    group: str  # "reconstruction", "latent", "likelihood", "density" or "samples": the evaluate.py function that computes it
    higher_is_better: bool | None  # None: a description (a share, a floor), not a score to rank
    note: str  # what it is, for eval.json's notes; "" when another row's note covers it
    label: str = ""  # the report's ranking line; "" for a metric the report does not rank
    headline: bool = False  # printed by `genlab lab` after each model

    @property
    def ranked(self) -> bool:
        return bool(self.label) and self.higher_is_better is not None


METRICS: tuple[Metric, ...] = (
    Metric(
        "recon_mse_per_pixel", "reconstruction", False,
        "recon_mse_per_pixel: squared error of reconstruct(x) averaged over pixels and test digits; "
        "recon_bce_per_image: Bernoulli cross-entropy summed over the 784 pixels (grey pixels as soft targets, "
        f"probabilities clamped to [{PROB_EPS:g}, 1 - {PROB_EPS:g}]), averaged over test digits, in nats; "
        "its minimum is the entropy of the grey pixels themselves, not 0.",
        label="reconstruction (MSE per pixel, lower is better)", headline=True,
    ),
    Metric("recon_bce_per_image", "reconstruction", False, ""),
    Metric(
        f"knn{KNN_NEIGHBOURS}_accuracy", "latent", True,
        f"knn{KNN_NEIGHBOURS}_accuracy: a {KNN_NEIGHBOURS}-nearest-neighbour vote (Euclidean) fit on the latents of the "
        "{n_train} training digits, scored on the latents of the test digits (a VAE's latent is its posterior mean).",
        label=f"latent codes that separate digits ({KNN_NEIGHBOURS}-NN accuracy, higher is better)", headline=True,
    ),
    Metric(
        "elbo_nats", "likelihood", True,
        "iwae_log_px_nats: importance-weighted bound (Burda et al. 2015) with K={iw_samples} samples of q(z|x) per "
        "test digit; elbo_nats: mean log p(x|z) over the same samples minus the analytic KL (kl_nats). "
        "Noise from torch.Generator(seed + 1 = {likelihood_seed}).",
    ),
    Metric("kl_nats", "likelihood", None, ""),
    Metric(
        "iwae_log_px_nats", "likelihood", True, "",
        label="test log-likelihood (IWAE bound, nats per image, higher is better)", headline=True,
    ),
    Metric(
        "bits_per_dim", "density", False,
        "bits_per_dim: the model's exact negative log-likelihood of the first {density_digits} test digits in bits per pixel, "
        "on uniformly dequantized 8-bit values ((pixel + u)/256, the flow papers' setting; FFJORD: 0.99 on the full MNIST, "
        "trained on 60,000 digits), by the instantaneous change of variables with Hutchinson's trace estimator (one Rademacher "
        "probe per digit). bits_per_dim_sem: the standard error of that mean over the digits (digit-to-digit spread and probe "
        "noise together); bits_per_dim_probe_std: the spread of one digit's estimate over probes; bits_per_dim_check_error: "
        "the largest gap between the mean over probes and the exact trace on the check digits. NOT comparable with a VAE's "
        "iwae_log_px_nats: that is a bound on a Bernoulli likelihood of pixels read as probabilities of black or white, a "
        "probability of another object than a density over 256 grey levels per pixel.",
        headline=True,  # no ranking label: only flows have it, and it ranks nothing against the VAE's nats
    ),
    Metric("bits_per_dim_sem", "density", None, ""),
    Metric("bits_per_dim_probe_std", "density", None, ""),
    Metric("bits_per_dim_check_error", "density", None, ""),
    Metric(
        "fid", "samples", False,
        "fid: Fréchet distance (Heusel et al. 2017) between {n_samples} samples and the {n_test} test digits "
        "on the 128-d penultimate features of genlab's MNIST classifier (not Inception: not comparable with FIDs in papers). "
        "fid_floor: the same for the {n_train} training digits against the test digits, what a perfect model "
        "would approach (FID grows as the sample count falls).",
        label="sample quality (FID on the classifier's features, lower is better)", headline=True,
    ),
    Metric("fid_floor", "samples", None, ""),
    Metric(
        "precision", "samples", True,
        f"precision / recall: k-NN manifolds with k={PR_NEIGHBOURS} (Kynkäänniemi et al. 2019) in the same features; "
        "precision = share of samples inside the test digits' manifold, recall = share of test digits inside the samples' manifold.",
        headline=True,
    ),
    Metric("recall", "samples", True, "", headline=True),
    Metric(
        "class_entropy", "samples", True,
        "class_frac_d: share of samples the classifier labels as digit d; class_entropy: entropy of that histogram "
        "divided by log 10 (1.0 = all ten digits equally often, 0 = a single digit).",
        label="digit coverage of samples (normalised class entropy, 1 = all ten equally)", headline=True,
    ),
    *(Metric(f"class_frac_{digit}", "samples", None, "") for digit in range(10)),
    Metric(
        "label_agreement", "samples", True,
        "label_agreement: share of samples the classifier assigns the digit they were generated for (ten classes in turn).",
    ),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
HEADLINE: tuple[str, ...] = tuple(m.name for m in METRICS if m.headline)
RANKED: tuple[Metric, ...] = tuple(m for m in METRICS if m.ranked)


def notes_for(names, context: dict) -> list[str]:
    """The notes of the measured metrics `names`, in table order, filled from `context`."""
    measured = set(names)
    return [m.note.format(**context) for m in METRICS if m.name in measured and m.note]


def direction(name: str) -> str:
    """'higher is better', 'lower is better' or '' for a metric of the table (or an unknown one)."""
    metric = BY_NAME.get(name)
    if metric is None or metric.higher_is_better is None:
        return ""
    return "higher is better" if metric.higher_is_better else "lower is better"
