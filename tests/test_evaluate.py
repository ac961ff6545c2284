"""Metrics: the pure functions against hand computations, the IWAE bound against an exact
log p(x), and `evaluate_run` / `genlab eval` on tiny trained runs (same seed, same numbers)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from conftest import CAN_ENCODE, CAN_SAMPLE, HAS_DENSITY, HAS_LIKELIHOOD
from genlab import MODELS, load_run
from genlab.cli import main
from genlab.data import cache_dir, fixed_binarization
from genlab.errors import GenlabError, RunFolderError
from genlab.evaluate import (
    EVAL_FILE,
    bernoulli_log_likelihood,
    class_histogram,
    evaluate_run,
    fid_from_features,
    feature_statistics,
    fid_vs_nfe,
    frechet_distance,
    importance_weighted_bounds,
    inside_manifold,
    kth_neighbour_sq_radius,
    knn_accuracy,
    normalised_entropy,
    precision_recall,
    read_eval,
    reconstruction_errors,
    write_eval,
)
from genlab.classifier import load_classifier, predict
from genlab.models.vae import VAE, VAEConfig
from genlab.utils import make_generator

# --------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------


def _random_covariance(rng, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fid_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=16), _random_covariance(rng, 16)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_fid_of_shifted_gaussians_is_the_squared_shift():
    rng = np.random.default_rng(1)
    mu, sigma = rng.normal(size=8), _random_covariance(rng, 8)
    shift = rng.normal(size=8)
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_fid_in_one_dimension_by_hand():
    # N(m1, s1²) vs N(m2, s2²): (m1 − m2)² + (s1 − s2)²
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_fid_agrees_with_scipy_sqrtm_on_general_covariances():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    s1, s2 = _random_covariance(rng, 32), _random_covariance(rng, 32)
    reference = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)


def test_fid_from_features_of_shifted_point_clouds():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(500, 4))
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    assert fid_from_features(a, a + [1.0, 2.0, 0.0, 0.0]) == pytest.approx(5.0, rel=1e-9)
    mu, sigma = feature_statistics(a)
    np.testing.assert_allclose(sigma, np.cov(a, rowvar=False))
    with pytest.raises(ValueError):
        feature_statistics(a[:1])


# --------------------------------------------------------------------------------------------
# Precision and recall
# --------------------------------------------------------------------------------------------


def _on_a_line(xs) -> torch.Tensor:
    return torch.tensor([[float(x), 0.0] for x in xs])


def test_knn_radii_on_a_line():
    # points 0..9: the 3rd nearest other point is 2 away inside, 3 away at both ends
    radii = kth_neighbour_sq_radius(_on_a_line(range(10)), k=3).sqrt()
    assert radii.tolist() == pytest.approx([3, 2, 2, 2, 2, 2, 2, 2, 2, 3])
    with pytest.raises(ValueError):
        kth_neighbour_sq_radius(_on_a_line(range(3)), k=3)


def test_precision_recall_on_constructed_sets():
    real = _on_a_line(range(10))
    # Half the fakes sit on real points, half far away: precision 1/2. The fakes' balls
    # (radius 3 at 0 and 4, 2 at 1..3) reach real points 0..7 (7 is exactly 3 from 4): recall 8/10.
    fake = _on_a_line([0, 1, 2, 3, 4, 100, 101, 102, 103, 104])
    precision, recall = precision_recall(real, fake, k=3)
    assert precision == pytest.approx(0.5)
    assert recall == pytest.approx(0.8)
    assert precision_recall(real, real, k=3) == pytest.approx((1.0, 1.0))


def test_precision_recall_match_brute_force_distances():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(700, 6, generator=g, dtype=torch.float64)
    fake = torch.randn(500, 6, generator=g, dtype=torch.float64) * 1.3 + 0.4

    def brute(a, b, k):
        r_a = torch.cdist(a, a).topk(k + 1, largest=False).values[:, k]
        r_b = torch.cdist(b, b).topk(k + 1, largest=False).values[:, k]
        return float((torch.cdist(b, a) <= r_a).any(1).double().mean()), float((torch.cdist(a, b) <= r_b).any(1).double().mean())

    expected = brute(real, fake, 3)
    assert precision_recall(real, fake, k=3) == pytest.approx(expected, abs=2e-3)  # float32 vs float64 at ties
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1


def test_inside_manifold_uses_each_balls_own_radius():
    points = _on_a_line([0, 10])
    sq_radii = torch.tensor([1.0, 16.0])  # radius 1 around 0, radius 4 around 10
    queries = _on_a_line([0.5, 2, 7, 15])
    assert inside_manifold(queries, points, sq_radii).tolist() == [True, False, True, False]


# --------------------------------------------------------------------------------------------
# Classes and latents
# --------------------------------------------------------------------------------------------


def test_class_histogram_and_normalised_entropy():
    hist = class_histogram([0, 1, 1, 9])
    assert hist.tolist() == pytest.approx([0.25, 0.5, 0, 0, 0, 0, 0, 0, 0, 0.25])
    assert normalised_entropy(np.full(10, 0.1)) == pytest.approx(1.0)
    one_hot = np.eye(10)[3]
    assert normalised_entropy(one_hot) == 0.0 and math.copysign(1, normalised_entropy(one_hot)) == 1  # not -0.0
    assert normalised_entropy([5, 5, 0, 0, 0, 0, 0, 0, 0, 0]) == pytest.approx(math.log(2) / math.log(10))
    assert normalised_entropy(class_histogram(np.arange(1000) % 10)) == pytest.approx(1.0)


def test_knn_accuracy_by_hand_and_against_scikit_learn():
    train_z = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    train_y = torch.tensor([0, 0, 0, 1, 1, 1])
    test_z = torch.tensor([[0.5], [11.5], [5.9], [6.1]])
    # k=3: 5.9 -> neighbours 2 (0), 1 (0), 10 (1) -> class 0; 6.1 -> 2, 10, 11 -> class 1
    assert knn_accuracy(train_z, train_y, test_z, torch.tensor([0, 1, 0, 1]), k=3) == 1.0
    assert knn_accuracy(train_z, train_y, test_z, torch.tensor([0, 1, 1, 0]), k=3) == 0.5

    neighbors = pytest.importorskip("sklearn.neighbors")
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(600, 3)).astype(np.float32), rng.integers(0, 10, 600)
    z[:, 0] += y * 0.5  # some signal, many ties and near-ties
    reference = neighbors.KNeighborsClassifier(5).fit(z[:400], y[:400]).score(z[400:], y[400:])
    assert knn_accuracy(z[:400], y[:400], z[400:], y[400:], k=5) == pytest.approx(reference, abs=0.01)


def test_reconstruction_errors_by_hand():
    x = torch.zeros(2, 1, 28, 28)
    x[1] = 1.0
    x_hat = torch.full_like(x, 0.5)
    mse, bce = reconstruction_errors(x_hat, x)
    assert mse.tolist() == pytest.approx([0.25, 0.25])
    assert bce.tolist() == pytest.approx([784 * math.log(2)] * 2, rel=1e-5)
    perfect_mse, perfect_bce = reconstruction_errors(x, x)  # clamped probabilities: tiny, finite
    assert perfect_mse.tolist() == [0.0, 0.0] and torch.isfinite(perfect_bce).all() and perfect_bce.max() < 1e-3


def test_bernoulli_log_likelihood_uses_grey_pixels_as_soft_targets():
    x = torch.full((1, 1, 28, 28), 0.25)
    logits = torch.zeros(1, 1, 28, 28)  # p = 1/2 everywhere
    assert bernoulli_log_likelihood(logits, x).item() == pytest.approx(-784 * math.log(2), rel=1e-6)
    logits = torch.full((1, 1, 28, 28), math.log(0.25 / 0.75))  # p = x: the soft-target optimum
    best = 784 * (0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert bernoulli_log_likelihood(logits, x).item() == pytest.approx(best, rel=1e-5)


# --------------------------------------------------------------------------------------------
# ELBO and IWAE on a tiny VAE
# --------------------------------------------------------------------------------------------


def _tiny_vae(decoder_gain: float = 1.0) -> VAE:
    """A random 1-D-latent VAE; a decoder gain > 1 makes p(x|z) change fast with z, so the
    posterior is sharp, the Gaussian q(z|x) fits it badly and the ELBO is far below log p(x)."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=1, hidden_dims=(16,))).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(decoder_gain)
    return model


