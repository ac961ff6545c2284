"""Bad input and numerical trouble.

Bad input — broken data files, unusable output folders, invalid options, foreign or broken run
folders — gets one clear line on stderr and exit status 2 from `genlab`, never a traceback, and
nothing already written is lost or overwritten. Non-finite training stops with TrainingDiverged
naming the step and the learning rate and keeps the last good checkpoint; the VAE's
log-variance is bounded; `--grad-clip` clips; a collapsing GAN is warned about.
"""

from __future__ import annotations

import errno
import gzip
import json
import math
import pathlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab.runs as runs_module
import genlab.train as train_module
import genlab.utils as utils_module
from conftest import QUIET, assert_one_line_error, run_cli, tiny_train_config, write_idx_folder
from genlab import MODELS, fit, load_run
from genlab.data import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, write_idx
from genlab.errors import TrainingDiverged
from genlab.health import epoch_health, sample_diversity
from genlab.runs import CHECKPOINT_FILE, CONFIG_FILE, WEIGHTS_FILE, load_tensors, read_metrics





# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: to show that nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train_args(model: str, data_dir: Path, out: Path, *extra) -> list[str]:
    return [
        "train", model, "--data", data_dir, "--out", out, "--epochs", "1", "--batch-size", "32",
        "--hidden-dims", "48", "--device", "cpu", "--eval-batch-size", "256", "--quiet", "--no-figures", *extra,
    ]


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory) -> dict[str, Path]:
    """Small finished runs (2 epochs) to damage: a VAE, an AE and a VAE of another width."""
    data_dir = write_idx_folder(tmp_path_factory.mktemp("runs-idx"))
    root = tmp_path_factory.mktemp("finished")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = {}
    for key, model, width in (("vae", "vae", 48), ("ae", "ae", 48), ("vae_narrow", "vae", 32)):
        cfg = tiny_train_config(model, data_dir, epochs=2)
        runs[key] = fit(cfg, MODELS[model].config_class(hidden_dims=(width,)), root / key, **QUIET)
    torch.set_num_threads(before)
    return runs


@pytest.fixture
def vae_run(finished_runs, tmp_path) -> Path:
    """A private copy of the finished VAE run."""
    return Path(shutil.copytree(finished_runs["vae"], tmp_path / "vae"))


# --------------------------------------------------------------------------------------------
# Broken data files
# --------------------------------------------------------------------------------------------


def _raw(folder: Path, stem: str) -> bytes:
    return gzip.decompress((folder / f"{stem}.gz").read_bytes())


def _rewrite(folder: Path, stem: str, payload: bytes, compress: bool = True) -> None:
    (folder / f"{stem}.gz").write_bytes(gzip.compress(payload) if compress else payload)


def _missing_labels(d):
    (d / f"{TRAIN_LABELS}.gz").unlink()


def _truncated_images(d):
    _rewrite(d, TRAIN_IMAGES, _raw(d, TRAIN_IMAGES)[:-1000])


