"""Features the loop gives every model: a moving average of the weights (`--ema`) and a
learning-rate schedule (`--lr-schedule`, `--warmup-steps`)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from conftest import (
    QUIET,
    SMALL_CONV,
    assert_one_line_error,
    assert_same_tensors,
    assert_same_weights,
    fit_killed_after,
    run_cli,
    tiny_train_config,
    weights,
    without_timing,
)
from genlab import MODELS, fit, load_run
from genlab.config import TrainConfig
from genlab.ema import WeightAverage
from genlab.errors import GenlabError
from genlab.models.dcgan import DCGAN, DCGANConfig
from genlab.runs import CHECKPOINT_FILE, load_tensors, read_config, read_metrics
from genlab.train import evaluate_split, learning_rate, resolve_configs, total_steps

SMALL = {"vae": dict(hidden_dims=(48,)), "dcgan": SMALL_CONV}  # batch norm in DCGAN's G: buffers too


def small_model(name: str):
    return MODELS[name].config_class(**SMALL[name])


def checkpoint(run_dir, prefix: str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under `prefix` ("model." the live weights, "ema." the average), without it."""
    return {k[len(prefix) :]: v for k, v in load_tensors(run_dir / CHECKPOINT_FILE)[0].items() if k.startswith(prefix)}


# --------------------------------------------------------------------------------------------
# The moving average
# --------------------------------------------------------------------------------------------


def test_the_average_moves_each_weight_by_the_decay_and_copies_the_buffers():
    live = DCGAN(DCGANConfig(**SMALL_CONV))
    average = WeightAverage(live, decay=0.9)
    assert not any(p.requires_grad for p in average.model.parameters())  # never optimised
    before = [p.detach().clone() for p in average.model.parameters()]
    with torch.no_grad():
        for t in (*live.parameters(), *live.buffers()):  # batch norm's statistics too
            t.add_(1)
    average.update(live)
    for avg, old, new in zip(average.model.parameters(), before, live.parameters()):
        assert torch.allclose(avg, 0.9 * old + 0.1 * new)  # by hand: old + (1 − decay)(live − old)
    assert_same_tensors(dict(average.model.named_buffers()), dict(live.named_buffers()), "buffers")
    assert any(True for _ in live.buffers())


def test_training_steps_the_live_weights_and_everything_else_uses_the_average(tmp_path, tiny_bundle):
    config = tiny_train_config("dcgan", epochs=2)
    plain = fit(config, small_model("dcgan"), tmp_path / "plain", data=tiny_bundle, **QUIET)
    averaged = fit(dataclasses.replace(config, ema=0.5), small_model("dcgan"), tmp_path / "ema", data=tiny_bundle, **QUIET)
    # The average never feeds back into training: the live weights are the run's without it.
    assert_same_tensors(checkpoint(averaged, "model."), checkpoint(plain, "model."), "live weights")
    # model.safetensors holds the average, which differs from the live weights.
    assert_same_tensors(weights(averaged), checkpoint(averaged, "ema."), "saved weights")
    assert not torch.equal(weights(averaged)["generator.0.weight"], checkpoint(averaged, "model.")["generator.0.weight"])
    # and so does a run loaded from its checkpoint (an unfinished run)
    assert_same_tensors(dict(load_run(averaged, weights="checkpoint").model.state_dict()), weights(averaged), "checkpoint's average")
    # The epoch's test losses and health figures are the average's.
    run = load_run(averaged, device="cpu")
    x_test, y_test = tiny_bundle.tensors("test", torch.device("cpu"))
    row = read_metrics(averaged)[-1]
    assert row["test"] == pytest.approx(evaluate_split(run.model, x_test, y_test, config.eval_batch_size, config.seed), rel=1e-6)
    assert row["test"] != pytest.approx(read_metrics(plain)[-1]["test"], rel=1e-6)
    assert read_config(averaged)[0].ema == 0.5


@pytest.mark.parametrize("name", ["vae", "dcgan"])
def test_a_run_with_average_and_cosine_schedule_resumes_bitwise(name, tmp_path, tiny_bundle):
    config = tiny_train_config(name, epochs=3, ema=0.9, lr_schedule="cosine", warmup_steps=4, checkpoint_every=3)
    whole = fit(config, small_model(name), tmp_path / "whole", data=tiny_bundle, **QUIET)
    fit_killed_after(11, config, small_model(name), tmp_path / "stopped", data=tiny_bundle, **QUIET)  # after the step-9 checkpoint
    resumed = fit(config, None, tmp_path / "stopped", resume=True, data=tiny_bundle, **QUIET)
    assert_same_weights(resumed, whole)
    assert_same_tensors(checkpoint(resumed, ""), checkpoint(whole, ""), "checkpoint tensors")  # live, average, optimizers, RNG
    assert without_timing(read_metrics(resumed)) == without_timing(read_metrics(whole))


