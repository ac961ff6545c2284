"""The `genlab` command end to end on a tiny budget: every command, its --help, bad arguments."""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CAN_ENCODE, CAN_SAMPLE, N_TEST, TINY_CLI_OPTIONS, assert_one_line_error, run_cli, synthetic_digits
from genlab.cli import build_parser
from genlab.models import MODELS

NAMES = sorted(MODELS)
TINY = TINY_CLI_OPTIONS
cli = run_cli  # genlab ARGS in-process -> (status, stdout, stderr)


def _can_sample(name: str) -> bool:
    return name in CAN_SAMPLE


@pytest.fixture
def data_dir(session_data_dir) -> Path:
    return session_data_dir


@pytest.fixture
def trained(tiny_cli_runs):
    return tiny_cli_runs


@pytest.mark.parametrize("name", NAMES)
def test_train_each_model(name, trained):
    run_dir, (code, out, err) = trained[name]
    assert code == 0, err
    assert f"done: {run_dir}" in out
    for file in ("config.json", "model.safetensors", "checkpoint.safetensors", "metrics.jsonl"):
        assert (run_dir / file).is_file()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    pngs = sorted(p.name for p in (run_dir / "figures").glob("*.png"))
    assert "losses.png" in pngs and len(pngs) >= 3


@pytest.mark.parametrize("name", NAMES)
def test_sample(name, trained, tmp_path):
    run_dir, _ = trained[name]
    target = tmp_path / "x.npy"
    code, out, err = cli("sample", run_dir, "-n", 8, "-o", target, "--device", "cpu")
    if not _can_sample(name):
        assert_one_line_error((code, "", err), "cannot sample")
        assert not target.exists()
        return
    assert code == 0, err
    images = np.load(target)
    assert images.shape == (8, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and np.isfinite(images).all()
    # Same seed, same images; another seed, other images.
    cli("sample", run_dir, "-n", 8, "-o", tmp_path / "again.npy", "--device", "cpu")
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), images)
    cli("sample", run_dir, "-n", 8, "-o", tmp_path / "other.npy", "--seed", 5, "--device", "cpu")
    assert not np.array_equal(np.load(tmp_path / "other.npy"), images)


@pytest.mark.parametrize("name", [n for n in NAMES if MODELS[n].conditional])
def test_sample_one_digit_from_a_conditional_model(name, trained, tmp_path):
    run_dir, _ = trained[name]
    code, _, err = cli("sample", run_dir, "-n", 4, "--digit", 3, "-o", tmp_path / "3.npy", "--device", "cpu")
    assert code == 0, err
    assert np.load(tmp_path / "3.npy").shape == (4, 28, 28)


def test_sample_and_reconstruct_write_a_png_grid_of_the_same_images(trained, tmp_path):
    from PIL import Image

    run_dir = trained["vae"][0]
    for command, extra, n in (("sample", ("-n", 10), 10), ("reconstruct", (), N_TEST)):
        assert cli(command, run_dir, *extra, "-o", tmp_path / f"{command}.npy", "--device", "cpu")[0] == 0
        code, out, err = cli(command, run_dir, *extra, "-o", tmp_path / f"{command}.png", "--device", "cpu")
        assert code == 0, err
        images = np.load(tmp_path / f"{command}.npy")
        with Image.open(tmp_path / f"{command}.png") as png:
            assert png.mode == "L"
            grid = np.asarray(png).astype(np.float32)
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        assert grid.shape == (rows * 30 + 2, cols * 30 + 2)  # 28-pixel digits, 2-pixel borders
        for i in range(n):  # each cell is its image, dark on light, to within PNG's 8 bits
            r, c = divmod(i, cols)
            cell = grid[2 + 30 * r : 2 + 30 * r + 28, 2 + 30 * c : 2 + 30 * c + 28]
            np.testing.assert_allclose(cell, (1 - images[i]) * 255, atol=0.51)


def test_digit_needs_a_conditional_model(trained, tmp_path):
    code, _, err = cli("sample", trained["vae"][0], "-n", 4, "--digit", 3, "-o", tmp_path / "x.npy")
    assert_one_line_error((code, "", err), "not conditional")


