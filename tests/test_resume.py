"""Crash and resume, atomic writes and reproducibility.

A run stopped at any step — in process (`fit_killed_after(k, ...)`, which drops whatever was
not checkpointed, like a kill) or for real (SIGKILL, Ctrl-C to a `genlab` subprocess) — resumes
from its last checkpoint and ends, on CPU, with weights bitwise identical to a run that was
never stopped, and a metrics log with every epoch exactly once.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab.train as train_module
import genlab.utils as utils_module
from conftest import QUIET, REPO_ROOT, assert_same_weights, fit_killed_after, tiny_train_config, without_timing, write_idx_folder
from genlab import GenlabError, MODELS, fit, load_run
from genlab.cli import main
from genlab.runs import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, load_tensors, read_metrics
from genlab.utils import atomic_write_bytes

EPOCHS, BATCH = 3, 32  # 200 tiny digits: 7 batches per epoch, 21 steps in all




def small_model(name: str):
    """A narrow network: bitwise identity does not depend on size, and tests stay fast."""
    return MODELS[name].config_class(hidden_dims=(48,))


def train_config(name: str, data_dir=None, **overrides):
    return tiny_train_config(name, data_dir, epochs=EPOCHS, batch_size=BATCH, **overrides)


def assert_complete_log(run_dir: Path, epochs: int = EPOCHS) -> list[dict]:
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1)), "metrics.jsonl has gaps or duplicates"
    return rows


_references: dict[str, Path] = {}


@pytest.fixture
def reference(tmp_path_factory, tiny_bundle):
    """The uninterrupted run of a model (on the session's tiny data), trained once per session."""

    def get(name: str, **overrides) -> Path:
        key = f"{name}{sorted(overrides.items())}"
        if key not in _references:
            run_dir = tmp_path_factory.mktemp(f"reference-{name}") / name
            _references[key] = fit(train_config(name, **overrides), small_model(name), run_dir, data=tiny_bundle, **QUIET)
        return _references[key]

    return get


# --------------------------------------------------------------------------------------------
# In process: stop after k steps, resume, compare bitwise
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, checkpoint_every, stops",
    [
        ("ae", 0, [10]),  # stopped mid-epoch 2: resumes from the end of epoch 1
        ("ae", 4, [10]),  # resumes mid-epoch 2, from the step-8 checkpoint
        ("vae", 0, [10]),
        ("vae", 3, [5, 9]),  # stopped twice, each time mid-epoch
        ("gan", 0, [10]),
        ("gan", 4, [10, 1]),  # GAN: two optimizers, the noise RNG and the shuffle RNG restored
        ("vae+binarize", 3, [5]),  # each step's binarisation draw continues where it stopped
    ],
)
def test_stopped_and_resumed_run_is_bitwise_identical(name, checkpoint_every, stops, tmp_path, tiny_bundle, reference):
    name, _, option = name.partition("+")
    run_dir = tmp_path / name
    cfg = dict(checkpoint_every=checkpoint_every, **({option: True} if option else {}))
    fit_killed_after(stops[0], train_config(name, **cfg), small_model(name), run_dir, data=tiny_bundle, **QUIET)
    assert not (run_dir / WEIGHTS_FILE).exists()  # it really stopped before the end
    for k in stops[1:]:
        fit_killed_after(k, train_config(name, **cfg), None, run_dir, resume=True, data=tiny_bundle, **QUIET)
        assert not (run_dir / WEIGHTS_FILE).exists()
    lines = []
    fit(train_config(name, **cfg), None, run_dir, resume=True, data=tiny_bundle, progress=False, log=lines.append)
    assert any("resuming" in line for line in lines)

    ref = reference(name, **({option: True} if option else {}))
    assert_same_weights(run_dir, ref)
    # the metrics log is the uninterrupted run's, value for value
    assert without_timing(assert_complete_log(run_dir)) == without_timing(read_metrics(ref))
    # and so are the optimizers' moments in the final checkpoint
    mine, theirs = load_tensors(run_dir / CHECKPOINT_FILE)[0], load_tensors(ref / CHECKPOINT_FILE)[0]
    optim_keys = [k for k in theirs if k.startswith("optim.")]
    assert optim_keys and all(torch.equal(mine[k], theirs[k]) for k in optim_keys)


