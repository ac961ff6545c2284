"""A training budget in optimizer steps (`TrainConfig.steps`, nanoGPT's max_iters) beside epochs:
exactly that many steps, the last epoch maybe partial, resumable bitwise, extendable, recorded;
and the lab's entries budgeted in steps that reproduce their former epochs on the offline digits."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import QUIET, assert_one_line_error, fit_killed_after, run_cli, tiny_train_config
from genlab import MODELS, GenlabError, TrainConfig, fit
from genlab.lab import LAB_ENTRIES, entry_configs
from genlab.runs import CHECKPOINT_FILE, CONFIG_FILE, WEIGHTS_FILE, load_tensors, read_metrics
from genlab.train import resolve_configs, total_steps

BATCH = 32  # 200 tiny digits: 7 batches per epoch
STEPS = 12  # one full epoch, then a partial one of 5 steps
TIMING_KEYS = ("seconds", "eval_seconds", "images_per_s")


def step_config(name: str, **overrides) -> TrainConfig:
    return tiny_train_config(name, **{"epochs": None, "steps": STEPS, "batch_size": BATCH, **overrides})


def small_model(name: str):
    return MODELS[name].config_class(hidden_dims=(48,))


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def test_total_steps_is_the_step_budget_or_epochs_times_batches_per_epoch():
    assert total_steps(TrainConfig(steps=17, batch_size=32), 200) == 17
    assert total_steps(TrainConfig(epochs=3, batch_size=32), 200) == 3 * 7  # the last batch of 8 counts
    assert total_steps(TrainConfig(epochs=3, batch_size=50), 200) == 3 * 4


def test_a_step_budget_keeps_the_models_default_epochs_out_of_the_config():
    cfg, _ = resolve_configs(TrainConfig(model="vae", steps=100))
    assert (cfg.steps, cfg.epochs, cfg.batch_size) == (100, None, MODELS["vae"].defaults(MODELS["vae"].config_class())["batch_size"])
    assert resolve_configs(TrainConfig(model="vae"))[0].epochs is not None


def test_epochs_and_steps_together_are_refused_with_one_line(tmp_path):
    with pytest.raises(GenlabError, match="not both"):
        TrainConfig(epochs=2, steps=10).validate()
    assert_one_line_error(run_cli("train", "ae", "--epochs", "1", "--steps", "5", "--out", tmp_path / "r"), "epochs or as steps, not both")
    assert_one_line_error(run_cli("train", "ae", "--steps", "0", "--out", tmp_path / "r"), "steps must be at least 1")
    assert not (tmp_path / "r").exists()


def test_a_step_budget_trains_exactly_that_many_steps_and_ends_its_partial_epoch(tmp_path, tiny_bundle):
    events = []
    run_dir = fit(step_config("vae"), small_model("vae"), tmp_path / "vae", data=tiny_bundle, progress=events.append, log=lambda _: None)
    rows = read_metrics(run_dir)
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 7), (2, STEPS)]  # the partial epoch has its row
    assert load_tensors(run_dir / CHECKPOINT_FILE)[1]["loop"]["step"] == STEPS and (run_dir / WEIGHTS_FILE).is_file()
    saved = json.loads((run_dir / CONFIG_FILE).read_text())["train"]
    assert (saved["steps"], saved["epochs"]) == (STEPS, None)
    # the progress function sees step of total, and each epoch's end with its test figures
    assert {(e.total, e.epochs) for e in events} == {(STEPS, 2)}
    assert [e.step for e in events if e.test is not None] == [7, STEPS]
    assert events[-1].step == STEPS and events[-1].remaining_s == 0


@pytest.mark.parametrize("name, checkpoint_every, stop", [("vae", 3, 10), ("gan", 0, 9), ("ae", 4, 5)])
def test_a_step_budget_stopped_mid_way_resumes_bitwise(name, checkpoint_every, stop, tmp_path, tiny_bundle):
    """Stopped in the partial last epoch (vae: from the step-9 checkpoint; gan: from epoch 1's
    end) or in the first (ae): the resumed run ends with the uninterrupted run's weights and log."""
    reference = fit(step_config(name, checkpoint_every=checkpoint_every), small_model(name), tmp_path / "reference", data=tiny_bundle, **QUIET)
    run_dir = tmp_path / name
    fit_killed_after(stop, step_config(name, checkpoint_every=checkpoint_every), small_model(name), run_dir, data=tiny_bundle, **QUIET)
    assert not (run_dir / WEIGHTS_FILE).exists()
    fit(step_config(name, checkpoint_every=checkpoint_every), None, run_dir, resume=True, data=tiny_bundle, **QUIET)
    mine, theirs = load_tensors(run_dir / WEIGHTS_FILE)[0], load_tensors(reference / WEIGHTS_FILE)[0]
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert untimed(read_metrics(run_dir)) == untimed(read_metrics(reference))