@pytest.mark.parametrize("name", NAMES)
def test_encode(name, trained, tmp_path):
    run_dir, _ = trained[name]
    target = tmp_path / "z.npz"
    code, out, err = cli("encode", run_dir, "-o", target, "--device", "cpu")
    if name not in CAN_ENCODE:
        assert_one_line_error((code, "", err), "no encoder")
        return
    assert code == 0, err
    with np.load(target) as saved:
        z, y = saved["z"], saved["y"]
    latent = MODELS[name].config_class().latent_dim
    assert z.shape == (N_TEST, latent) and np.isfinite(z).all()
    np.testing.assert_array_equal(y, synthetic_digits(N_TEST, seed=2)[1])  # the --data test split


@pytest.mark.parametrize("name", NAMES)
def test_reconstruct(name, trained, tmp_path):
    run_dir, _ = trained[name]
    target = tmp_path / "r.npy"
    code, out, err = cli("reconstruct", run_dir, "-o", target, "--device", "cpu")
    if name not in CAN_ENCODE:
        assert_one_line_error((code, "", err), "cannot reconstruct")
        return
    assert code == 0, err
    recon = np.load(target)
    assert recon.shape == (N_TEST, 28, 28) and recon.dtype == np.float32
    assert recon.min() >= 0.0 and recon.max() <= 1.0


def test_plot_rewrites_the_figures(trained):
    run_dir, _ = trained["vae"]
    figures = run_dir / "figures"
    before = sorted(p.name for p in figures.glob("*.png"))
    for png in figures.glob("*.png"):
        png.unlink()
    code, out, err = cli("plot", run_dir, "--device", "cpu")
    assert code == 0, err
    assert sorted(p.name for p in figures.glob("*.png")) == before
    assert {"samples.png", "latent_space.png", "manifold.png", "reconstructions.png"} <= set(before)
    for name in before:
        assert str(figures / name) in out


def test_resume_command_extends_a_run(tmp_path, data_dir):
    run_dir = tmp_path / "ae"
    assert cli("train", "ae", *TINY, "--data", data_dir, "--out", run_dir, "--no-figures")[0] == 0
    code, out, err = cli("resume", run_dir, "--epochs", 2, "--quiet")
    assert code == 0, err
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_lab_writes_a_report_that_shows_every_figure(tmp_path, data_dir, small_evaluation):
    out_dir = tmp_path / "lab"
    code, out, err = cli("lab", "--epochs", 1, "--out", out_dir, "--data", data_dir, "--device", "cpu", "--quiet", "--workers", 1)
    assert code == 0, err
    report = out_dir / "report.html"
    assert f"report: {report}" in out
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)  # nothing fetched from a server
    for model in ("ae", "vae", "gan"):
        assert (out_dir / model / "model.safetensors").is_file()
        assert f"id='{model}'" in page
        pngs = sorted((out_dir / model / "figures").glob("*.png"))
        assert len(pngs) >= 3
        for png in pngs:  # each figure is inlined in the page
            assert base64.b64encode(png.read_bytes()).decode("ascii") in page, f"{model}/{png.name} not in the report"
    assert "Reconstruction-based vs adversarial" in page


def test_report_says_when_the_loss_curves_scored_a_subset_of_the_test_digits(tmp_path, data_dir):
    for model, n in (("ae", 50), ("vae", 0)):
        code, _, err = cli("train", model, *TINY_CLI_OPTIONS, "--data", data_dir, "--epoch-eval-images", n, "--no-figures", "--out", tmp_path / model)
        assert code == 0, err
    code, _, err = cli("report", tmp_path)
    assert code == 0, err
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count(f"(first 50 of {N_TEST} test digits)") == 1  # the ae's; the vae scored all


def test_lab_refuses_an_unknown_model_before_training(tmp_path):
    code, _, err = cli("lab", "--models", "ae,nope", "--out", tmp_path / "lab")
    assert_one_line_error((code, "", err), "unknown model 'nope'")
    assert not (tmp_path / "lab" / "ae").exists()


