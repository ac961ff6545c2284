"""TensorBoard event files (genlab.tracking), read back with TensorBoard's own reader, and a
real TensorBoard server serving them to headless Chromium."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import CAN_ENCODE, CAN_SAMPLE, CONDITIONAL, QUIET, fit_killed_after, run_cli, tiny_train_config

pytest.importorskip("torch.utils.tensorboard", reason="the tensorboard package is not installed (pip install -e '.[test]')")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

STEPS_PER_EPOCH = 25  # 200 tiny training digits in batches of 8: syncs at steps 20 and 25 of each epoch


def events(run_dir: Path) -> EventAccumulator:
    """Everything in RUN/tb/ as TensorBoard reads it (no sampling, purges applied)."""
    accumulator = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    found = acc.Scalars(tag)
    steps = [e.step for e in found]
    assert len(steps) == len(set(steps)), f"{tag}: a step written twice: {steps}"
    return {e.step: e.value for e in found}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, session_data_dir, tiny_bundle) -> dict[str, Path]:
    """A 2-epoch VAE in batches of 8 (several syncs an epoch) and 1-epoch runs of an AE (encodes,
    cannot sample), a GAN (samples, no encoder) and a CVAE (conditional)."""
    from genlab import fit

    root = tmp_path_factory.mktemp("tb-runs")
    settings = {"vae": dict(epochs=2, batch_size=8), "ae": {}, "gan": {}, "cvae": {}}
    return {
        name: fit(tiny_train_config(name, session_data_dir, **extra), None, root / name, data=tiny_bundle, **QUIET)
        for name, extra in settings.items()
    }


def test_epoch_scalars_are_the_metrics_rows_values_at_their_steps(runs):
    from genlab.runs import read_metrics

    acc, rows = events(runs["vae"]), read_metrics(runs["vae"])
    assert [r["step"] for r in rows] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    for section in ("train", "test", "health"):
        assert rows[-1][section], f"no {section} figures to compare"
        for key in rows[-1][section]:
            logged = scalars(acc, f"{section}/{key}")
            assert logged == pytest.approx({r["step"]: r[section][key] for r in rows}, rel=1e-6), f"{section}/{key}"
    assert scalars(acc, "epoch/images_per_s") == pytest.approx({r["step"]: r["images_per_s"] for r in rows}, rel=1e-6)


def test_step_scalars_average_the_steps_since_the_last_sync(runs):
    """Syncs at steps 20 and 25 of a 25-step epoch: the two windows, weighted by their images,
    give back the epoch's mean; the learning rate is the optimizer's."""
    from genlab.runs import read_config, read_metrics

    acc, rows = events(runs["vae"]), read_metrics(runs["vae"])
    lr = read_config(runs["vae"])[0].lr
    windows = [{20: 20 * 8, 25: 5 * 8}, {40: 15 * 8, 50: 10 * 8}]  # sync step -> images since the last sync
    for key in rows[0]["train"]:
        logged = scalars(acc, f"steps/{key}")
        assert sorted(logged) == [20, 25, 40, 50], key  # every SYNC_EVERY steps and at each epoch's end
        for row, images in zip(rows, windows):
            mean = sum(logged[step] * n for step, n in images.items()) / sum(images.values())
            assert mean == pytest.approx(row["train"][key], rel=1e-5), key
    assert list(scalars(acc, "lr/model").values()) == pytest.approx([lr] * 4)
    assert all(v > 0 for v in scalars(acc, "steps/images_per_s").values())


def test_a_gan_logs_each_players_losses_and_learning_rate(runs):
    from genlab.runs import read_metrics

    acc, (row,) = events(runs["gan"]), read_metrics(runs["gan"])
    tags = acc.Tags()["scalars"]
    assert {"lr/discriminator", "lr/generator"} <= set(tags)
    assert {f"steps/{k}" for k in row["train"]} <= set(tags) and {f"train/{k}" for k in row["train"]} <= set(tags)


@pytest.mark.parametrize("name", ["vae", "ae", "gan", "cvae"])
def test_images_decode_to_the_expected_grid(runs, name):
    """8 columns of 28-pixel digits with 2-pixel gaps: samples in 8 rows (10, one per digit, for
    a conditional model), reconstructions in 4 (two rows of originals, each above its own)."""
    from PIL import Image

    from genlab.runs import read_metrics

    acc = events(runs[name])
    expected = {}
    if name in CAN_SAMPLE:
        expected["samples"] = ((10 if name in CONDITIONAL else 8) * 30 + 2, 8 * 30 + 2)
    if name in CAN_ENCODE:
        expected["reconstructions"] = (4 * 30 + 2, 8 * 30 + 2)
    assert set(acc.Tags()["images"]) == set(expected)
    epochs = len(read_metrics(runs[name]))
    for tag, (height, width) in expected.items():
        found = acc.Images(tag)
        assert len(found) == epochs  # one per epoch: the film
        image = np.asarray(Image.open(io.BytesIO(found[-1].encoded_image_string)))
        assert image.shape[:2] == (height, width) and found[-1].height == height and found[-1].width == width
        assert image.std() > 0  # a picture, not a blank


def test_the_sample_film_uses_the_same_noise_every_epoch(runs, tiny_bundle):
    """The grid is a pure function of the weights: redrawn from the final weights, the last
    epoch's grid comes back pixel for pixel."""
    from genlab import load_run
    from genlab.tracking import epoch_images

    run = load_run(runs["vae"])
    x, y = tiny_bundle.tensors("test")
    drawn = epoch_images(run.model, x, y, run.train_config.seed)["samples"]
    from PIL import Image

    logged = np.asarray(Image.open(io.BytesIO(events(runs["vae"]).Images("samples")[-1].encoded_image_string)), dtype=np.float32)
    logged = logged if logged.ndim == 2 else logged[..., 0]
    assert np.abs(logged - np.round(drawn * 255)).max() <= 1