def _truncated_gzip(d):
    data = (d / f"{TRAIN_IMAGES}.gz").read_bytes()
    (d / f"{TRAIN_IMAGES}.gz").write_bytes(data[: len(data) // 2])


def _corrupt_gzip(d):
    data = bytearray((d / f"{TRAIN_IMAGES}.gz").read_bytes())
    for i in range(20, 60):  # garbage in the deflate stream, the gzip header intact
        data[i] ^= 0xA5
    (d / f"{TRAIN_IMAGES}.gz").write_bytes(bytes(data))


def _wrong_magic(d):
    _rewrite(d, TEST_LABELS, b"\x50\x4b" + _raw(d, TEST_LABELS)[2:])


def _counts_differ(d):
    labels = np.frombuffer(_raw(d, TRAIN_LABELS)[8:], dtype=np.uint8)
    write_idx(d / f"{TRAIN_LABELS}.gz", labels[:-1])


def _wrong_image_size(d):
    write_idx(d / f"{TEST_IMAGES}.gz", np.zeros((60, 32, 32), dtype=np.uint8))


def _labels_out_of_range(d):
    labels = np.frombuffer(_raw(d, TEST_LABELS)[8:], dtype=np.uint8).copy()
    labels[3] = 10
    write_idx(d / f"{TEST_LABELS}.gz", labels)


def _folder_missing(d):
    shutil.rmtree(d)


BROKEN_DATA = {
    "missing labels file": (_missing_labels, [TRAIN_IMAGES, "but not", TRAIN_LABELS]),
    "truncated IDX": (_truncated_images, [TRAIN_IMAGES, "truncated"]),
    "truncated gzip": (_truncated_gzip, [TRAIN_IMAGES, "corrupt or truncated gzip"]),
    "corrupt gzip": (_corrupt_gzip, [TRAIN_IMAGES, "corrupt or truncated gzip"]),
    "wrong magic": (_wrong_magic, [TEST_LABELS, "wrong magic number"]),
    "counts differ": (_counts_differ, ["200 images but 199 labels"]),
    "wrong image size": (_wrong_image_size, [TEST_IMAGES, "(60, 32, 32)", "expected (N, 28, 28)"]),
    "label out of range": (_labels_out_of_range, [TEST_LABELS, "label 10 out of range"]),
    "data folder missing": (_folder_missing, ["does not exist"]),
}


@pytest.mark.parametrize("case", list(BROKEN_DATA))
def test_broken_data_is_one_line_and_creates_nothing(case, tmp_path):
    damage, fragments = BROKEN_DATA[case]
    data_dir = write_idx_folder(tmp_path / "idx")
    damage(data_dir)
    out = tmp_path / "run"
    assert_one_line_error(run_cli(*train_args("ae", data_dir, out)), *fragments)
    assert not out.exists()  # refused before the run folder was made


@pytest.mark.parametrize("case", ["corrupt gzip", "counts differ", "data folder missing"])
def test_broken_data_with_overwrite_keeps_the_old_run(case, vae_run, tmp_path):
    damage, fragments = BROKEN_DATA[case]
    data_dir = write_idx_folder(tmp_path / "idx")
    damage(data_dir)
    before = snapshot(vae_run)
    assert_one_line_error(run_cli(*train_args("vae", data_dir, vae_run, "--overwrite")), *fragments)
    assert snapshot(vae_run) == before


# --------------------------------------------------------------------------------------------
# The output folder
# --------------------------------------------------------------------------------------------


def test_existing_output_folder_is_refused_without_resume_or_overwrite(vae_run, tiny_data_dir):
    before = snapshot(vae_run)
    assert_one_line_error(run_cli(*train_args("vae", tiny_data_dir, vae_run)), str(vae_run), "--resume", "--overwrite")
    assert snapshot(vae_run) == before


def test_overwrite_replaces_the_run_but_keeps_the_users_files(vae_run, tiny_data_dir):
    (vae_run / "my-notes.txt").write_text("keep me")
    old_weights = (vae_run / WEIGHTS_FILE).read_bytes()
    code, _, err = run_cli(*train_args("vae", tiny_data_dir, vae_run, "--overwrite", "--seed", "5"))
    assert code == 0, err
    assert (vae_run / "my-notes.txt").read_text() == "keep me"
    assert (vae_run / WEIGHTS_FILE).read_bytes() != old_weights
    assert [r["epoch"] for r in read_metrics(vae_run)] == [1]  # the new run's log, not the old one's


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--latent-dim", "0"], ["--batch-size", "100000"], ["--lr", "nan"]])
def test_invalid_option_with_overwrite_keeps_the_old_run(bad, vae_run, tiny_data_dir):
    before = snapshot(vae_run)
    assert_one_line_error(run_cli(*train_args("vae", tiny_data_dir, vae_run, "--overwrite", *bad)))
    assert snapshot(vae_run) == before


def test_output_path_under_a_file_is_not_writable(tmp_path, tiny_data_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_one_line_error(run_cli(*train_args("ae", tiny_data_dir, blocker / "run")), "cannot write to", "Not a directory")
    assert blocker.read_text() == "not a folder"
    assert_one_line_error(run_cli(*train_args("ae", tiny_data_dir, blocker)), "exists and is not a folder")


def test_output_folder_without_permission(tmp_path, tiny_data_dir, monkeypatch):
    # The tests may run as root, who can write anywhere: refuse the write probe instead.
    real_write_bytes = pathlib.Path.write_bytes

    def write_bytes(self, data):
        if self.name == ".genlab-write-test":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_write_bytes(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    assert_one_line_error(run_cli(*train_args("ae", tiny_data_dir, tmp_path / "run")), "cannot write to", "Permission denied")
    assert not (tmp_path / "run" / CONFIG_FILE).exists()


def test_disk_full_mid_run_keeps_the_previous_checkpoint(tmp_path, tiny_data_dir):
    run_dir = tmp_path / "vae"
    real_atomic_write = runs_module.atomic_write_bytes
    checkpoint_writes = []

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    def disk_full_at_second_checkpoint(path, data):
        if Path(path).name == CHECKPOINT_FILE:
            checkpoint_writes.append(path)
            if len(checkpoint_writes) == 2:  # end of epoch 2: the temp file is written, fsync fails
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(utils_module.os, "fsync", no_space)
                    return real_atomic_write(path, data)
        return real_atomic_write(path, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs_module, "atomic_write_bytes", disk_full_at_second_checkpoint)
        result = run_cli(*train_args("vae", tiny_data_dir, run_dir, "--epochs", "3"))
    assert_one_line_error(result, "cannot write", CHECKPOINT_FILE, "No space left on device", "previous version is kept")
    meta = load_tensors(run_dir / CHECKPOINT_FILE)[1]  # whole and readable
    assert meta["loop"]["epoch"] == 1
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1]
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    # once there is room again, the run continues from epoch 2
    code, out, err = run_cli("resume", run_dir, "--quiet")
    assert code == 0, err
    assert "at epoch 2" in out
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# Invalid option values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--epochs", "0"], "epochs must be at least 1, got 0"),
        (["--epochs", "-3"], "epochs must be at least 1, got -3"),
        (["--latent-dim", "0"], "latent_dim must be at least 1"),
        (["--batch-size", "100000"], "batch size 100000 is larger than the 200 training images"),
        (["--batch-size", "0"], "batch size must be at least 1"),
        (["--lr", "nan"], "learning rate must be a positive finite number, got nan"),
        (["--lr", "-0.1"], "learning rate must be a positive finite number"),
        (["--lr", "fast"], "invalid float value: 'fast'"),
        (["--grad-clip", "-1"], "grad-clip must be 0 (off) or a positive number"),
        (["--checkpoint-every", "-5"], "checkpoint-every must be 0 or more"),
        (["--device", "warp-drive"], "unknown device 'warp-drive'"),
    ],
)
def test_invalid_option_values(extra, fragment, tmp_path, tiny_data_dir):
    out = tmp_path / "run"
    assert_one_line_error(run_cli(*train_args("vae", tiny_data_dir, out, *extra)), fragment)
    assert not out.exists()


def test_unknown_model(tmp_path, tiny_data_dir):
    assert_one_line_error(run_cli("train", "transformer", "--out", tmp_path / "run"), "invalid choice: 'transformer'")
    assert_one_line_error(run_cli("lab", "--models", "ae,transformer", "--out", tmp_path / "lab"), "unknown model 'transformer'")
    assert not (tmp_path / "run").exists() and not (tmp_path / "lab").exists()


# --------------------------------------------------------------------------------------------
# Foreign and broken run folders
# --------------------------------------------------------------------------------------------


def test_checkpoint_from_another_model_is_refused(vae_run, finished_runs):
    shutil.copy(finished_runs["ae"] / CHECKPOINT_FILE, vae_run / CHECKPOINT_FILE)
    before = snapshot(vae_run)
    assert_one_line_error(run_cli("resume", vae_run, "--epochs", "3"), "checkpoint of model 'ae'", "'vae'")
    assert snapshot(vae_run) == before


def test_checkpoint_from_another_architecture_is_refused(vae_run, finished_runs):
    shutil.copy(finished_runs["vae_narrow"] / CHECKPOINT_FILE, vae_run / CHECKPOINT_FILE)
    before = snapshot(vae_run)
    assert_one_line_error(run_cli("resume", vae_run, "--epochs", "3"), "shape", "another architecture")
    assert snapshot(vae_run) == before


@pytest.mark.parametrize("source, fragment", [("ae", "weights of model 'ae'"), ("vae_narrow", "shape")])
def test_weights_from_another_model_or_architecture_are_refused(source, fragment, vae_run, finished_runs, tmp_path):
    shutil.copy(finished_runs[source] / WEIGHTS_FILE, vae_run / WEIGHTS_FILE)
    assert_one_line_error(run_cli("sample", vae_run, "-n", "4", "-o", tmp_path / "s.npy"), fragment)
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("file, command", [(WEIGHTS_FILE, "sample"), (CHECKPOINT_FILE, "resume"), (WEIGHTS_FILE, "plot")])
def test_truncated_weights_file_is_refused(file, command, vae_run, tmp_path):
    data = (vae_run / file).read_bytes()
    (vae_run / file).write_bytes(data[: len(data) // 2])
    if command == "resume":
        (vae_run / WEIGHTS_FILE).unlink()  # an unfinished run: resume has to read the checkpoint
    before = snapshot(vae_run)
    args = {"sample": ["sample", vae_run, "-o", tmp_path / "s.npy"], "resume": ["resume", vae_run], "plot": ["plot", vae_run]}[command]
    assert_one_line_error(run_cli(*args), file, "not a readable safetensors file")
    assert snapshot(vae_run) == before


def _edit_config(run_dir: Path, edit) -> None:
    info = json.loads((run_dir / CONFIG_FILE).read_text())
    edit(info)
    (run_dir / CONFIG_FILE).write_text(json.dumps(info))


BAD_CONFIGS = {
    "not JSON": (lambda d: (d / CONFIG_FILE).write_text('{"train": {'), "not valid JSON"),
    "negative epochs": (lambda d: _edit_config(d, lambda c: c["train"].update(epochs=-1)), "epochs must be at least 1"),
    "unknown field": (lambda d: _edit_config(d, lambda c: c["train"].update(warmup=3)), "unknown field(s) warmup"),
    "wrong type": (lambda d: _edit_config(d, lambda c: c["train"].update(batch_size="big")), "expected int, got 'big'"),
    "unknown model": (lambda d: _edit_config(d, lambda c: c["train"].update(model="resnet")), "unknown model 'resnet'"),
    "zero latent": (lambda d: _edit_config(d, lambda c: c["model"].update(latent_dim=0)), "latent_dim must be at least 1"),
    "other format": (lambda d: _edit_config(d, lambda c: c.update(format_version=99)), "run folder format 99"),
    "no sections": (lambda d: (d / CONFIG_FILE).write_text("[1, 2]"), "missing the 'train' and 'model' sections"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["resume", "sample", "train --resume"])
def test_config_that_fails_validation_is_refused(case, command, vae_run, tmp_path, tiny_data_dir):
    damage, fragment = BAD_CONFIGS[case]
    damage(vae_run)
    before = snapshot(vae_run)
    args = {
        "resume": ["resume", vae_run, "--epochs", "3"],
        "sample": ["sample", vae_run, "-o", tmp_path / "s.npy"],
        "train --resume": train_args("vae", tiny_data_dir, vae_run, "--resume", "--epochs", "3"),
    }[command]
    assert_one_line_error(run_cli(*args), CONFIG_FILE, fragment)
    assert snapshot(vae_run) == before


def test_resume_with_other_data_is_refused(vae_run, tmp_path):
    other = write_idx_folder(tmp_path / "other-idx", n_train=210)  # other digits
    _edit_config(vae_run, lambda c: c["train"].update(data_dir=str(other)))
    before = snapshot(vae_run)
    assert_one_line_error(run_cli("resume", vae_run, "--epochs", "3"), "trained on other data", "resume with the same data")
    assert snapshot(vae_run) == before


def test_resume_to_fewer_epochs_than_done_is_refused(vae_run):
    before = snapshot(vae_run)
    assert_one_line_error(run_cli("resume", vae_run, "--epochs", "1"), "already trained 2 epochs", "--epochs 2")
    assert snapshot(vae_run) == before


def test_train_resume_of_another_models_run_is_refused(vae_run, tiny_data_dir):
    before = snapshot(vae_run)
    assert_one_line_error(run_cli(*train_args("ae", tiny_data_dir, vae_run, "--resume")), "holds a 'vae' run, not 'ae'")
    assert snapshot(vae_run) == before


def test_missing_run_folder(tmp_path):
    assert_one_line_error(run_cli("resume", tmp_path / "nowhere"), "run folder", "nowhere", "does not exist")
    assert_one_line_error(run_cli("sample", tmp_path / "nowhere", "-o", tmp_path / "s.npy"), "does not exist")
    assert not (tmp_path / "nowhere").exists()


# --------------------------------------------------------------------------------------------
# Numerical guards
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["ae", "vae", "gan"])
def test_huge_learning_rate_stops_with_the_step_and_the_lr(model, tmp_path, tiny_data_dir):
    line = assert_one_line_error(
        run_cli(*train_args(model, tiny_data_dir, tmp_path / model, "--lr", "1e30", "--epochs", "3")),
        "became NaN/inf at step", "learning rate 1e+30", "--lr 1e+29",
    )
    assert "no checkpoint was written before it" in line  # it diverges in its first steps
    assert not (tmp_path / model / WEIGHTS_FILE).exists()


def _nan_loss_at_call(monkeypatch, model: str, bad_call: int) -> None:
    """The model's loss turns NaN on its `bad_call`-th call (as a bad batch or overflow would)."""
    cls = MODELS[model]
    real_loss, calls = cls.loss, []

    def loss(self, x, y, phase, cache):
        out = real_loss(self, x, y, phase, cache)
        calls.append(phase)
        if len(calls) == bad_call:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(cls, "loss", loss)


@pytest.mark.parametrize("model, bad_call, bad_step", [("vae", 5, 5), ("gan", 9, 5)])  # GAN: 2 calls per step
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(model, bad_call, bad_step, tmp_path, tiny_data_dir):
    run_dir = tmp_path / model
    with pytest.MonkeyPatch.context() as mp:
        _nan_loss_at_call(mp, model, bad_call)
        line = assert_one_line_error(
            run_cli(*train_args(model, tiny_data_dir, run_dir, "--checkpoint-every", "3", "--epochs", "2")),
            f"NaN/inf at step {bad_step} (epoch 1)", "learning rate", "last good checkpoint (step 3, 0 epochs done)", str(run_dir),
        )
    run = load_run(run_dir, weights="checkpoint")  # loadable, and load_run refuses non-finite tensors
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
    assert not (run_dir / WEIGHTS_FILE).exists() and line
    code, _, err = run_cli("resume", run_dir, "--quiet")  # and it can be continued
    assert code == 0, err
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2]


def test_fit_raises_training_diverged(tmp_path, tiny_bundle, monkeypatch):
    _nan_loss_at_call(monkeypatch, "ae", 2)
    with pytest.raises(TrainingDiverged, match=r"step 2 .*learning rate 0.001"):
        fit(tiny_train_config("ae"), None, tmp_path / "ae", data=tiny_bundle, **QUIET)


def test_non_finite_weights_after_a_finite_loss_are_never_checkpointed(tmp_path, tiny_bundle, monkeypatch):
    """The loss of step 4 is computed before step 4's update; if that update overflows, the
    loss looks fine but the weights are not: the checkpoint of step 4 must not be written."""
    real_optimizers = train_module._optimizers

    def optimizers_that_overflow_at_step_4(model, cfg, device):
        opts = real_optimizers(model, cfg, device)
        (opt,) = opts.values()
        real_step, steps = opt.step, []

        def step(*args, **kwargs):
            result = real_step(*args, **kwargs)
            steps.append(1)
            if len(steps) == 4:
                with torch.no_grad():
                    next(model.parameters()).view(-1)[0] = float("inf")
            return result

        opt.step = step
        return opts

    monkeypatch.setattr(train_module, "_optimizers", optimizers_that_overflow_at_step_4)
    run_dir = tmp_path / "vae"
    with pytest.raises(TrainingDiverged, match=r"weights became NaN/inf at step 4 .*last good checkpoint \(step 2"):
        fit(tiny_train_config("vae", checkpoint_every=2), None, run_dir, data=tiny_bundle, **QUIET)
    assert load_tensors(run_dir / CHECKPOINT_FILE)[1]["loop"]["step"] == 2
    load_run(run_dir, weights="checkpoint")  # finite, so it loads


def test_vae_log_variance_is_bounded():
    from genlab.models.losses import LOGVAR_RANGE

    torch.manual_seed(0)
    model = MODELS["vae"](MODELS["vae"].config_class())
    head = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    x = torch.rand(8, 1, 28, 28)
    for extreme in (1e4, -1e4):
        with torch.no_grad():
            head.bias.fill_(extreme)  # μ and log σ² far outside any sane range
        _, logvar = model.encode_distribution(x)
        assert logvar.min() >= LOGVAR_RANGE[0] and logvar.max() <= LOGVAR_RANGE[1]
        assert torch.isfinite(model.loss(x, torch.zeros(8, dtype=torch.long), "model", {}).loss)
    assert LOGVAR_RANGE[1] < 80  # exp(log σ²) stays far from float32 overflow (e^88)


@pytest.mark.parametrize("clip", [0.0, 0.01])
def test_grad_clip_bounds_every_optimizer_step(clip, tmp_path, tiny_bundle, monkeypatch):
    real_optimizers, norms = train_module._optimizers, []

    def recording_optimizers(model, cfg, device):
        opts = real_optimizers(model, cfg, device)
        for opt in opts.values():
            real_step = opt.step

            def step(*args, _real=real_step, _opt=opt, **kwargs):
                grads = [p.grad.flatten() for group in _opt.param_groups for p in group["params"] if p.grad is not None]
                norms.append(float(torch.cat(grads).norm()))  # what the optimizer is about to apply
                return _real(*args, **kwargs)

            opt.step = step
        return opts

    monkeypatch.setattr(train_module, "_optimizers", recording_optimizers)
    fit(tiny_train_config("gan", grad_clip=clip), None, tmp_path / "gan", data=tiny_bundle, **QUIET)
    assert len(norms) == 2 * math.ceil(200 / 32)  # both GAN optimizers, every step
    if clip:
        assert max(norms) <= clip * (1 + 1e-4)
    else:
        assert max(norms) > 0.01  # without clipping the norms are larger: the bound above is real


# --------------------------------------------------------------------------------------------
# GAN collapse warnings
# --------------------------------------------------------------------------------------------


def test_gan_warns_when_the_discriminator_wins_every_step():
    gan = MODELS["gan"](MODELS["gan"].config_class())
    (warning,) = gan.health_warnings({"d_loss": 0.004, "g_loss": 7.0})
    assert "discriminator loss 0.004" in warning and "near 0" in warning
    assert gan.health_warnings({"d_loss": 1.3, "g_loss": 0.8}) == []


def _collapse_generator(gan) -> None:
    """Every z to the same image: the last layer of G outputs a constant."""
    last = [m for m in gan.generator.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()


def test_sample_diversity_falls_when_the_generator_collapses():
    torch.manual_seed(0)
    gan = MODELS["gan"](MODELS["gan"].config_class())
    healthy = sample_diversity(gan, seed=0)
    assert healthy > 0.1 and sample_diversity(gan, seed=0) == healthy  # fixed noise: repeatable
    rng_before = torch.get_rng_state()
    _, warnings = epoch_health(gan, {"d_loss": 1.0}, [], seed=0)
    assert warnings == [] and torch.equal(torch.get_rng_state(), rng_before)  # never shifts training's RNG
    _collapse_generator(gan)
    assert sample_diversity(gan, seed=0) < 1e-3
    health, warnings = epoch_health(gan, {"d_loss": 1.0}, [{"health": {"sample_diversity": healthy}}], seed=0)
    assert health["sample_diversity"] < 1e-3
    assert len(warnings) == 1 and "sample diversity fell" in warnings[0] and "mode collapse" in warnings[0]
    ae = MODELS["ae"](MODELS["ae"].config_class())
    assert sample_diversity(ae, seed=0) is None  # no sampler, no figure


def test_collapse_warning_reaches_the_metrics_log_the_console_and_the_report(tmp_path, tiny_bundle, monkeypatch):
    from genlab.report import write_report

    cls, calls = MODELS["gan"], []
    real_loss = cls.loss

    def loss_that_collapses_g_in_epoch_2(self, x, y, phase, cache):
        calls.extend([phase] if self.training else [])  # training steps only, not the evaluation
        # from the first step of epoch 2 on, at the start of each step: the generator phase
        # reuses the fakes D's phase made with G's graph, so G must not change between the two
        if len(calls) > 2 * math.ceil(200 / 32) and phase == "discriminator":
            _collapse_generator(self)
        return real_loss(self, x, y, phase, cache)

    monkeypatch.setattr(cls, "loss", loss_that_collapses_g_in_epoch_2)
    lines = []
    lab = tmp_path / "lab"
    fit(tiny_train_config("gan", epochs=2), None, lab / "gan", data=tiny_bundle, progress=False, log=lines.append)
    rows = read_metrics(lab / "gan")
    assert "warnings" not in rows[0] and rows[0]["health"]["sample_diversity"] > 0.1
    assert any("sample diversity fell" in w for w in rows[1]["warnings"])
    assert any(line.startswith("warning: sample diversity fell") for line in lines)
    report = write_report(lab).read_text()
    assert "sample diversity fell" in report