@pytest.mark.parametrize("name, weight", [("ae", 0.3), ("vae", 100.0)])
def test_run_with_the_neighbor_term_resumes_bitwise_identical(name, weight, tmp_path, tiny_bundle):
    """The term draws its digit pairs from the global RNG, which the checkpoint restores; its
    graph is rebuilt on resume from the same training digits."""
    model = lambda: dataclasses.replace(small_model(name), neighbor_weight=weight)  # noqa: E731 (fit fills it in)
    ref = fit(train_config(name), model(), tmp_path / "reference", data=tiny_bundle, **QUIET)
    run_dir = tmp_path / name
    fit_killed_after(11, train_config(name, checkpoint_every=3), model(), run_dir, data=tiny_bundle, **QUIET)
    assert not (run_dir / WEIGHTS_FILE).exists()
    fit(train_config(name, checkpoint_every=3), None, run_dir, resume=True, data=tiny_bundle, **QUIET)
    assert_same_weights(run_dir, ref)
    assert without_timing(assert_complete_log(run_dir)) == without_timing(read_metrics(ref))


def test_mid_epoch_checkpoint_is_written_every_n_steps(tmp_path, tiny_bundle):
    run_dir = fit_killed_after(9, train_config("ae", checkpoint_every=4), small_model("ae"), tmp_path / "ae", data=tiny_bundle, **QUIET)
    loop = load_tensors(run_dir / CHECKPOINT_FILE)[1]["loop"]
    assert (loop["epoch"], loop["step"], loop["step_in_epoch"]) == (1, 8, 1)  # step 8 = epoch 2, batch 1


def test_kill_between_checkpoint_and_metrics_write_leaves_no_gap(tmp_path, tiny_bundle, reference, monkeypatch):
    """The checkpoint is written before metrics.jsonl; a kill in between must not lose a row."""
    calls = []
    real_write_metrics = train_module.write_metrics

    def killed_at_second_epoch(run_dir, rows):
        calls.append(len(rows))
        if len(rows) == 2:
            raise SystemExit("killed")  # the process dies right after the epoch-2 checkpoint
        real_write_metrics(run_dir, rows)

    monkeypatch.setattr(train_module, "write_metrics", killed_at_second_epoch)
    with pytest.raises(SystemExit):
        fit(train_config("vae"), small_model("vae"), tmp_path / "vae", data=tiny_bundle, **QUIET)
    monkeypatch.setattr(train_module, "write_metrics", real_write_metrics)
    assert len(read_metrics(tmp_path / "vae")) == 1  # the log lags the checkpoint by one row
    assert load_tensors(tmp_path / "vae" / CHECKPOINT_FILE)[1]["loop"]["epoch"] == 2

    fit(train_config("vae"), None, tmp_path / "vae", resume=True, data=tiny_bundle, **QUIET)
    assert without_timing(assert_complete_log(tmp_path / "vae")) == without_timing(read_metrics(reference("vae")))
    assert_same_weights(tmp_path / "vae", reference("vae"))


def test_rows_written_after_the_checkpoint_are_not_duplicated(tmp_path, tiny_bundle):
    run_dir = fit_killed_after(16, train_config("ae", checkpoint_every=3), small_model("ae"), tmp_path / "ae", data=tiny_bundle, **QUIET)
    # Last checkpoint: step 15, epoch 2 done. A log with a row the checkpoint does not know:
    rows = read_metrics(run_dir)
    assert len(rows) == 2
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows + [dict(rows[-1], epoch=3)]))
    fit(train_config("ae", checkpoint_every=3), None, run_dir, resume=True, data=tiny_bundle, **QUIET)
    assert_complete_log(run_dir)