def test_projector_config_names_each_epochs_codes_with_labels_and_sprite(runs, tiny_bundle):
    from google.protobuf import text_format
    from PIL import Image
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    tb = runs["vae"] / "tb"
    config = text_format.Parse((tb / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert [e.tensor_name for e in config.embeddings] == ["codes, epoch 1 (step 25)", "codes, epoch 2 (step 50)"]
    _, y = tiny_bundle.tensors("test")
    for embedding in config.embeddings:
        codes = np.loadtxt(tb / embedding.tensor_path, delimiter="\t", ndmin=2)
        assert codes.shape == (len(y), 3) and not codes[:, 2].any()  # the 2-D code as it is, in a plane
        labels = (tb / embedding.metadata_path).read_text().split()
        assert labels == [str(int(d)) for d in y]
        sprite = Image.open(tb / embedding.sprite.image_path)
        side = int(np.ceil(np.sqrt(len(y))))
        assert sprite.size == (side * 28, side * 28) and list(embedding.sprite.single_image_dim) == [28, 28]
    assert not (runs["gan"] / "tb" / "projector_config.pbtxt").exists()  # no encoder, no codes


def test_resume_adds_no_duplicate_step_and_matches_an_uninterrupted_run(tmp_path, session_data_dir, tiny_bundle):
    """Killed at step 45 (checkpoint at 25, a sync written at 40), then resumed: TensorBoard
    reads each step once, with the values of a run never interrupted."""
    from genlab import fit

    config = tiny_train_config("vae", session_data_dir, epochs=2, batch_size=8)
    whole = fit(config, None, tmp_path / "whole", data=tiny_bundle, **QUIET)
    fit_killed_after(45, config, None, tmp_path / "resumed", data=tiny_bundle, **QUIET)
    assert 40 in scalars(events(tmp_path / "resumed"), "steps/loss")  # written, after the checkpoint
    fit(config, None, tmp_path / "resumed", resume=True, data=tiny_bundle, **QUIET)
    a, b = events(whole), events(tmp_path / "resumed")
    assert a.Tags()["scalars"] == b.Tags()["scalars"]
    for tag in a.Tags()["scalars"]:
        if "images_per_s" in tag or "seconds" in tag:  # timings differ
            assert scalars(b, tag).keys() == scalars(a, tag).keys(), tag
        else:
            assert scalars(b, tag) == pytest.approx(scalars(a, tag), rel=1e-6), tag
    assert [e.step for e in b.Images("samples")] == [25, 50]
    assert len(list((tmp_path / "resumed" / "tb" / "projector").glob("step-*"))) == 2


def test_without_the_package_training_says_once_how_to_get_event_files(tmp_path, tiny_bundle, monkeypatch):
    import genlab.tracking as tracking
    from genlab import fit

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    monkeypatch.setattr(tracking, "_told_missing", False)
    lines: list[str] = []
    for name in ("one", "two"):
        fit(tiny_train_config("ae"), None, tmp_path / name, data=tiny_bundle, progress=False, log=lines.append)
        assert (tmp_path / name / "model.safetensors").is_file() and not (tmp_path / name / "tb").exists()
    told = [line for line in lines if tracking.INSTALL_HINT in line]
    assert len(told) == 1, lines


def test_no_tensorboard_writes_no_event_files_and_is_recorded(tmp_path, session_data_dir):
    from conftest import TINY_CLI_OPTIONS

    code, _, err = run_cli("train", "ae", *TINY_CLI_OPTIONS, "--no-figures", "--no-tensorboard", "--data", session_data_dir, "--out", tmp_path / "ae")
    assert code == 0, err
    assert not (tmp_path / "ae" / "tb").exists()
    assert json.loads((tmp_path / "ae" / "config.json").read_text())["train"]["tensorboard"] is False


def test_eval_writes_the_headline_metrics_as_hparams_once(runs, tmp_path):
    from tensorboard.plugins.hparams import metadata

    from genlab.metrics import HEADLINE

    run = shutil.copytree(runs["vae"], tmp_path / "vae")
    for _ in range(2):  # a second evaluation replaces the first
        code, _, err = run_cli("eval", run, "--n-samples", "50", "--iw-samples", "2", "--device", "cpu")
        assert code == 0, err
    assert len(list((run / "tb").glob("*.hparams"))) == 1
    measured = json.loads((run / "eval.json").read_text())["metrics"]
    acc = events(run)
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["model"].string_value == "vae" and start.hparams["run"].string_value == "vae"
    assert "epochs=2" in start.hparams["settings"].string_value
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert [m.name.tag for m in experiment.metric_infos] == [f"eval/{name}" for name in HEADLINE]
    headline = {name: value for name, value in measured.items() if name in HEADLINE}
    assert len(headline) >= 4
    for name, value in headline.items():
        assert scalars(acc, f"eval/{name}") == pytest.approx({50: value}, rel=1e-6)


# --------------------------------------------------------------------------------------------
# A real TensorBoard server, and Chromium drawing its scalars page
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(port: int, path: str):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return json.loads(response.read()) if response.status == 200 else None
    finally:
        connection.close()


@pytest.fixture
def tensorboard_server(tmp_path):
    """start(logdir) -> the port of `tensorboard --logdir LOGDIR` on 127.0.0.1, stopped after the test."""
    processes = []

    def start(logdir: Path) -> int:
        port = _free_port()
        log = open(tmp_path / "tensorboard.log", "w")
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        return port

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_tags(port: int, run: str, timeout: float = 60.0) -> dict:
    """The scalar tags the server lists for `run`, polled until it has loaded them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            tags = _get_json(port, "/data/plugin/scalars/tags")
        except OSError:  # not listening yet
            tags = None
        if tags and run in tags and "train/loss" in tags[run]:
            return tags[run]
        time.sleep(0.5)
    pytest.fail(f"TensorBoard did not serve {run}'s scalars within {timeout:.0f} s")


def test_a_real_tensorboard_server_serves_the_runs_scalars_and_chromium_draws_them(runs, tmp_path, tensorboard_server):
    logdir = tmp_path / "runs"
    shutil.copytree(runs["vae"], logdir / "vae")
    port = tensorboard_server(logdir)
    tags = wait_for_tags(port, "vae/tb")
    from genlab.runs import read_metrics

    assert {f"train/{k}" for k in read_metrics(logdir / "vae")[-1]["train"]} <= set(tags)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the server's HTTP API was checked")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/#scalars&tagFilter=train")  # the training curves first
            page.get_by_text("train/loss", exact=True).first.wait_for(timeout=30_000)  # a chart card per tag
            page.get_by_text("tag: train/kl").first.wait_for(timeout=30_000)
            path = tmp_path / "tensorboard-scalars.png"
            page.screenshot(path=str(path))
            assert path.stat().st_size > 10_000
        finally:
            browser.close()


def test_the_pictures_and_the_projector_spread_over_a_split_sorted_by_class():
    import torch

    from genlab.tracking import spread

    y = torch.arange(10).repeat_interleave(100)  # 1,000 labels, sorted like the offline test split
    x = torch.zeros(len(y), 1, 28, 28)
    _, picked = spread(x, y, 16)
    assert len(picked) == 16 and set(picked.tolist()) == set(range(10))
    assert len(spread(x[:5], y[:5], 16)[1]) == 5  # fewer than asked: all of them


def test_lab_no_tensorboard_reaches_every_entrys_config(monkeypatch, tmp_path):
    import genlab.lab as lab

    seen = {}
    monkeypatch.setattr(lab, "run_lab", lambda out, **kwargs: seen.update(kwargs) or out / "report.html")
    assert run_cli("lab", "--out", tmp_path / "lab", "--no-tensorboard")[0] == 0
    assert seen["tensorboard"] is False
    train_config, _ = lab.entry_configs(lab.lab_entry("gan"), 1, 0, None, "cpu", "fp32", tensorboard=False)
    assert train_config.tensorboard is False