@pytest.fixture(scope="module")
def digits(tiny_bundle):
    return tiny_bundle.tensors("test")[0][:6]


def test_iwae_with_one_sample_is_the_elbo_in_expectation(digits):
    model = _tiny_vae()
    elbo, kl, _ = importance_weighted_bounds(model, digits, 4000, make_generator(0))
    draws = 3000
    _, _, iwae1 = importance_weighted_bounds(model, digits.repeat(draws, 1, 1, 1), 1, make_generator(1))
    iwae1 = iwae1.view(draws, len(digits))
    se = iwae1.std(0) / math.sqrt(draws)
    assert ((iwae1.mean(0) - elbo).abs() < 4 * se + 0.05).all(), (iwae1.mean(0), elbo, se)
    assert (kl >= 0).all()


def test_iwae_tightens_with_k_and_approaches_the_exact_log_likelihood(digits):
    model = _tiny_vae(decoder_gain=4.0)
    # Exact log p(x) for a 1-D latent: integrate p(x|z) p(z) on a fine grid of z.
    z = torch.linspace(-9, 9, 6001).unsqueeze(1)
    with torch.inference_mode():
        log_px_z = bernoulli_log_likelihood(model.decode_logits(z).unsqueeze(1), digits.unsqueeze(0))  # (Z, B)
    log_pz = -0.5 * (z.squeeze(1) ** 2 + math.log(2 * math.pi))
    exact = torch.logsumexp(log_px_z + log_pz.unsqueeze(1), 0) + math.log(float(z[1] - z[0]))

    elbo, _, iwae10 = importance_weighted_bounds(model, digits, 10, make_generator(10))
    elbo, _, iwae1000 = importance_weighted_bounds(model, digits, 1000, make_generator(1000))
    assert (elbo < exact - 50).all()  # a loose bound here, by construction
    assert elbo.mean() < iwae10.mean() < iwae1000.mean()
    # IWAE is a lower bound in expectation; one estimate may overshoot by its noise only.
    assert (iwae1000 < exact + 1.0).all() and ((exact - iwae1000).abs() < 1.5).all(), (exact, iwae1000)


