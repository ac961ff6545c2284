"""The one training loop on a tiny budget: metrics log, run folder, checkpoint round trip,
continuing a finished run."""

from __future__ import annotations

import json
import math

import pytest
import torch

import genlab.train as train_module
from conftest import QUIET, fit_killed_after, run_cli, tiny_train_config
from genlab import MODELS, GenlabError, fit, load_run
from genlab.data import DataBundle
from genlab.runs import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, load_tensors, read_metrics

NAMES = sorted(MODELS)
N_SMALL = 64


@pytest.fixture
def captured_models(monkeypatch):
    """The model objects `fit` builds, kept so a test can compare them with what was saved."""
    built = []
    original = train_module.build_model

    def build_and_keep(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(train_module, "build_model", build_and_keep)
    return built


@pytest.fixture(scope="module")
def small_bundle(tiny_bundle):
    """64 training and 20 test digits: two batches of 32 per epoch, for the many short runs here."""
    return DataBundle(
        **{
            **tiny_bundle.__dict__,
            "train_images": tiny_bundle.train_images[:N_SMALL],
            "train_labels": tiny_bundle.train_labels[:N_SMALL],
            "test_images": tiny_bundle.test_images[:20],
            "test_labels": tiny_bundle.test_labels[:20],
        }
    )


def _finite_numbers(d: dict) -> bool:
    return bool(d) and all(isinstance(v, float) and math.isfinite(v) for v in d.values())


@pytest.mark.parametrize("name", NAMES)
def test_loop_writes_metrics_checkpoint_and_weights(name, tmp_path, small_bundle, captured_models):
    lines = []
    # ema 0: the saved weights are the trained model's own (tests/test_loop_features.py: with the average)
    run_dir = fit(tiny_train_config(name, epochs=2, ema=0.0), None, tmp_path / name, data=small_bundle, progress=False, log=lines.append)
    assert run_dir == tmp_path / name
    for file in (CONFIG_FILE, WEIGHTS_FILE, CHECKPOINT_FILE, METRICS_FILE):
        assert (run_dir / file).is_file(), file

    rows = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    batches = math.ceil(N_SMALL / 32)
    assert [r["step"] for r in rows] == [batches, 2 * batches]
    for row in rows:
        assert row["seconds"] > 0 and math.isfinite(row["seconds"])
        assert _finite_numbers(row["train"]) and _finite_numbers(row["test"])
    assert len([line for line in lines if f"{name} epoch" in line]) == 2  # one line per epoch

    config = json.loads((run_dir / CONFIG_FILE).read_text())
    assert config["train"]["model"] == name and config["train"]["epochs"] == 2
    assert config["train"]["lr"] == MODELS[name].defaults(MODELS[name].config_class())["lr"]  # the model default, resolved
    assert config["data"]["n_train"] == N_SMALL and config["data"]["n_test"] == 20
    assert config["data"]["sha256"] == small_bundle.sha256
    _, meta = load_tensors(run_dir / CHECKPOINT_FILE)
    assert meta["loop"]["epoch"] == 2 and meta["loop"]["step"] == 2 * batches

    # Checkpoint round trip: the loaded run computes exactly what the trained model in memory does.
    (trained,) = captured_models
    _assert_same_outputs(run_dir, trained.eval(), small_bundle)


def _assert_same_outputs(run_dir, trained, bundle) -> None:
    x, _ = bundle.tensors("test")
    x = x[:8]
    for weights in ("final", "checkpoint"):
        run = load_run(run_dir, weights=weights)
        assert not run.model.training
        assert run.name == trained.name and run.model_config == trained.config
        live = trained.state_dict()
        for key, saved in run.model.state_dict().items():
            assert torch.equal(saved, live[key]), key
        with torch.no_grad():
            if trained.can_encode and not trained.conditional:
                torch.testing.assert_close(run.encode(x), trained.encode(x), rtol=0, atol=0)
                z = torch.randn(8, trained.config.latent_dim)
                torch.testing.assert_close(run.decode(z), trained.decode(z), rtol=0, atol=0)
                torch.testing.assert_close(run.reconstruct(x[:, 0]), trained.reconstruct(x), rtol=0, atol=0)
            if trained.can_sample:
                labels = torch.arange(8) % 10 if trained.conditional else None
                gen = torch.Generator().manual_seed(7)
                expected = trained.sample(8, generator=gen, labels=labels)
                torch.testing.assert_close(run.sample(8, seed=7, labels=labels), expected, rtol=0, atol=0)


def test_training_lowers_the_autoencoders_loss(tmp_path, small_bundle):
    run_dir = fit(tiny_train_config("ae", epochs=3, batch_size=16), None, tmp_path / "ae", data=small_bundle, **QUIET)
    rows = read_metrics(run_dir)
    assert rows[-1]["test"]["mse"] < rows[0]["test"]["mse"]


def test_epoch_test_figures_score_the_first_n_test_images(tmp_path, small_bundle):
    """--epoch-eval-images N: the loss curves' test points are the losses of the first N test
    digits (checked against evaluate_split on them); 0 scores the whole split."""
    rows = {}
    for n in (5, 0):
        run_dir = fit(tiny_train_config("ae", epoch_eval_images=n), None, tmp_path / f"n{n}", data=small_bundle, **QUIET)
        rows[n] = read_metrics(run_dir)[0]["test"]
        x, y = small_bundle.tensors("test", torch.device("cpu"))
        keep = n or len(x)
        expected = train_module.evaluate_split(load_run(run_dir).model, x[:keep], y[:keep], 256, 0)
        assert rows[n] == pytest.approx(expected, rel=1e-6)
    assert rows[5]["mse"] != rows[0]["mse"]


def test_binarize_feeds_fresh_binary_digits_each_step(tmp_path, small_bundle, monkeypatch):
    """--binarize: every step's batch is binary, and a new draw (the same digit differs between
    epochs); without it the grey pixels go in unchanged."""
    seen = {True: [], False: []}
    original = train_module.build_model

    def recording(cfg, model_cfg):
        model = original(cfg, model_cfg)
        loss = model.loss
        def recording_loss(x, y, phase, cache):
            if model.training:  # the training steps, not the per-epoch test evaluation
                seen[cfg.binarize].append(x.clone())
            return loss(x, y, phase, cache)

        model.loss = recording_loss
        return model

    monkeypatch.setattr(train_module, "build_model", recording)
    for flag in (True, False):
        cfg = tiny_train_config("vae", epochs=2, batch_size=len(small_bundle.train_images), binarize=flag)
        fit(cfg, None, tmp_path / f"b{flag}", data=small_bundle, **QUIET)
    binary, grey = seen[True], seen[False]  # the same seed: the same digits in the same order
    assert len(binary) == 2 and all(set(x.unique().tolist()) <= {0.0, 1.0} for x in binary)
    assert len(set(grey[0].unique().tolist())) > 2
    for b, g in zip(binary, grey):  # black pixels stay 0, white ones 1
        assert b[g == 0].sum() == 0 and b[g == 1].min() == 1
    # where each digit of epoch 2 was in epoch 1: its binary draw is a new one
    where = (grey[1].flatten(1)[:, None] == grey[0].flatten(1)[None]).all(-1).float().argmax(1)
    assert torch.equal(grey[1], grey[0][where]) and not torch.equal(binary[1], binary[0][where])


def test_load_run_sample_is_reproducible(tmp_path, small_bundle):
    run = load_run(fit(tiny_train_config("vae"), None, tmp_path / "vae", data=small_bundle, **QUIET))
    a, b, c = run.sample(6, seed=1), run.sample(6, seed=1), run.sample(6, seed=2)
    assert a.shape == (6, 1, 28, 28)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_same_seed_same_run(tmp_path, small_bundle):
    dirs = [fit(tiny_train_config("vae"), None, tmp_path / f"r{i}", data=small_bundle, **QUIET) for i in range(2)]
    other = fit(tiny_train_config("vae", seed=1), None, tmp_path / "other", data=small_bundle, **QUIET)
    weights = [load_run(d).model.state_dict() for d in (*dirs, other)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    metrics = [read_metrics(d)[0] for d in dirs]
    assert metrics[0]["train"] == metrics[1]["train"] and metrics[0]["test"] == metrics[1]["test"]


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_resume_a_finished_run_with_more_epochs(name, tmp_path, small_bundle):
    run_dir = fit(tiny_train_config(name, epochs=1), None, tmp_path / name, data=small_bundle, **QUIET)
    first_row = read_metrics(run_dir)[0]
    before = {k: v.clone() for k, v in load_run(run_dir).model.state_dict().items()}
    lines = []
    fit(tiny_train_config(name, epochs=3), None, run_dir, resume=True, data=small_bundle, progress=False, log=lines.append)
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0] == first_row  # the finished epoch is kept, not redone
    batches = math.ceil(N_SMALL / 32)
    assert rows[-1]["step"] == 3 * batches
    assert any("resuming" in line for line in lines)
    assert json.loads((run_dir / CONFIG_FILE).read_text())["train"]["epochs"] == 3
    after = load_run(run_dir).model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())


