"""The lab's unconditional GAN recipe: the self-conditioned DCGAN (k-means clusters of the
training digits in place of labels, the cluster read from the noise itself), DiffAugment and the
moving average of the weights that samples are drawn with."""

from __future__ import annotations

import pytest
import torch

from conftest import QUIET, assert_same_weights, fit_killed_after, tiny_train_config, weights
from conftest import SMALL_CONV as SMALL
from conftest import image_batch
from genlab import fit, load_run
from genlab.errors import GenlabError
from genlab.runs import CHECKPOINT_FILE, WEIGHTS_FILE, load_tensors, read_config
from genlab.models.scgan import SCGAN, SCGANConfig, kmeans, nearest


def _trained_clusters(k: int = 4, n: int = 40) -> tuple[SCGAN, torch.Tensor]:
    x, _ = image_batch(n)
    model = SCGAN(SCGANConfig(clusters=k, **SMALL))
    model.prepare_training(x)
    return model, x


def test_kmeans_finds_planted_clusters_and_is_seeded():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(30, 2, generator=torch.Generator().manual_seed(i)) for i, c in enumerate(centres)])
    found = kmeans(points, 3)
    assert torch.equal(kmeans(points, 3), found)  # same seed, same clusters: a resumed run keeps them
    assert torch.cdist(found, centres).min(1).values.max() < 0.2  # each planted centre found
    assert torch.equal(nearest(points, centres), torch.arange(3).repeat_interleave(30))
    with pytest.raises(GenlabError, match="at least 5 training images"):
        kmeans(points[:4], 5)


def test_prepare_training_keeps_centres_and_shares_in_the_weights():
    model, x = _trained_clusters()
    counts = torch.bincount(nearest(x.flatten(1), model.centres), minlength=4).float()
    assert torch.allclose(model.cum_share, counts.cumsum(0) / counts.sum())
    state = model.state_dict()
    assert {"centres", "cum_share"} <= set(state)  # saved with the weights: sampling needs no data
    again = SCGAN(SCGANConfig(clusters=4, **SMALL))
    again.load_state_dict(state)
    assert torch.equal(again.centres, model.centres)


def test_noise_alone_draws_each_cluster_as_often_as_the_data_has_it():
    model = SCGAN(SCGANConfig(clusters=3, **SMALL))
    model.cum_share.copy_(torch.tensor([0.2, 0.5, 1.0]))
    z = torch.randn(20000, model.latent_dim, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(model.cluster_of_noise(z), minlength=3).float() / len(z)
    assert torch.allclose(share, torch.tensor([0.2, 0.3, 0.5]), atol=0.015)
    asked = torch.tensor([0, 1, 2, 2, 1, 0] * 50)
    assert torch.equal(model.cluster_of_noise(model.noise_in_clusters(asked)), asked)  # training's fakes: the real batch's clusters


def test_generator_reads_the_cluster_and_the_game_never_reads_labels():
    model, x = _trained_clusters()
    assert model.generator[0].in_features == model.latent_dim + 4  # z and the cluster's one-hot
    assert not model.conditional and model.can_sample
    model.eval()  # dropout off, so the two losses below see the same D
    for phase in model.phases:
        torch.manual_seed(0)
        digits = model.loss(x, torch.zeros(len(x), dtype=torch.long), phase, {}).loss
        torch.manual_seed(0)
        nonsense = model.loss(x, torch.full((len(x),), 7, dtype=torch.long), phase, {}).loss
        assert torch.equal(digits, nonsense)
    assert model.sample(6, generator=torch.Generator().manual_seed(1)).shape == (6, 1, 28, 28)


def test_fakes_are_judged_by_the_clusters_they_were_drawn_for():
    model, x = _trained_clusters()
    cache: dict = {}
    model.loss(x, None, "discriminator", cache)
    assert torch.equal(cache["clusters"], nearest(x.flatten(1), model.centres))
    assert torch.equal(model.cluster_of_noise(cache["z"]), cache["clusters"])


def test_clusters_are_checked():
    with pytest.raises(GenlabError, match="clusters"):
        SCGANConfig(clusters=1).validate()


def test_augmentation_reaches_real_and_fake_alike_and_g_learns_through_it():
    model, x = _trained_clusters()
    seen: list[torch.Tensor] = []
    real_augment = model.augment
    model.augment = lambda images: seen.append(images) or real_augment(images)
    cache: dict = {}
    model.loss(x, None, "discriminator", cache)
    assert len(seen) == 2 and torch.equal(seen[0], x)  # the real batch, then the fakes
    assert seen[1].shape == x.shape and not seen[1].requires_grad  # detached for D's step
    g_loss = model.loss(x, None, "generator", cache).loss
    assert len(seen) == 3 and seen[2].requires_grad
    g_loss.backward()
    assert model.generator[0].weight.grad.abs().sum() > 0  # through the (differentiable) shift


def test_a_trained_run_samples_with_its_saved_average_and_resumes_bitwise(tmp_path, tiny_bundle):
    """The recipe's moving average is the loop's (`ema` in SCGAN's defaults, genlab.ema)."""
    config = tiny_train_config("scgan", epochs=2, checkpoint_every=3)
    model_config = SCGANConfig(clusters=4, **SMALL)
    whole = fit(config, model_config, tmp_path / "whole", data=tiny_bundle, **QUIET)
    assert read_config(whole)[0].ema == 0.99  # the recipe's default
    fit_killed_after(5, config, model_config, tmp_path / "stopped", data=tiny_bundle, **QUIET)
    assert not (tmp_path / "stopped" / WEIGHTS_FILE).exists()  # stopped mid-run, after the step-3 checkpoint
    resumed = fit(config, None, tmp_path / "stopped", resume=True, data=tiny_bundle, **QUIET)
    assert_same_weights(resumed, whole)
    live = {k[len("model.") :]: v for k, v in load_tensors(whole / CHECKPOINT_FILE)[0].items() if k.startswith("model.")}
    assert not torch.equal(weights(whole)["generator.0.weight"], live["generator.0.weight"])  # the average, not G itself
    run = load_run(whole)
    z = torch.randn(5, run.model.latent_dim, generator=torch.Generator().manual_seed(3))
    one_hot = torch.nn.functional.one_hot(run.model.cluster_of_noise(z), 4).float()
    average_g = SCGAN(SCGANConfig(clusters=4, **SMALL)).generator.eval()
    average_g.load_state_dict({k[len("generator.") :]: v for k, v in weights(whole).items() if k.startswith("generator.")})
    with torch.no_grad():
        expected = torch.sigmoid(average_g(torch.cat([z, one_hot], 1)))
    assert torch.equal(run.decode(z), expected)
