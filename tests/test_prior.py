"""The fitted Gaussian-mixture prior (genlab.prior, `genlab fit-prior`, `--prior gmm`)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from conftest import QUIET, TINY_CLI_OPTIONS, assert_one_line_error, run_cli, tiny_train_config
from genlab import fit, load_run
from genlab.data import fixed_binarization
from genlab import cli as genlab_cli
from genlab.evaluate import bernoulli_log_likelihood, importance_weighted_bounds
from genlab.prior import DEFAULT_COMPONENTS, PRIOR_FILE, MixturePrior, fit_mixture_prior, fit_run_prior, load_prior, posterior_codes, save_prior
from genlab.utils import make_generator

from test_evaluate import _tiny_vae  # a 1-D-latent VAE whose exact log p(x) a grid gives


def _two_clusters(n: int = 4000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, 3, generator=g) * 0.5 + torch.tensor([2.0, 0.0, -1.0])
    b = torch.randn(n, 3, generator=g) @ torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 0.3]]) - 2.0
    return torch.cat([a, b])


def test_mixture_density_is_sklearns_and_its_samples_follow_it():
    codes = _two_clusters()
    prior = fit_mixture_prior(codes, components=2, seed=0)
    reference = GaussianMixture(2, covariance_type="full", random_state=0, max_iter=200).fit(codes.double().numpy())
    points = torch.randn(50, 3) * 2
    np.testing.assert_allclose(prior.log_prob(points).numpy(), reference.score_samples(points.double().numpy()), rtol=1e-4, atol=1e-4)

    z = prior.sample(40000, generator=make_generator(1))
    assert torch.equal(z, prior.sample(40000, generator=make_generator(1)))  # seeded
    assert not torch.equal(z, prior.sample(40000, generator=make_generator(2)))
    # The draws have the mixture's mean and covariance: Σ w_k m_k and Σ w_k (C_k + m_k m_kᵀ) − m mᵀ.
    w, m, c = (torch.as_tensor(a, dtype=torch.float32) for a in (reference.weights_, reference.means_, reference.covariances_))
    mean = (w[:, None] * m).sum(0)
    second = (w[:, None, None] * (c + m[:, :, None] * m[:, None, :])).sum(0)
    torch.testing.assert_close(z.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), second - mean[:, None] * mean[None, :], atol=0.05, rtol=0)


def test_iwae_under_a_mixture_prior_approaches_the_exact_log_likelihood(tiny_bundle):
    digits = tiny_bundle.tensors("test")[0][:6]
    model = _tiny_vae(decoder_gain=4.0)
    prior = MixturePrior(torch.tensor([0.3, 0.7]), torch.tensor([[-1.5], [1.0]]), torch.tensor([[[0.5]], [[0.8]]]))
    # Exact log p(x) for a 1-D latent under this prior: integrate p(x|z) p(z) on a fine grid.
    z = torch.linspace(-9, 9, 6001).unsqueeze(1)
    with torch.inference_mode():
        log_px_z = bernoulli_log_likelihood(model.decode_logits(z).unsqueeze(1), digits.unsqueeze(0))  # (Z, B)
    exact = torch.logsumexp(log_px_z + prior.log_prob(z).unsqueeze(1), 0) + math.log(float(z[1] - z[0]))

    elbo, kl, iwae = importance_weighted_bounds(model, digits, 1000, make_generator(3), prior_log_prob=prior.log_prob)
    assert (elbo < iwae).all() and (kl > 0).all()
    assert (iwae < exact + 1.0).all() and ((exact - iwae).abs() < 1.5).all(), (exact, iwae)
    _, _, standard = importance_weighted_bounds(model, digits, 1000, make_generator(3))
    assert not torch.allclose(standard, iwae, atol=0.5)  # the prior is really used


def test_the_standard_normal_as_a_mixture_gives_the_default_bounds(tiny_bundle):
    digits = tiny_bundle.tensors("test")[0][:6]
    model = _tiny_vae(decoder_gain=1.0)
    standard = MixturePrior(torch.ones(1), torch.zeros(1, 1), torch.ones(1, 1, 1))
    elbo, kl, iwae = importance_weighted_bounds(model, digits, 2000, make_generator(4))
    elbo_m, kl_m, iwae_m = importance_weighted_bounds(model, digits, 2000, make_generator(4), prior_log_prob=standard.log_prob)
    torch.testing.assert_close(iwae_m, iwae)  # the same samples, the same density
    torch.testing.assert_close(kl_m, kl, atol=0.1, rtol=0.05)  # Monte Carlo vs closed form
    torch.testing.assert_close(elbo_m, elbo, atol=0.1, rtol=0.01)


def test_saved_prior_round_trips_and_broken_files_are_refused(tmp_path):
    prior = fit_mixture_prior(_two_clusters(500), components=3)
    save_prior(tmp_path, prior, {"components": 3})
    again = load_prior(tmp_path, latent_dim=3)
    for a, b in ((prior.weights, again.weights), (prior.means, again.means), (prior.scale_tril, again.scale_tril)):
        torch.testing.assert_close(a, b)
    with pytest.raises(Exception, match="do not fit a 2-D latent"):
        load_prior(tmp_path, latent_dim=2)
    bad = MixturePrior(prior.weights, prior.means, -prior.scale_tril)  # negative scales: not a density
    save_prior(tmp_path, bad, {})
    with pytest.raises(Exception, match="not a valid mixture"):
        load_prior(tmp_path, latent_dim=3)
    (tmp_path / PRIOR_FILE).write_bytes(b"\x80\x04not safetensors")  # e.g. a pickle
    with pytest.raises(Exception, match="not a readable safetensors file"):
        load_prior(tmp_path, latent_dim=3)
    with pytest.raises(Exception, match="at least 1"):
        fit_mixture_prior(_two_clusters(10), components=0)


def test_cli_default_matches_the_library():
    assert genlab_cli.DEFAULT_COMPONENTS == DEFAULT_COMPONENTS


def test_fit_prior_then_sample_and_eval_with_it(tiny_runs, session_data_dir, tmp_path):
    run_dir = tmp_path / "vae"
    shutil.copytree(tiny_runs["vae"], run_dir)  # the session's run stays as other tests expect it
    code, _, err = run_cli("sample", run_dir, "--prior", "gmm", "-n", 8, "-o", tmp_path / "x.npy")
    assert_one_line_error((code, "", err), "genlab fit-prior")
    code, _, err = run_cli("fit-prior", run_dir, "--components", 100000)
    assert_one_line_error((code, "", err), "more than the")
    assert not (run_dir / PRIOR_FILE).exists()

    code, out, err = run_cli("fit-prior", run_dir, "--components", 4)
    assert code == 0, err
    assert (run_dir / PRIOR_FILE).is_file() and "4-component" in out
    paths = {name: tmp_path / f"{name}.npy" for name in ("gmm", "gmm_again", "normal")}
    for name, path in paths.items():
        prior = "normal" if name == "normal" else "gmm"
        assert run_cli("sample", run_dir, "--prior", prior, "-n", 8, "-o", path, "--device", "cpu")[0] == 0
    gmm = np.load(paths["gmm"])
    assert gmm.shape == (8, 28, 28) and gmm.min() >= 0 and gmm.max() <= 1
    np.testing.assert_array_equal(gmm, np.load(paths["gmm_again"]))
    assert not np.array_equal(gmm, np.load(paths["normal"]))

    before = (run_dir / "eval.json").read_bytes() if (run_dir / "eval.json").exists() else None
    code, out, err = run_cli("eval", run_dir, "--prior", "gmm", "--json", "--n-samples", 50, "--iw-samples", 5, "--device", "cpu")
    assert code == 0, err
    results = json.loads(out)
    assert results["prior"] == "gaussian mixture (4)" and math.isfinite(results["metrics"]["iwae_log_px_nats"])
    assert json.loads((run_dir / "eval-gmm.json").read_text())["metrics"] == results["metrics"]
    assert ((run_dir / "eval.json").read_bytes() if (run_dir / "eval.json").exists() else None) == before

    # Trained further, the run has other weights: the old mixture is refused, not silently used.
    assert run_cli("resume", run_dir, "--epochs", 2, "--quiet")[0] == 0
    code, _, err = run_cli("sample", run_dir, "--prior", "gmm", "-o", tmp_path / "late.npy")
    assert_one_line_error((code, "", err), "fitted to other weights", "genlab fit-prior")
    assert run_cli("fit-prior", run_dir, "--components", 4)[0] == 0
    assert run_cli("sample", run_dir, "--prior", "gmm", "-o", tmp_path / "late.npy")[0] == 0
    # --overwrite starts a new run: the old run's prior and its metrics go with it.
    code, _, err = run_cli("train", "vae", *TINY_CLI_OPTIONS, "--data", session_data_dir, "--out", run_dir, "--overwrite", "--no-figures")
    assert code == 0, err
    assert not (run_dir / PRIOR_FILE).exists() and not (run_dir / "eval-gmm.json").exists()


def test_a_binarized_run_is_fitted_on_the_binarized_digits_it_learned_from(tmp_path, tiny_bundle):
    run = load_run(fit(tiny_train_config("vae", binarize=True), None, tmp_path / "vae", data=tiny_bundle, **QUIET))
    x_train, _ = tiny_bundle.tensors("train")
    prior, _, _ = fit_run_prior(run, x_train, components=2)
    expected = fit_mixture_prior(posterior_codes(run.model, fixed_binarization(x_train)), 2)
    not_binarized = fit_mixture_prior(posterior_codes(run.model, x_train), 2)
    assert torch.equal(prior.means, expected.means) and not torch.equal(prior.means, not_binarized.means)


def test_fit_prior_refuses_other_data_than_the_run_trained_on(tiny_runs, tmp_path):
    run_dir = tmp_path / "vae"
    shutil.copytree(tiny_runs["vae"], run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["data"]["sha256"] = "0" * 64  # as if trained on other digits than its data folder holds now
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli("fit-prior", run_dir, "--components", 4)
    assert_one_line_error((code, "", err), "trained on other data", "same data")
    assert not (run_dir / PRIOR_FILE).exists()


@pytest.mark.parametrize("name", ["gan", "ae", "cvae"])
def test_fit_prior_needs_a_vae(tiny_runs, name, tmp_path):
    code, _, err = run_cli("fit-prior", tiny_runs[name])
    assert_one_line_error((code, "", err), "needs a vae run")
    assert not (tiny_runs[name] / PRIOR_FILE).exists()
    code, _, err = run_cli("sample", tiny_runs["cvae"], "--prior", "gmm", "-o", tmp_path / "x.npy")
    assert_one_line_error((code, "", err), "needs a vae run")