def test_resume_without_new_epochs_keeps_a_finished_run(tmp_path, small_bundle):
    run_dir = fit(tiny_train_config("ae", epochs=1), None, tmp_path / "ae", data=small_bundle, **QUIET)
    rows = read_metrics(run_dir)
    weights = (run_dir / WEIGHTS_FILE).read_bytes()
    fit(tiny_train_config("ae", epochs=None), None, run_dir, resume=True, data=small_bundle, **QUIET)
    assert read_metrics(run_dir) == rows
    assert (run_dir / WEIGHTS_FILE).read_bytes() == weights


def test_a_config_lacking_a_field_is_refused_not_filled_with_todays_default(tmp_path, small_bundle):
    """A field a saved config.json lacks would silently take today's default and change how the
    run trains or rebuilds: it is refused, naming the field."""
    from genlab.runs import read_config

    run_dir = fit(tiny_train_config("ae"), None, tmp_path / "ae", data=small_bundle, **QUIET)
    path = run_dir / CONFIG_FILE
    saved = json.loads(path.read_text())
    del saved["model"]["input_noise"]
    path.write_text(json.dumps(saved))
    with pytest.raises(GenlabError, match="missing field.*input_noise"):
        read_config(run_dir)


def test_a_run_folder_of_another_format_is_refused_with_what_to_do(tmp_path, small_bundle):
    from genlab.runs import FORMAT_VERSION

    run_dir = fit(tiny_train_config("ae"), None, tmp_path / "ae", data=small_bundle, **QUIET)
    path = run_dir / CONFIG_FILE
    saved = json.loads(path.read_text())
    saved["format_version"] = FORMAT_VERSION - 1
    path.write_text(json.dumps(saved))
    code, _, err = run_cli("sample", run_dir, "-n", "4", "-o", tmp_path / "s.npy")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"format {FORMAT_VERSION - 1}" in err and f"reads format {FORMAT_VERSION}" in err and "retrain" in err