def test_iwae_memory_split_does_not_change_the_bound_much(digits):
    model, x = _tiny_vae(), digits
    big = importance_weighted_bounds(model, x, 1000, make_generator(5))
    small = importance_weighted_bounds(model, x, 1000, make_generator(5), max_rows=400)  # many decoder calls
    again = importance_weighted_bounds(model, x, 1000, make_generator(5), max_rows=400)
    for a, b in zip(small, again):
        assert torch.equal(a, b)  # same seed and split: the same numbers
    assert torch.allclose(big[2], small[2], atol=0.5)  # other noise, same estimate


# --------------------------------------------------------------------------------------------
# evaluate_run, eval.json and `genlab eval`
# --------------------------------------------------------------------------------------------

SMALL = dict(n_samples=300, iw_samples=8, steps=2, density_digits=4, nfe_samples=20)  # a flow: 2 solver steps, bits/dim of 4 digits, a curve of 20 samples


def _expected_metrics(model) -> set[str]:
    keys = set()
    if model.name in CAN_ENCODE:
        keys |= {"recon_mse_per_pixel", "recon_bce_per_image", "knn5_accuracy"}
    if model.name in HAS_LIKELIHOOD:
        keys |= {"elbo_nats", "kl_nats", "iwae_log_px_nats"}
    if model.name in CAN_SAMPLE:
        keys |= {"fid", "fid_floor", "precision", "recall", "class_entropy"} | {f"class_frac_{d}" for d in range(10)}
        if model.conditional:
            keys.add("label_agreement")
    if model.name in HAS_DENSITY:
        keys |= {"bits_per_dim", "bits_per_dim_sem", "bits_per_dim_probe_std", "bits_per_dim_check_error"}
    return keys