# --------------------------------------------------------------------------------------------
# Atomic writes: an interrupted write never leaves a half-written file
# --------------------------------------------------------------------------------------------


def _tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(utils_module.TMP_SUFFIX))


@pytest.mark.parametrize("fail_in", ["fsync", "replace", "write"])
def test_failed_write_keeps_the_old_file_whole(fail_in, tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.safetensors"
    target.write_bytes(b"old complete contents")

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fail_in == "write":  # the data itself cannot be written: fail the first write()
        real_fdopen = os.fdopen

        def fdopen(fd, *args, **kwargs):
            f = real_fdopen(fd, *args, **kwargs)
            f.write = fail
            return f

        monkeypatch.setattr(utils_module.os, "fdopen", fdopen)
    else:
        monkeypatch.setattr(utils_module.os, fail_in, fail)
    with pytest.raises(GenlabError, match=r"cannot write .*checkpoint.safetensors: No space left on device \(the previous version is kept\)"):
        atomic_write_bytes(target, b"new contents " * 1000)
    assert target.read_bytes() == b"old complete contents"
    assert _tmp_files(tmp_path) == []


def test_interrupt_during_a_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.jsonl"
    target.write_text('{"epoch": 1}\n')

    def ctrl_c(fd):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(utils_module.os, "fsync", ctrl_c)  # after the data went to the temp file
        with pytest.raises(KeyboardInterrupt):
            atomic_write_bytes(target, b'{"epoch": 1}\n{"epoch": 2}\n')
    assert target.read_text() == '{"epoch": 1}\n'
    assert _tmp_files(tmp_path) == []


def test_checkpoint_failing_mid_run_keeps_the_previous_one_and_resume_finishes(tmp_path, tiny_bundle, reference):
    run_dir = tmp_path / "gan"
    real_replace = os.replace
    checkpoint_writes = []

    def replace(src, dst):
        if Path(dst).name == CHECKPOINT_FILE:
            checkpoint_writes.append(dst)
            if len(checkpoint_writes) == 3:  # steps 5, 7 (end of epoch 1), then 10 fails
                raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(GenlabError, match="cannot write"):
        mp.setattr(utils_module.os, "replace", replace)
        fit(train_config("gan", checkpoint_every=5), small_model("gan"), run_dir, data=tiny_bundle, **QUIET)
    # the step-7 checkpoint is intact
    meta = load_tensors(run_dir / CHECKPOINT_FILE)[1]
    assert (meta["loop"]["epoch"], meta["loop"]["step"]) == (1, 7)
    assert _tmp_files(run_dir) == []
    fit(train_config("gan", checkpoint_every=5), None, run_dir, resume=True, data=tiny_bundle, **QUIET)
    assert_complete_log(run_dir)


# --------------------------------------------------------------------------------------------
# Real processes: SIGKILL and Ctrl-C (SIGINT) to `genlab train`
# --------------------------------------------------------------------------------------------

# The real CLI in a child process; each checkpoint write is followed by a short pause, so the
# parent can observe the run mid-way and kill it while it is still training.
CHILD = """
import sys, time
import genlab.train as train
pause = float(sys.argv[1])
real_save = train._save_checkpoint
def save_then_pause(*args, **kwargs):
    real_save(*args, **kwargs)
    time.sleep(pause)
train._save_checkpoint = save_then_pause
from genlab.cli import main
sys.exit(main(sys.argv[2:]))
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT / "src"))
    env.pop("GENLAB_DATA", None)
    return env


def start_child(args: list[str], pause: float = 0.3) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(pause), *args],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def run_genlab(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "genlab.cli", *args], env=child_env(), capture_output=True, text=True, timeout=timeout
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the child ended (status {process.returncode}) before it could be stopped:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the child made no progress")
        time.sleep(0.02)


def checkpoint_step(run_dir: Path) -> int:
    try:
        return load_tensors(run_dir / CHECKPOINT_FILE)[1]["loop"]["step"]
    except GenlabError:  # not there yet
        return -1


def train_args(name: str, data_dir: Path, run_dir: Path) -> list[str]:
    return [
        "train", name, "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--seed", "0", "--device", "cpu",
        "--eval-batch-size", "256", "--hidden-dims", "48", "--data", str(data_dir), "--out", str(run_dir),
        "--checkpoint-every", "4", "--quiet", "--no-figures",
    ]


@pytest.mark.slow  # two processes, each importing torch: ~10 s on a busy machine
@pytest.mark.parametrize("name, how", [("vae", "train --resume"), ("gan", "genlab resume")])
def test_sigkill_mid_run_then_resume_finishes_identically(name, how, tmp_path, session_data_dir, reference):
    run_dir = tmp_path / name
    child = start_child(train_args(name, session_data_dir, run_dir))
    wait_for(lambda: checkpoint_step(run_dir) >= 8, child)  # past epoch 1, mid epoch 2
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert not (run_dir / WEIGHTS_FILE).exists()
    killed_at = checkpoint_step(run_dir)
    assert 8 <= killed_at < EPOCHS * 7

    if how == "train --resume":
        done = run_genlab(train_args(name, session_data_dir, run_dir) + ["--resume"])
    else:
        done = run_genlab(["resume", str(run_dir), "--quiet"])
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout and "Traceback" not in done.stderr
    assert_complete_log(run_dir)
    assert_same_weights(run_dir, reference(name))


@pytest.mark.slow  # two processes, each importing torch: ~10 s on a busy machine
def test_sigkill_during_a_checkpoint_write_keeps_the_old_checkpoint(tmp_path, session_data_dir, reference):
    """Killed while the new checkpoint is half on disk: the old one is still whole."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to see which file is being written")
    run_dir = tmp_path / "ae"
    marker = tmp_path / "writing"
    # fsync is called after the data went into the temp file, before the rename: hang there
    # on the third checkpoint write, and tell the parent.
    child_code = CHILD.replace(
        "from genlab.cli import main",
        f"""import os
real_fsync, seen = os.fsync, []
def fsync(fd):
    name = os.readlink(f"/proc/self/fd/{{fd}}")
    if ".{CHECKPOINT_FILE}." in name:
        seen.append(name)
        if len(seen) == 3:
            open({str(marker)!r}, "w").write(name)
            time.sleep(600)
    real_fsync(fd)
os.fsync = fsync
from genlab.cli import main""",
    )
    child = subprocess.Popen(
        [sys.executable, "-c", child_code, "0", *train_args("ae", session_data_dir, run_dir)],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for(marker.exists, child)
    child.kill()
    child.communicate()
    half_written = Path(marker.read_text())
    assert half_written.exists()  # the temp file: the new checkpoint, never renamed
    # checkpoints at steps 4, 7 (end of epoch 1), then the step-8 one was being written
    assert checkpoint_step(run_dir) == 7
    done = run_genlab(train_args("ae", session_data_dir, run_dir) + ["--resume"])
    assert done.returncode == 0, done.stderr
    assert not half_written.exists()  # the stale temp file is cleaned up
    assert_complete_log(run_dir)
    assert_same_weights(run_dir, reference("ae"))


@pytest.mark.slow  # two processes, each importing torch: ~10 s on a busy machine
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_saves_a_checkpoint_exits_with_one_line_and_resumes(sig, tmp_path, session_data_dir, reference):
    run_dir = tmp_path / "vae"
    child = start_child(train_args("vae", session_data_dir, run_dir))
    wait_for(lambda: checkpoint_step(run_dir) >= 4, child)
    child.send_signal(sig)  # SIGINT: Ctrl-C; SIGTERM: `kill`, a scheduler or a container stopping
    out, err = child.communicate(timeout=60)
    assert child.returncode == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("genlab: error: interrupted at epoch") and f"genlab resume {run_dir}" in lines[0]
    stopped_at = checkpoint_step(run_dir)
    assert f"step {stopped_at};" in lines[0] and stopped_at >= 4  # the checkpoint written on the way out
    assert not (run_dir / WEIGHTS_FILE).exists()

    done = run_genlab(["resume", str(run_dir), "--quiet"])
    assert done.returncode == 0, done.stderr
    assert f"step {stopped_at}" in done.stdout
    assert_complete_log(run_dir)
    assert_same_weights(run_dir, reference("vae"))


# --------------------------------------------------------------------------------------------
# genlab lab: killed mid-way, resumed, report finished
# --------------------------------------------------------------------------------------------


def _small_lab_evaluation(monkeypatch) -> None:
    """The lab measures each run on 10,000 samples; 200 are plenty to exercise it here."""
    try:
        import genlab.evaluate as evaluate_module
    except ImportError:
        return
    real = evaluate_module.evaluate_run
    monkeypatch.setattr(evaluate_module, "evaluate_run", lambda *a, **k: real(*a, **dict(k, n_samples=200)))


def test_lab_killed_mid_way_resumes_and_finishes_the_report(tmp_path, monkeypatch, capsys):
    data = write_idx_folder(tmp_path / "idx", n_train=300, n_test=50)  # 3 batches of 128
    lab = tmp_path / "lab"
    args = ["lab", "--out", str(lab), "--models", "ae,vae", "--epochs", "1", "--data", str(data), "--device", "cpu", "--quiet", "--workers", "1"]  # in-process: the kill is patched in
    real_fit = train_module.fit

    def killed_in_the_vae(train_config, model_config, run_dir, **kwargs):
        if train_config.model == "vae":
            train_config.checkpoint_every = 1  # saved in its config.json, so the resume keeps it
            fit_killed_after(2, train_config, model_config, run_dir, **kwargs)
            raise SystemExit(137)  # the process dies mid-way through the second model
        return real_fit(train_config, model_config, run_dir, **kwargs)

    import genlab.lab as lab_module

    _small_lab_evaluation(monkeypatch)
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit):
        mp.setattr(lab_module, "fit", killed_in_the_vae)
        main(args)
    assert (lab / "ae" / WEIGHTS_FILE).is_file() and not (lab / "vae" / WEIGHTS_FILE).exists()
    assert not (lab / "report.html").exists()
    ae_weights = (lab / "ae" / WEIGHTS_FILE).read_bytes()

    assert main(args) == 2  # no flag: an existing lab folder is refused, not overwritten
    assert "--resume" in capsys.readouterr().err

    assert main(args + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "ae: finished run found" in out and "vae: resuming" in out and "at epoch 1, step 2" in out
    assert (lab / "ae" / WEIGHTS_FILE).read_bytes() == ae_weights  # the finished run is reused, not redone
    assert_complete_log(lab / "vae", epochs=1)
    report = (lab / "report.html").read_text()
    assert "<h2 id='ae'>" in report and "<h2 id='vae'>" in report
    assert report.count("<img") >= 8  # both models' figures, inlined


# --------------------------------------------------------------------------------------------
# Reproducible: same command and seed, same numbers, same pictures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_same_command_and_seed_give_identical_metrics_and_figures(name, tmp_path, tiny_bundle):
    from genlab import plots

    runs = [fit(train_config(name), small_model(name), tmp_path / f"run{i}", data=tiny_bundle, **QUIET) for i in range(2)]
    other = fit(train_config(name, seed=1), small_model(name), tmp_path / "seed1", data=tiny_bundle, **QUIET)
    assert without_timing(read_metrics(runs[0])) == without_timing(read_metrics(runs[1]))
    assert without_timing(read_metrics(runs[0])) != without_timing(read_metrics(other))
    assert_same_weights(*runs)

    x, y = tiny_bundle.tensors("test")
    loaded = [load_run(r) for r in (*runs, other)]
    arrays = []
    for run in loaded:
        a = {"samples": run.sample(16, seed=0).numpy()}
        if name == "vae":
            a["reconstructions"] = run.reconstruct(x[:10]).numpy()
            a["manifold"] = plots.manifold_grid(run, x, n=5)
        arrays.append(a)
    for key in arrays[0]:
        assert np.array_equal(arrays[0][key], arrays[1][key]), key
        assert not np.array_equal(arrays[0][key], arrays[2][key]), key
    # the figure files themselves, byte for byte
    pngs = [plots.make_figures(run, tiny_bundle, seed=0) for run in loaded[:2]]
    assert pngs[0].keys() == pngs[1].keys() and "samples" in pngs[0]
    for key in pngs[0]:
        assert pngs[0][key].read_bytes() == pngs[1][key].read_bytes(), key


def test_config_records_versions_device_data_and_the_resolved_config(tmp_path, tiny_data_dir):
    import platform

    import genlab
    from genlab.config import TrainConfig
    from genlab.data import load_dataset

    run_dir = fit(tiny_train_config("vae", tiny_data_dir), None, tmp_path / "vae", **QUIET)
    info = json.loads((run_dir / CONFIG_FILE).read_text())
    assert info["versions"] == {
        "genlab": genlab.__version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
    }
    assert info["device"] == "cpu"
    bundle = load_dataset("mnist", tiny_data_dir, allow_download=False)
    assert info["data"]["sha256"] == bundle.sha256 and len(bundle.sha256) == 64
    assert str(tiny_data_dir) in info["data"]["source"]
    assert (info["data"]["n_train"], info["data"]["n_test"]) == (len(bundle.train_images), len(bundle.test_images))
    # fully resolved: every field present, the family defaults filled in (no None left)
    assert set(info["train"]) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert info["train"]["lr"] == MODELS["vae"].defaults(MODELS["vae"].config_class())["lr"] and info["train"]["epochs"] == 1
    assert info["train"]["data_dir"] == str(tiny_data_dir)
    assert set(info["model"]) == {f.name for f in dataclasses.fields(MODELS["vae"].config_class)}
    assert None not in info["model"].values()  # the arch-dependent activation is filled in too
    # and the record is enough to rebuild the run
    expected = MODELS["vae"].resolved_config(MODELS["vae"].config_class())
    assert load_run(run_dir).model_config == expected and expected.activation == "relu"


# --------------------------------------------------------------------------------------------
# Killed before anything was written
# --------------------------------------------------------------------------------------------


def test_leftovers_of_a_killed_start_do_not_block_a_new_run(tmp_path, tiny_data_dir, capsys):
    """Killed while making the folder: only genlab's own probe and temp files are in it."""
    run_dir = tmp_path / "ae"
    run_dir.mkdir()
    (run_dir / ".genlab-write-test").write_bytes(b"")
    (run_dir / f".{CONFIG_FILE}.x1y2z3.tmp").write_text('{"half": ')
    args = ["train", "ae", "--data", str(tiny_data_dir), "--out", str(run_dir), "--epochs", "1", "--batch-size", "32",
            "--hidden-dims", "48", "--quiet", "--no-figures"]
    assert main(args + ["--resume"]) == 0  # nothing to resume yet: it starts
    assert "nothing to resume" in capsys.readouterr().out
    assert (run_dir / WEIGHTS_FILE).is_file()
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, CHECKPOINT_FILE, METRICS_FILE])


def test_resume_without_config_but_with_run_files_is_refused(tmp_path, tiny_data_dir, capsys):
    run_dir = tmp_path / "ae"
    run_dir.mkdir()
    (run_dir / CHECKPOINT_FILE).write_bytes(b"whatever")
    args = ["train", "ae", "--data", str(tiny_data_dir), "--out", str(run_dir), "--resume", "--quiet", "--no-figures"]
    assert main(args) == 2
    assert f"{CONFIG_FILE} is missing" in capsys.readouterr().err
    assert (run_dir / CHECKPOINT_FILE).read_bytes() == b"whatever"