def test_training_defaults_follow_the_model_config():
    """Unset epochs/lr/batch size come from the family, and the conv VAE has its own; what the
    user sets always wins."""
    from genlab import TrainConfig
    from genlab.train import resolve_configs

    vae = MODELS["vae"]
    mlp, _ = resolve_configs(TrainConfig(model="vae"), vae.config_class())
    assert (mlp.lr, mlp.batch_size, mlp.epochs) == (1e-3, 32, 35)
    conv, _ = resolve_configs(TrainConfig(model="vae"), vae.config_class(arch="conv"))
    assert (conv.lr, conv.batch_size, conv.epochs) == (2e-3, 64, 35)
    mine, _ = resolve_configs(TrainConfig(model="vae", lr=5e-4, batch_size=16), vae.config_class(arch="conv"))
    assert (mine.lr, mine.batch_size) == (5e-4, 16)


@pytest.mark.parametrize("name", NAMES)
def test_a_loop_step_changes_every_phase(name, tmp_path, tiny_bundle, monkeypatch):
    """One batch of `fit` (requires_grad switching, an optimizer per phase): every weight of
    every phase moves."""
    import genlab.train as train_module

    built = []
    original = train_module.build_model
    monkeypatch.setattr(train_module, "build_model", lambda *a: built.append(original(*a)) or built[-1])
    torch.manual_seed(0)
    before = {n: p.detach().clone() for n, p in MODELS[name](MODELS[name].config_class()).named_parameters()}
    fit_killed_after(1, tiny_train_config(name, batch_size=16), None, tmp_path / name, data=tiny_bundle, **QUIET)
    after = dict(built[0].named_parameters())
    unchanged = [n for n, p in after.items() if torch.equal(before[n], p.detach())]
    assert not unchanged, f"{name}: one step left {unchanged[:3]} unchanged"