def test_a_run_resumed_with_the_budget_it_has_done_ends_its_epoch_with_a_row(tmp_path, tiny_bundle):
    """Checkpointed mid-epoch at step 9 (as Ctrl-C at a budget's last step leaves it): asked for
    9 steps, the resume trains nothing but ends the begun epoch with its row and the weights."""
    fit_killed_after(9, step_config("ae", steps=10, checkpoint_every=1), small_model("ae"), tmp_path / "ae", data=tiny_bundle, **QUIET)
    assert load_tensors(tmp_path / "ae" / CHECKPOINT_FILE)[1]["loop"]["step_in_epoch"] == 2
    fit(step_config("ae", steps=9), None, tmp_path / "ae", resume=True, data=tiny_bundle, **QUIET)
    assert [(r["epoch"], r["step"]) for r in read_metrics(tmp_path / "ae")] == [(1, 7), (2, 9)]
    assert (tmp_path / "ae" / WEIGHTS_FILE).is_file()


def test_resume_extends_a_run_to_more_steps_and_refuses_fewer(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "ae"
    code, _, err = run_cli("train", "ae", "--steps", "5", "--batch-size", BATCH, "--data", tiny_data_dir, "--device", "cpu", "--quiet", "--no-figures", "--out", run_dir)
    assert code == 0, err
    code, _, err = run_cli("resume", run_dir, "--steps", "16", "--quiet")
    assert code == 0, err
    rows = read_metrics(run_dir)
    # 5 steps (a partial epoch), then a fresh epoch of 7 and a partial one of 4
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 5), (2, 12), (3, 16)]
    assert json.loads((run_dir / CONFIG_FILE).read_text())["train"]["steps"] == 16
    assert_one_line_error(run_cli("resume", run_dir, "--steps", "8"), "already trained 3 epochs (16 steps)", "--steps 16")
    assert_one_line_error(run_cli("resume", run_dir, "--steps", "20", "--epochs", "4"), "not both")
    # an epoch budget replaces the step budget: 4 epochs of 7 steps are 28 steps
    assert run_cli("resume", run_dir, "--epochs", "4", "--quiet")[0] == 0
    saved = json.loads((run_dir / CONFIG_FILE).read_text())["train"]
    assert (saved["epochs"], saved["steps"], read_metrics(run_dir)[-1]["step"]) == (4, None, 28)


def test_the_lab_entries_steps_are_whole_epochs_of_the_offline_digits():
    """The lab's budgets are its former epochs × batches per epoch on the offline default's
    training digits: that lab trains exactly as it did, and the 2-D models and GANs as many
    epochs as `genlab train MODEL` does by default."""
    from genlab.data import load_dataset

    n_train = len(load_dataset("mnist", allow_download=False).train_images)  # the 5,000 digits less the 10% held out
    assert n_train == 4500
    for name in ("ae", "vae", "vae-conv16", "gan", "cgan"):  # the entries once budgeted in epochs (not the flow)
        entry = LAB_ENTRIES[name]
        cfg, model_config = resolve_configs(*entry_configs(entry, None, 0, None, "cpu"))
        per_epoch = math.ceil(n_train / cfg.batch_size)
        assert cfg.steps is not None and cfg.steps % per_epoch == 0, name
        if name != "vae-conv16":  # vae-conv16 trains 40 epochs, not the conv VAE's default
            assert cfg.steps // per_epoch == MODELS[entry.model].defaults(model_config)["epochs"], name


def test_evaluation_scores_fixed_first_subsets_and_says_so_in_eval_json(tmp_path, tiny_bundle):
    """The likelihood bounds on the first `iw_digits` test digits, the latent k-NN and fid_floor on
    the first `train_digits` training digits: costs that stay bounded however large the splits."""
    from genlab import load_run
    from genlab.evaluate import evaluate_run, format_results, importance_weighted_bounds
    from genlab.utils import make_generator

    run = load_run(fit(tiny_train_config("vae"), small_model("vae"), tmp_path / "vae", data=tiny_bundle, **QUIET), device="cpu")
    small = dict(n_samples=300, iw_samples=8)
    results = evaluate_run(run, data=tiny_bundle, seed=0, iw_digits=20, train_digits=50, **small)
    n_test = len(tiny_bundle.test_images)
    assert results["train_digits"] == 50 and any("first 50 of the 200 training digits" in note for note in results["notes"])
    assert any("latents of the 50 training digits" in note for note in results["notes"])
    assert results["test_digits"] == {"reconstruction": n_test, "latent": n_test, "likelihood": 20, "samples": n_test}
    assert any(f"first 20 of the {n_test} test digits" in note for note in results["notes"])
    assert "on the first 20 digits" in format_results(results)
    x_test, _ = tiny_bundle.tensors("test")
    _, _, iwae = importance_weighted_bounds(run.model, x_test[:20], 8, make_generator(1, "cpu"))  # seed + 1, as evaluate_run draws
    assert results["metrics"]["iwae_log_px_nats"] == pytest.approx(float(iwae.mean()), abs=1e-5)
    everything = evaluate_run(run, data=tiny_bundle, seed=0, iw_digits=0, train_digits=0, **small)
    assert everything["test_digits"]["likelihood"] == n_test and everything["train_digits"] == 200
    assert not any("first" in note for note in everything["notes"])
    assert everything["metrics"]["fid_floor"] != results["metrics"]["fid_floor"]  # 200 training digits against 50
    assert everything["metrics"]["recon_mse_per_pixel"] == results["metrics"]["recon_mse_per_pixel"]
