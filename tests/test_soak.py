"""Long runs: train, kill, resume, again and again.

Small enough for CI (tens of seconds), marked slow. Two soaks:
  - in process, a GAN stopped after a random number of steps (`fit_killed_after`, which drops
    whatever was not checkpointed) and resumed, many times: the log must stay gapless after
    every stop, and the finished weights must equal an uninterrupted run's, bit for bit;
  - real processes, `genlab train ... --resume` killed with SIGKILL at random moments — during
    start-up, training, checkpoint or log writes, evaluation — until it finishes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import QUIET, REPO_ROOT, fit_killed_after, tiny_train_config, write_idx_folder
from genlab import MODELS, fit
from genlab.runs import CHECKPOINT_FILE, CONFIG_FILE, WEIGHTS_FILE, load_tensors, read_metrics

pytestmark = pytest.mark.slow




def epochs_logged(run_dir: Path) -> list[int]:
    return [row["epoch"] for row in read_metrics(run_dir)]


def test_soak_in_process_stop_and_resume(tmp_path, tiny_bundle):
    epochs, rng = 8, random.Random(4)
    model_config = MODELS["gan"].config_class(hidden_dims=(48,))
    cfg = lambda: tiny_train_config("gan", epochs=epochs, batch_size=16, checkpoint_every=5)  # noqa: E731 - 13 steps per epoch
    reference = fit(cfg(), model_config, tmp_path / "reference", data=tiny_bundle, **QUIET)

    run_dir, stops = tmp_path / "soak", 0
    fit_killed_after(rng.randint(1, 20), cfg(), model_config, run_dir, data=tiny_bundle, **QUIET)
    while not (run_dir / WEIGHTS_FILE).exists():
        stops += 1
        logged = epochs_logged(run_dir)
        assert logged == list(range(1, len(logged) + 1)), f"gap or duplicate after stop {stops}: {logged}"
        fit_killed_after(rng.randint(1, 20), cfg(), None, run_dir, resume=True, data=tiny_bundle, **QUIET)
        assert stops < 200
    assert stops >= 8  # it really was stopped many times
    assert epochs_logged(run_dir) == list(range(1, epochs + 1))
    mine, theirs = load_tensors(run_dir / WEIGHTS_FILE)[0], load_tensors(reference / WEIGHTS_FILE)[0]
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


MAX_KILLS = 5


def _checkpoint_step(run_dir: Path) -> int:
    if not (run_dir / CHECKPOINT_FILE).is_file():
        return -1
    return load_tensors(run_dir / CHECKPOINT_FILE)[1]["loop"]["step"]


def _wait_for_progress(run_dir: Path, child: subprocess.Popen, last: int) -> None:
    """Until the run has checkpointed past `last` (or ended by itself)."""
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        try:
            if _checkpoint_step(run_dir) > last:
                return
        except Exception:  # noqa: BLE001 - read while being replaced: look again
            pass
        time.sleep(0.02)


def test_soak_sigkill_at_random_moments(tmp_path):
    data_dir = write_idx_folder(tmp_path / "idx")
    # Enough epochs that five kills land before the run can finish on a fast, idle machine.
    run_dir, epochs = tmp_path / "vae", 30
    args = [
        sys.executable, "-m", "genlab.cli", "train", "vae", "--data", str(data_dir), "--out", str(run_dir),
        "--epochs", str(epochs), "--batch-size", "16", "--hidden-dims", "48", "--device", "cpu",
        "--checkpoint-every", "3", "--quiet", "--no-figures", "--resume",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT / "src"))
    rng, kills, seen = random.Random(7), 0, []
    while True:
        child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if kills < MAX_KILLS:
            if kills == 1:  # once during start-up: imports, data, before or while the folder is made
                time.sleep(rng.uniform(0.2, 2.0))
            else:  # otherwise once it has moved on, a random moment later (mid-step, mid-write, mid-eval)
                _wait_for_progress(run_dir, child, last=seen[-1] if seen else -1)
                time.sleep(rng.uniform(0.0, 0.3))
            child.send_signal(signal.SIGKILL)
            kills += 1
        out, err = child.communicate(timeout=300)
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL, f"the run failed by itself:\n{out}\n{err}"
        if (run_dir / CONFIG_FILE).is_file():
            logged = epochs_logged(run_dir)
            assert logged == list(range(1, len(logged) + 1)), f"gap or duplicate after kill {kills}: {logged}"
        seen.append(_checkpoint_step(run_dir))  # always whole and readable
    print(f"{kills} kills; checkpoint step after each: {seen}")
    assert kills == MAX_KILLS and len({s for s in seen if s >= 0}) >= MAX_KILLS - 2  # moving on between kills
    assert epochs_logged(run_dir) == list(range(1, epochs + 1))
    assert (run_dir / WEIGHTS_FILE).is_file()
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
