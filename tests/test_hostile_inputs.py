"""Hostile and oversized inputs: one line, exit status 2, bounded memory, nothing lost.

A decompression bomb as data, a received run folder whose config.json asks for an enormous
network, `genlab sample -n` beyond memory and two processes writing one run folder. The
memory-bound cases run the CLI in a child process whose address space is capped a little above
what its imports use (`run_cli_limited`): without the bound, the allocation fails there (a
traceback) instead of swamping the machine, and the child's peak resident memory is asserted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, edit_config, run_cli, run_cli_limited, tiny_train_config, write_gzip_bomb, write_idx_folder
from genlab import MODELS, fit, load_run
from genlab.data import TRAIN_IMAGES, read_idx
from genlab.errors import DataError, RunFolderError
from genlab.limits import MAX_GRID_IMAGES
from genlab.runs import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, read_config, read_metrics

QUIET = dict(progress=False, log=lambda _: None)
MB = 2**20


def one_line_error(code: int, err: str, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("genlab: error: "), err[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_idx_folder(tmp_path_factory.mktemp("hostile-idx"))


@pytest.fixture(scope="module")
def finished_vae(tmp_path_factory, data_dir) -> Path:
    """A small finished VAE (hidden width 32), the run folder others send us."""
    cfg = tiny_train_config("vae", data_dir)
    return fit(cfg, MODELS["vae"].config_class(hidden_dims=(32,)), tmp_path_factory.mktemp("hostile-runs") / "vae", **QUIET)


@pytest.fixture
def someones_run(finished_vae, tmp_path) -> Path:
    return Path(shutil.copytree(finished_vae, tmp_path / "received" / "vae"))


# --------------------------------------------------------------------------------------------
# A decompression bomb as data
# --------------------------------------------------------------------------------------------


def test_gzip_bomb_is_refused_in_bounded_memory(tmp_path, data_dir):
    """3 MB of gzip that inflate to 3 GB behind a header promising MNIST's 47 MB: refused on
    one line once the promise is exceeded, with memory bounded by the promised size."""
    folder = Path(shutil.copytree(data_dir, tmp_path / "data"))
    bomb = write_gzip_bomb(folder / f"{TRAIN_IMAGES}.gz", (60000, 28, 28), 3 * 2**30)
    assert bomb.stat().st_size < 10 * MB
    code, _, err, peak_mb = run_cli_limited(
        tmp_path, "train", "vae", "--data", folder, "--out", tmp_path / "run", "--epochs", "1", "--quiet", budget_mb=1024
    )
    one_line_error(code, err, TRAIN_IMAGES, "unexpected bytes after the data", "(60000, 28, 28)")
    assert peak_mb < 256, f"peak {peak_mb:.0f} MB above the start for 47 MB of promised data"
    assert not (tmp_path / "run").exists()


def test_idx_header_promising_an_absurd_size_is_refused_unread(tmp_path):
    path = tmp_path / "huge-idx3-ubyte.gz"
    write_gzip_bomb(path, (2**32 - 1, 28, 28), 0)
    with pytest.raises(DataError, match="more than the 1,073,741,824 genlab reads"):
        read_idx(path)


# --------------------------------------------------------------------------------------------
# A received run folder whose config.json does not describe its weights
# --------------------------------------------------------------------------------------------


def test_config_asking_for_an_enormous_network_is_refused_before_building(someones_run, tmp_path):
    edit_config(someones_run, "model", hidden_dims=[100000, 100000])  # ~80 GB of float32 weights
    code, _, err, peak_mb = run_cli_limited(tmp_path, "sample", someones_run, "-n", "4", "-o", tmp_path / "s.npy", budget_mb=1024)
    one_line_error(code, err, "hidden_dims=(100000, 100000)", "parameters")
    assert peak_mb < 64, f"peak {peak_mb:.0f} MB above the start"
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize(
    "values, fragment",
    [({"hidden_dims": [64]}, "hidden_dims=(64,)"), ({"latent_dim": 7}, "latent_dim=7")],
)
def test_config_that_does_not_fit_the_weights_names_the_field(values, fragment, someones_run, tmp_path):
    edit_config(someones_run, "model", **values)
    with pytest.raises(RunFolderError, match=r"config\.json: .*does not fit model\.safetensors") as caught:
        load_run(someones_run)
    assert fragment in str(caught.value)
    (someones_run / WEIGHTS_FILE).unlink()  # an unfinished run: the checkpoint's header is checked
    with pytest.raises(RunFolderError, match=rf"{fragment[:8]}.*does not fit {CHECKPOINT_FILE}"):
        load_run(someones_run)
    code, _, err = run_cli("resume", someones_run, "--epochs", "3", "--quiet")
    one_line_error(code, err, CHECKPOINT_FILE)


def test_training_an_enormous_network_is_refused_before_anything_is_written(tmp_path, data_dir):
    code, _, err = run_cli("train", "gan", "--data", data_dir, "--out", tmp_path / "run", "--hidden-dims", "100000", "100000", "--quiet")
    one_line_error(code, err, "hidden_dims=(100000, 100000)", "more than the 50,000,000 genlab builds")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# genlab sample -n beyond memory
# --------------------------------------------------------------------------------------------


def test_sample_beyond_memory_streams_a_correct_npy(finished_vae, tmp_path):
    """200,000 images (598 MB of float32) under a 320 MB cap: the file is right, memory flat."""
    n, target = 200_000, tmp_path / "many.npy"
    code, out, err, peak_mb = run_cli_limited(tmp_path, "sample", finished_vae, "-n", n, "--seed", "3", "-o", target, budget_mb=320)
    assert code == 0, err[-2000:]
    assert target.stat().st_size == 128 + n * 28 * 28 * 4  # the .npy header, then the array
    assert peak_mb < 160, f"peak {peak_mb:.0f} MB above the start for a {target.stat().st_size / MB:.0f} MB file"
    images = np.load(target, mmap_mode="r")
    assert images.shape == (n, 28, 28) and images.dtype == np.float32
    run = load_run(finished_vae)
    np.testing.assert_array_equal(images[:1000], run.sample(1000, seed=3).squeeze(1).numpy())  # the first block
    tail = images[-5000:]
    assert np.isfinite(tail).all() and tail.min() >= 0 and tail.max() <= 1 and tail.std() > 0.01
    assert not list(tmp_path.glob(".many.npy.*"))


def test_sample_refuses_what_the_disk_cannot_hold_or_a_grid_too_large(finished_vae, tmp_path, monkeypatch):
    import genlab.samples

    code, _, err = run_cli("sample", finished_vae, "-n", MAX_GRID_IMAGES + 1, "-o", tmp_path / "grid.png")
    one_line_error(code, err, f"at most {MAX_GRID_IMAGES:,} images", ".npy")
    monkeypatch.setattr(genlab.samples.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    code, _, err = run_cli("sample", finished_vae, "-n", 3_000_000, "-o", tmp_path / "s.npy")
    one_line_error(code, err, "3,000,000 images need 9,408,000,128 bytes", "1,000,000 free")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# Two processes writing one run folder
# --------------------------------------------------------------------------------------------


def _genlab_process(*argv) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "genlab.cli", *map(str, argv)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_second_writer_is_refused_naming_the_first_and_a_killed_ones_lock_never_blocks(tmp_path, data_dir):
    from genlab.lock import LOCK_FILE

    run = tmp_path / "run"
    tiny = ["--data", data_dir, "--out", run, "--batch-size", "32", "--hidden-dims", "16", "--device", "cpu", "--quiet", "--no-figures"]
    first = _genlab_process("train", "vae", *tiny, "--epochs", "100000", "--epoch-eval-images", "60")
    try:
        deadline = time.monotonic() + 120
        while not (run / CHECKPOINT_FILE).is_file():  # the first epoch is done: it is training
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first trainer never wrote a checkpoint"
            time.sleep(0.2)
        assert (run / LOCK_FILE).read_text().strip() == str(first.pid)

        second = _genlab_process("resume", run)  # a real second process: without the lock it trains too
        try:
            _, err = second.communicate(timeout=120)
        finally:
            second.kill()
        one_line_error(second.returncode, err, str(run), f"PID {first.pid}")
        for argv in (["train", "vae", *tiny, "--epochs", "2", "--overwrite"], ["train", "vae", *tiny, "--resume"]):
            one_line_error(*run_cli(*argv)[::2], f"PID {first.pid}")
        code, _, err = run_cli("sample", run, "-n", "4", "-o", tmp_path / "s.npy")  # readers are not blocked
        assert code == 0, err
        assert first.poll() is None, "the first trainer should still be running"
        assert read_config(run)[0].epochs == 100000
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)

    assert (run / LOCK_FILE).read_text().strip() == str(first.pid)  # left behind by the killed process...
    code, _, err = run_cli("train", "vae", *tiny, "--epochs", "1", "--overwrite")  # ...and released by the OS
    assert code == 0, err
    assert len(read_metrics(run)) == 1 and not (run / LOCK_FILE).exists()


def test_fit_prior_and_lab_hold_the_lock(finished_vae, tmp_path, data_dir):
    from genlab.lock import RunFolderLock

    run = Path(shutil.copytree(finished_vae, tmp_path / "vae"))
    with RunFolderLock(run):
        one_line_error(*run_cli("fit-prior", run, "--components", "2")[::2], f"PID {os.getpid()}")
    lab = tmp_path / "lab"
    lab.mkdir()
    with RunFolderLock(lab):
        one_line_error(*run_cli("lab", "--out", lab, "--models", "ae", "--epochs", "1", "--data", data_dir, "--quiet")[::2], f"PID {os.getpid()}")
    assert [p.name for p in lab.iterdir()] == []


def test_a_lock_file_linked_elsewhere_is_never_followed(finished_vae, tmp_path):
    from genlab.lock import LOCK_FILE

    run = Path(shutil.copytree(finished_vae, tmp_path / "vae"))
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (run / LOCK_FILE).symlink_to(precious)
    one_line_error(*run_cli("resume", run, "--epochs", "2", "--quiet")[::2], "cannot write to", LOCK_FILE)
    assert precious.read_text() == "keep me"


# --------------------------------------------------------------------------------------------
# The next ones: every other file genlab reads back, as an attacker would write it
# --------------------------------------------------------------------------------------------

DEEP_JSON = "[" * 100_000 + "]" * 100_000  # the parser's recursion limit: a RecursionError, not a JSONDecodeError


@pytest.mark.parametrize(
    "file, text, command, fragment",
    [
        (CONFIG_FILE, DEEP_JSON, "sample", "nested too deeply"),
        (METRICS_FILE, DEEP_JSON + "\n", "plot", "line 1 is not valid JSON"),
        (METRICS_FILE, '{"epoch": 1, "train": 5}\n', "plot", "'train' must be an object of numbers"),
        ("eval.json", DEEP_JSON, "report", "nested too deeply"),
        ("eval.json", '{"metrics": {"fid": 1.0}, "warnings": 5}', "report", "'warnings' must be a list of strings"),
    ],
)
def test_hostile_json_is_one_line(file, text, command, fragment, someones_run, tmp_path):
    (someones_run / file).write_text(text)
    target = someones_run.parent if command == "report" else someones_run
    argv = [command, target] + (["-o", tmp_path / "s.npy"] if command == "sample" else [])
    one_line_error(*run_cli(*argv)[::2], file, fragment)


def test_hostile_config_values_are_one_line(someones_run, tmp_path):
    edit_config(someones_run, "train", seed=10**30)  # torch.manual_seed overflowed with a traceback
    one_line_error(*run_cli("resume", someones_run, "--epochs", "2", "--quiet")[::2], "seed must fit in 64 bits")
    edit_config(someones_run, "train", seed=0)
    one_line_error(*run_cli("sample", someones_run, "--seed", 2**64, "-o", tmp_path / "s.npy")[::2], "seed must fit")
    for option in ("--n-samples", "--iw-samples"):  # both were allocated (or looped over) at once
        one_line_error(*run_cli("eval", someones_run, option, 10**12, "--no-save")[::2], "is more than the 100,000")
    edit_config(someones_run, "model", latent_dim=10**30)
    one_line_error(*run_cli("sample", someones_run, "-o", tmp_path / "s.npy")[::2], "does not build a 'vae' model")


def test_figures_linked_elsewhere_are_never_written_through(someones_run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "samples.png").write_text("my file")
    shutil.rmtree(someones_run / "figures", ignore_errors=True)
    (someones_run / "figures").symlink_to(mine)
    one_line_error(*run_cli("plot", someones_run)[::2], "is a link to")
    assert (mine / "samples.png").read_text() == "my file"


def test_odd_names_stay_one_line_and_out_of_the_report_html(finished_vae, tmp_path):
    one_line_error(*run_cli("sample", tmp_path / "no\nsuch", "-o", tmp_path / "s.npy")[::2], "no\\nsuch")
    lab = tmp_path / "lab"
    Path(shutil.copytree(finished_vae, lab / "<img src=x onerror=alert(1)>"))
    code, _, err = run_cli("report", lab)
    assert code == 0, err
    assert "<img src=x" not in (lab / "report.html").read_text()