@pytest.mark.parametrize("name", sorted(MODELS))
def test_evaluate_run_gives_the_metrics_the_model_supports(name, tiny_runs, tiny_bundle):
    run = load_run(tiny_runs[name], device="cpu")
    results = evaluate_run(run, data=tiny_bundle, seed=0, **SMALL)
    assert results["model"] == name and results["seed"] == 0
    assert set(results["metrics"]) == _expected_metrics(run.model)
    assert all(isinstance(v, float) and math.isfinite(v) for v in results["metrics"].values())
    m = results["metrics"]
    if "fid" in m:
        assert results["n_samples"] == SMALL["n_samples"]
        assert m["fid"] >= 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and 0 <= m["class_entropy"] <= 1
        assert sum(m[f"class_frac_{d}"] for d in range(10)) == pytest.approx(1.0)
    if "iwae_log_px_nats" in m:
        assert results["iw_samples"] == SMALL["iw_samples"]
        assert m["iwae_log_px_nats"] >= m["elbo_nats"] - 1.0
    assert results["notes"] and all(isinstance(n, str) for n in results["notes"])
    json.dumps(results)  # JSON-ready


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_measured_metric_has_its_row_in_the_metrics_table(name, tiny_runs, tiny_bundle):
    """The table in metrics.py is the one place a metric is described: whatever evaluate_run
    measures has a row there (group, direction, note), and its note reaches eval.json."""
    from genlab.metrics import BY_NAME, METRICS

    run = load_run(tiny_runs[name], device="cpu")
    results = evaluate_run(run, data=tiny_bundle, seed=0, **SMALL)
    assert set(results["metrics"]) <= set(BY_NAME)
    assert set(results["seconds"]) == {BY_NAME[k].group for k in results["metrics"]}
    for metric in METRICS:
        if metric.name in results["metrics"] and metric.note:
            assert metric.note.split(":")[0] in " ".join(results["notes"]), metric.name


def test_the_table_drives_the_rankings_the_headline_and_the_eval_printout():
    from genlab.evaluate import format_results
    from genlab.metrics import BY_NAME, HEADLINE, RANKED

    assert [m.name for m in RANKED] == ["recon_mse_per_pixel", "knn5_accuracy", "iwae_log_px_nats", "fid", "class_entropy"]
    assert all(BY_NAME[name].headline for name in HEADLINE) and "fid" in HEADLINE
    printed = format_results({"model": "gan", "seed": 0, "n_test": 10, "metrics": {"fid": 12.5, "recall": 0.5, "fid_floor": 2.0}})
    assert "lower is better" in printed.splitlines()[1] and "higher is better" in printed.splitlines()[2]
    assert printed.splitlines()[3].split() == ["fid_floor", "2"]  # a description, no direction


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_evaluate_run_is_deterministic_for_a_seed(name, tiny_runs, tiny_bundle):
    run = load_run(tiny_runs[name], device="cpu")
    first = evaluate_run(run, data=tiny_bundle, seed=3, **SMALL)
    second = evaluate_run(load_run(tiny_runs[name], device="cpu"), data=tiny_bundle, seed=3, **SMALL)
    assert first["metrics"] == second["metrics"]
    other = evaluate_run(run, data=tiny_bundle, seed=4, **SMALL)
    assert other["metrics"]["fid"] != first["metrics"]["fid"]  # the seed does drive the samples


def test_reference_features_are_cached_on_disk_and_survive_corruption(tiny_runs, tiny_bundle):
    import genlab.evaluate as evaluate

    run = load_run(tiny_runs["gan"], device="cpu")
    evaluate._REFERENCE.clear()
    first = evaluate_run(run, data=tiny_bundle, **SMALL)
    files = sorted((cache_dir("features")).glob("*.safetensors"))
    assert len(files) == 2  # test split (with k-NN radii) and training split
    evaluate._REFERENCE.clear()  # as in a new process: read back from disk
    assert evaluate_run(run, data=tiny_bundle, **SMALL)["metrics"] == first["metrics"]
    for f in files:
        f.write_bytes(b"garbage")
    evaluate._REFERENCE.clear()
    assert evaluate_run(run, data=tiny_bundle, **SMALL)["metrics"] == first["metrics"]  # recomputed
    assert all(f.stat().st_size > 100 for f in files)  # and rewritten