# --------------------------------------------------------------------------------------------
# The learning-rate schedule
# --------------------------------------------------------------------------------------------


def test_the_learning_rate_follows_warmup_then_the_cosine():
    cfg = TrainConfig(lr=1e-3, lr_schedule="cosine", warmup_steps=10)
    assert learning_rate(cfg, 5, 110) == pytest.approx(5e-4)  # halfway up the warmup
    assert learning_rate(cfg, 10, 110) == pytest.approx(1e-3)  # warmed up: the cosine starts at lr
    assert learning_rate(cfg, 60, 110) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # halfway down
    assert learning_rate(cfg, 110, 110) == pytest.approx(1e-4)  # the end: a tenth of lr
    constant = dataclasses.replace(cfg, lr_schedule="constant")
    assert [learning_rate(constant, s, 110) for s in (5, 10, 110)] == pytest.approx([5e-4, 1e-3, 1e-3])


def test_the_schedule_reaches_the_optimizers_and_the_metrics_rows(tmp_path, tiny_bundle):
    config = tiny_train_config("vae", epochs=2, lr=1e-3, lr_schedule="cosine")
    run_dir = fit(config, small_model("vae"), tmp_path / "cosine", data=tiny_bundle, **QUIET)
    resolved = resolve_configs(config)[0]
    total = total_steps(resolved, len(tiny_bundle.tensors("train", torch.device("cpu"))[0]))
    assert [row["lr"] for row in read_metrics(run_dir)] == pytest.approx([learning_rate(resolved, total // 2, total), 1e-4])
    # The optimizers stepped with it: a checkpoint at step 5 holds step 5's learning rate.
    warm_config = dataclasses.replace(config, warmup_steps=10, checkpoint_every=5)
    warm = fit_killed_after(5, warm_config, small_model("vae"), tmp_path / "warm", data=tiny_bundle, **QUIET)
    assert load_tensors(warm / CHECKPOINT_FILE)[1]["optimizers"]["model"][0]["lr"] == pytest.approx(1e-3 * 5 / 10)
    # A warmup far longer than the run keeps the learning rate near 0: the weights barely move.
    frozen = fit(dataclasses.replace(config, warmup_steps=10**9), small_model("vae"), tmp_path / "frozen", data=tiny_bundle, **QUIET)
    torch.manual_seed(config.seed)
    initial = MODELS["vae"](MODELS["vae"].resolved_config(small_model("vae"))).state_dict()
    assert all(torch.allclose(weights(frozen)[k], v, atol=1e-6) for k, v in initial.items())
    assert not all(torch.allclose(weights(run_dir)[k], v, atol=1e-6) for k, v in initial.items())


def test_models_state_their_own_loop_defaults_and_the_rest_keep_the_plain_loop():
    scgan = resolve_configs(TrainConfig(model="scgan"))[0]
    vae = resolve_configs(TrainConfig(model="vae"))[0]
    assert (scgan.ema, scgan.lr_schedule, scgan.warmup_steps) == (0.99, "constant", 0)
    assert (vae.ema, vae.lr_schedule, vae.warmup_steps) == (0.0, "constant", 0)
    assert resolve_configs(TrainConfig(model="scgan", ema=0.0))[0].ema == 0.0  # the user's choice wins


@pytest.mark.parametrize(
    "option, fragment",
    [(("--ema", "1.5"), "ema must be 0 (off) or a decay below 1"), (("--warmup-steps", "-1"), "warmup-steps must be 0 or more")],
)
def test_invalid_loop_options_are_refused_in_one_line(option, fragment, tmp_path):
    assert_one_line_error(run_cli("train", "vae", *option, "--out", tmp_path / "run"), fragment)
    assert not (tmp_path / "run").exists()


def test_an_unknown_schedule_is_refused():
    with pytest.raises(GenlabError, match="lr_schedule must be one of constant, cosine"):
        TrainConfig(lr_schedule="linear").validate()
    assert math.isclose(learning_rate(TrainConfig(lr=1.0, lr_schedule="constant"), 1, 1), 1.0)