# --------------------------------------------------------------------------------------------
# --help and bad arguments
# --------------------------------------------------------------------------------------------


def _command_paths(parser: argparse.ArgumentParser, prefix=()) -> list[tuple[str, ...]]:
    """Every command and sub-command the parser knows, found by walking it (so new ones count)."""
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _command_paths(sub, (*prefix, name))
    return paths


COMMANDS = _command_paths(build_parser())


def test_every_expected_command_exists():
    expected = {("train",), ("sample",), ("encode",), ("reconstruct",), ("plot",), ("lab",), ("resume",)}
    expected |= {("train", name) for name in NAMES}
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "genlab")
def test_help(path):
    code, out, err = cli(*path, "--help")
    assert code == 0 and err == ""
    assert out.startswith("usage: genlab") and len(out.splitlines()) > 3


def test_train_help_lists_the_model_options():
    _, out, _ = cli("train", "vae", "--help")
    for option in ("--epochs", "--latent-dim", "--batch-size", "--lr", "--seed", "--data", "--out", "--device", "--resume", "--beta"):
        assert option in out
    assert "weight of the KL term" in out  # help text taken from the config's comments


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "required"),
        (["train"], "required"),
        (["frobnicate"], "invalid choice"),
        (["train", "nope"], "invalid choice"),
        (["train", "vae", "--epochs", "abc"], "invalid int value"),
        (["train", "vae", "--epochs", "0"], "epochs must be at least 1"),
        (["train", "vae", "--lr", "-1"], "learning rate"),
        (["train", "vae", "--batch-size", "0"], "batch size"),
        (["train", "vae", "--latent-dim", "0"], "latent_dim"),
        (["train", "vae", "--beta", "-1"], "beta"),
        (["train", "vae", "--device", "tpu", "--epochs", "1"], "device"),
        (["train", "vae", "--epochs", "1", "--data", "no-such-folder"], "does not exist"),
        (["sample", "no-such-run", "-o", "x.npy"], "does not exist"),
        (["sample", "no-such-run"], "-o"),
        (["sample", "no-such-run", "-o", "x.jpg"], "must end in .npy or .png"),
        (["reconstruct", "no-such-run", "-o", "r.npz"], "must end in .npy or .png"),
        (["encode", "no-such-run", "-o", "z.npy"], "must end in .npz"),
        (["encode", "no-such-run", "-o", "z.npz"], "does not exist"),
        (["plot"], "RUN_DIR"),
        (["lab", "--epochs", "0"], "epochs"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a broken command might write lands here
    code, out, err = cli(*argv)
    assert_one_line_error((code, "", err), fragment)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lab").exists()


def test_bad_sample_arguments_on_a_real_run(trained, tmp_path):
    run_dir = trained["vae"][0]
    assert_one_line_error(cli("sample", run_dir, "-n", -3, "-o", tmp_path / "x.npy"), "-n must be at least 1")
    assert_one_line_error(cli("sample", run_dir, "-n", 0, "-o", tmp_path / "x.npy"), "-n must be at least 1")
    code, _, err = cli("sample", run_dir, "-n", 2, "-o", tmp_path / "missing" / "x.npy")
    assert_one_line_error((code, "", err), "does not exist")
    code, _, err = cli("encode", trained["gan"][0], "-o", tmp_path / "z.npz")
    assert_one_line_error((code, "", err), "encode")
    code, _, err = cli("sample", trained["ae"][0], "-o", tmp_path / "x.npy")
    assert_one_line_error((code, "", err), "cannot sample")


def _genlab_command() -> list[str]:
    script = Path(sys.executable).with_name("genlab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "genlab.cli"]


def test_console_script_in_a_real_process(tmp_path):
    """The installed entry point: exit statuses as a shell sees them."""
    ok = subprocess.run([*_genlab_command(), "--version"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("genlab ")
    bad = subprocess.run(
        [*_genlab_command(), "train", "vae", "--epochs", "0", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "epochs must be at least 1" in bad.stderr