def test_evaluate_run_refuses_bad_counts(tiny_runs, tiny_bundle):
    with pytest.raises(GenlabError):
        evaluate_run(tiny_runs["vae"], data=tiny_bundle, n_samples=1)
    with pytest.raises(GenlabError):
        evaluate_run(tiny_runs["vae"], data=tiny_bundle, iw_samples=0)


def test_eval_json_round_trip_and_corruption(tmp_path):
    results = {"model": "vae", "seed": 0, "metrics": {"fid": 1.5}, "notes": [], "warnings": []}
    path = write_eval(tmp_path, results)
    assert path == tmp_path / EVAL_FILE and read_eval(tmp_path) == results
    assert read_eval(tmp_path / "elsewhere") == {}
    path.write_text("{not json")
    with pytest.raises(RunFolderError, match="not valid JSON"):
        read_eval(tmp_path)
    path.write_text('{"model": "vae"}')
    with pytest.raises(RunFolderError, match="metrics"):
        read_eval(tmp_path)


def test_genlab_eval_json_end_to_end(tiny_runs, tmp_path, capsys):
    run_dir = Path(shutil.copytree(tiny_runs["vae"], tmp_path / "vae"))  # eval.json goes into a copy
    argv = ["eval", str(run_dir), "--json", "--n-samples", "200", "--iw-samples", "4", "--seed", "7", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1  # one JSON object
    results = json.loads(out[0])
    assert results["seed"] == 7 and results["n_samples"] == 200 and results["iw_samples"] == 4
    assert _expected_metrics(load_run(run_dir).model) == set(results["metrics"])
    assert read_eval(run_dir)["metrics"] == results["metrics"]  # saved beside the run

    assert main(argv) == 0  # a second eval: identical numbers
    assert json.loads(capsys.readouterr().out)["metrics"] == results["metrics"]


def test_genlab_eval_table_and_errors(tiny_runs, tmp_path, capsys):
    assert main(["eval", str(tiny_runs["ae"]), "--no-save", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "recon_mse_per_pixel" in out and "knn5_accuracy" in out and "fid" not in out
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["eval", str(tiny_runs["gan"]), "--n-samples", "1", "--no-save"]) == 2
    assert "n_samples" in capsys.readouterr().err


def test_a_binarized_run_is_scored_on_the_fixed_binary_test_digits(tmp_path, tiny_bundle):
    from conftest import tiny_train_config
    from genlab import fit

    cfg = tiny_train_config("vae", binarize=True)
    run = load_run(fit(cfg, None, tmp_path / "vb", data=tiny_bundle, progress=False, log=lambda _: None), device="cpu")
    results = evaluate_run(run, data=tiny_bundle, seed=0, **SMALL)
    x, _ = tiny_bundle.tensors("test")
    binary = fixed_binarization(x)
    with torch.no_grad():
        mse, bce = reconstruction_errors(run.model.reconstruct(binary), binary)
    assert results["metrics"]["recon_bce_per_image"] == pytest.approx(float(bce.mean()), rel=1e-5)
    assert "--binarize" in results["notes"][0] and any("86.76" in note for note in results["notes"])


def test_evaluating_on_other_data_than_training_warns(tiny_runs, tiny_bundle):
    from genlab.data import DataBundle

    run = load_run(tiny_runs["ae"], device="cpu")
    assert not any("other data" in w for w in evaluate_run(run, data=tiny_bundle, seed=0, **SMALL)["warnings"])
    fewer = DataBundle(**{**tiny_bundle.__dict__, "test_images": tiny_bundle.test_images[:50], "test_labels": tiny_bundle.test_labels[:50]})
    warnings = evaluate_run(run, data=fewer, seed=0, **SMALL)["warnings"]
    assert any("other data" in w and "--data" in w for w in warnings)


def test_the_clis_iw_digits_default_is_the_librarys():
    import genlab.cli as genlab_cli
    from genlab.evaluate import IW_TEST_DIGITS

    assert genlab_cli.IW_TEST_DIGITS == IW_TEST_DIGITS


# --------------------------------------------------------------------------------------------
# FID against the number of function evaluations
# --------------------------------------------------------------------------------------------


def test_fid_vs_nfe_of_a_flow_has_a_point_per_step_count_from_the_same_noises(tiny_runs, tiny_bundle):
    run = load_run(tiny_runs["flow"], device="cpu")
    curve = fid_vs_nfe(run, tiny_bundle, steps=(4, 1, 2), n_samples=40, seed=3)
    assert curve["samples"] == 40 and curve["seed"] == 3 and curve["solver"] == "euler"
    assert [p["steps"] for p in curve["points"]] == [1, 2, 4] and [p["nfe"] for p in curve["points"]] == [1, 2, 4]
    # each point is the FID of the run's own samples at that step count, equal steps, same seed
    classifier = load_classifier()
    real = feature_statistics(predict(classifier, tiny_bundle.tensors("test")[0])[0].double().numpy())
    for point in curve["points"]:
        feats = predict(classifier, run.sample(40, seed=3, steps=point["steps"], solver="euler", shift=1.0))[0]
        assert point["fid"] == pytest.approx(frechet_distance(*feature_statistics(feats.double().numpy()), *real), rel=1e-6)
    assert len({p["fid"] for p in curve["points"]}) == 3  # the step count changes the samples
    heun = fid_vs_nfe(run, tiny_bundle, steps=(1, 2), n_samples=40, seed=3, solver="heun")
    assert [p["nfe"] for p in heun["points"]] == [2, 4]  # two evaluations per Heun step


def test_fid_vs_nfe_of_a_one_step_model_is_one_point_at_one_evaluation(tiny_runs, tiny_bundle):
    run = load_run(tiny_runs["gan"], device="cpu")
    curve = fid_vs_nfe(run, tiny_bundle, n_samples=40, seed=1)
    assert curve["solver"] is None and len(curve["points"]) == 1
    assert curve["points"][0]["steps"] == curve["points"][0]["nfe"] == 1 and curve["points"][0]["fid"] > 0
    with pytest.raises(GenlabError, match="cannot sample"):
        fid_vs_nfe(load_run(tiny_runs["ae"], device="cpu"), tiny_bundle)


def test_evaluate_run_records_the_curve_and_its_sample_count_in_eval_json(tiny_runs, tiny_bundle, tmp_path):
    run_dir = tmp_path / "flow"
    shutil.copytree(tiny_runs["flow"], run_dir)
    results = evaluate_run(run_dir, data=tiny_bundle, n_samples=50, iw_samples=1, density_digits=2, nfe_samples=20)
    curve = results["fid_vs_nfe"]
    assert curve["samples"] == 20 and [p["steps"] for p in curve["points"]] == [1, 2, 4, 8, 16, 32]
    assert any("fid_vs_nfe: FID of 20 samples" in note for note in results["notes"])
    write_eval(run_dir, results)
    assert read_eval(run_dir)["fid_vs_nfe"] == json.loads(json.dumps(curve))
    assert "fid_vs_nfe" not in evaluate_run(run_dir, data=tiny_bundle, n_samples=50, iw_samples=1, density_digits=2, nfe_samples=0)
    assert "fid_vs_nfe" not in evaluate_run(tiny_runs["ae"], data=tiny_bundle, n_samples=50, iw_samples=1)


@pytest.mark.parametrize("curve, message", [
    ([1, 2], "must be an object"),
    ({"samples": 1, "points": []}, "sample count"),
    ({"samples": 100, "points": []}, "1 to 64 points"),
    ({"samples": 100, "points": [{"steps": 0, "nfe": 1, "fid": 3.0}]}, "steps and nfe"),
    ({"samples": 100, "points": [{"steps": 1, "nfe": 1, "fid": -1}]}, "finite"),
    ({"samples": 100, "points": [{"steps": 1, "nfe": 1, "fid": "3"}]}, "finite"),
    ({"samples": 100, "points": ["x"]}, "steps and nfe"),
])
def test_a_corrupt_fid_vs_nfe_section_is_refused_on_reading(tmp_path, curve, message):
    write_eval(tmp_path, {"metrics": {}, "fid_vs_nfe": curve})
    with pytest.raises(RunFolderError, match=message):
        read_eval(tmp_path)
