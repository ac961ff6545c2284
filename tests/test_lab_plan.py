"""The lab's plan: entries (name, model, settings, fitted prior), `--models` taking entry or
registry names, and the entries run side by side in single-thread worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import QUIET, write_idx_folder
from genlab.errors import GenlabError
from genlab.lab import DEFAULT_MODELS, LAB_ENTRIES, entry_configs, lab_entry, longest_first, run_lab
from genlab.lock import RunFolderLock
from genlab.runs import CHECKPOINT_FILE, load_run


def test_entries_split_their_settings_and_the_lab_budget_wins():
    train, model = entry_configs(LAB_ENTRIES["vae-conv16"], None, 3, None, "cpu")
    assert (train.model, train.lr, train.batch_size, train.steps, train.epochs, train.seed) == ("vae", 2e-3, 64, 2840, None, 3)
    assert (model.arch, model.latent_dim, model.recon_loss) == ("conv", 16, "bce")
    train, _ = entry_configs(LAB_ENTRIES["vae-conv16"], 2, 0, None, "cpu")
    assert (train.epochs, train.steps) == (2, None)  # --epochs replaces the entry's steps
    train, _ = entry_configs(LAB_ENTRIES["vae-conv16"], None, 0, None, "cpu", steps=7)
    assert (train.epochs, train.steps) == (None, 7)
    with pytest.raises(GenlabError, match="not both"):
        entry_configs(LAB_ENTRIES["ae"], 2, 0, None, "cpu", steps=7)
    assert entry_configs(LAB_ENTRIES["ae"], None, 0, None, "cpu")[1].neighbor_weight > 0
    assert LAB_ENTRIES["gan"].model == "scgan" and set(DEFAULT_MODELS) >= {"ae", "vae", "vae-conv16", "gan", "cgan"}


def test_a_registry_name_is_an_entry_with_the_models_defaults():
    entry = lab_entry("dcgan")
    assert (entry.name, entry.model, entry.settings, entry.fit_prior) == ("dcgan", "dcgan", {}, False)
    with pytest.raises(GenlabError, match="unknown model 'nope'"):
        lab_entry("nope")


def test_the_sampling_vae_is_scored_and_drawn_with_its_fitted_prior(tmp_path, small_evaluation):
    data = write_idx_folder(tmp_path / "idx")
    lines = []
    report = run_lab(tmp_path / "lab", ["vae-conv16", "vae"], epochs=1, data_dir=str(data), device="cpu", workers=1, log=lines.append, progress=False)
    run = tmp_path / "lab" / "vae-conv16"
    assert (run / "prior.safetensors").is_file()
    assert json.loads((run / "eval.json").read_text())["prior"].startswith("gaussian mixture")
    assert json.loads((tmp_path / "lab" / "vae" / "eval.json").read_text())["prior"] == "standard normal"
    assert any(line.startswith("vae-conv16:") and "prior: gaussian mixture" in line for line in lines)
    page = report.read_text()
    assert "that is why the lab keeps the 2-D VAE beside it" in page and "drawn from the prior: gaussian mixture" in page


def test_workers_run_the_entries_side_by_side_and_report_their_lines(tmp_path):
    data = write_idx_folder(tmp_path / "idx", n_train=64, n_test=20)
    lines = []
    run_lab(tmp_path / "lab", ["ae", "gan"], epochs=1, data_dir=str(data), device="cpu", workers=2, log=lines.append, progress=False)
    for name in ("ae", "gan"):
        assert (tmp_path / "lab" / name / "eval.json").is_file()
        assert any(line.startswith(f"{name}: training into") for line in lines)


def test_workers_take_the_longest_entries_first():
    jobs = [(lab_entry(name),) for name in ("ae", "vae-conv16", "gan", "flow", "vae")]
    assert [job[0].name for job in longest_first(jobs)] == ["flow", "gan", "vae-conv16", "ae", "vae"]


def test_workers_must_be_positive(tmp_path):
    with pytest.raises(GenlabError, match="workers"):
        run_lab(tmp_path / "lab", ["ae"], workers=0, **QUIET)


def _children(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, ...
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the worker processes in /proc")
def test_workers_checkpoint_and_stop_when_the_lab_process_is_killed_alone(tmp_path):
    data = write_idx_folder(tmp_path / "idx", n_train=64, n_test=20)
    lab_dir = tmp_path / "lab"
    command = [sys.executable, "-m", "genlab", "lab", "--models", "ae,vae", "--epochs", "100000", "--workers", "2"]
    lab = subprocess.Popen([*command, "--out", str(lab_dir), "--data", str(data), "--device", "cpu", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not all((lab_dir / name / CHECKPOINT_FILE).is_file() for name in ("ae", "vae")):
            assert lab.poll() is None and time.monotonic() < deadline, "the lab's runs never checkpointed"
            time.sleep(0.2)
        workers = _children(lab.pid)
        assert len(workers) >= 2
        lab.kill()  # SIGKILL to the lab alone: it cannot pass anything on to its workers
        lab.wait()
        deadline = time.monotonic() + 60  # 100,000 epochs: a worker still alive here would train for hours
        while any(map(_alive, workers)):
            assert time.monotonic() < deadline, "the lab's workers outlived it"
            time.sleep(0.2)
        for name in ("ae", "vae"):
            with RunFolderLock(lab_dir / name):  # the workers' locks are free
                assert load_run(lab_dir / name, weights="checkpoint").train_config.epochs == 100000
    finally:
        lab.kill()
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)
