"""genlab where its users are: any OS, any device, and the smaller promises found by trying.

- without the Unix-only modules (fcntl, resource, termios made unimportable, as on Windows):
  import, a training run, the run-folder lock and a two-worker lab under `spawn` still work;
- the lock file keeps its holder's PID readable beside the locked byte;
- choice fields of a saved config.json are validated when it is read (one line, not a KeyError);
- `genlab resume RUN --device D`: bitwise on the same device, a CUDA run continued on the CPU,
  and (on a CUDA machine) a CPU run continued on the GPU and back;
- `genlab classifier train` never writes over the shipped classifier unless told to.
Ctrl-C's exit status (130, after the checkpoint) is checked on a real process in test_resume.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import QUIET, REPO_ROOT, assert_one_line_error, assert_same_weights, edit_config, fit_killed_after, run_cli, tiny_train_config, write_idx_folder
from genlab import MODELS, fit
from genlab.errors import RunFolderError
from genlab.lock import LOCK_FILE, RunFolderLock
from genlab.runs import CHECKPOINT_FILE, CONFIG_FILE, WEIGHTS_FILE, load_tensors, save_tensors

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# --------------------------------------------------------------------------------------------
# Without the Unix-only modules
# --------------------------------------------------------------------------------------------

UNIX_ONLY = ("fcntl", "resource", "termios")

# Put first on PYTHONPATH, so every Python process of the test (the lab's spawned workers too)
# starts with these modules unimportable, as on Windows.
BLOCKER = f"""
import sys

BLOCKED = {UNIX_ONLY!r}


class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (made unimportable by the test)")
        return None


for _name in BLOCKED:
    sys.modules.pop(_name, None)
sys.meta_path.insert(0, _Blocked())


def unix_modules_importable():
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return False
    return True
"""

WITHOUT_UNIX = """
import os, sys
from multiprocessing import get_context
from pathlib import Path

import sitecustomize
assert not sitecustomize.unix_modules_importable(), "the blocker is not active"
import genlab, genlab.cli, genlab.distributed, genlab.evaluate, genlab.explore, genlab.lab, genlab.plots, genlab.prior, genlab.report, genlab.train
assert not set(sitecustomize.BLOCKED) & set(sys.modules), "a Unix-only module was imported"

data, out = sys.argv[1], Path(sys.argv[2])
from genlab.cli import main
assert main(["train", "ae", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--quiet", "--no-figures", "--data", data, "--out", str(out / "ae")]) == 0

from genlab.lock import LOCK_FILE, RunFolderLock
with RunFolderLock(out / "ae"):
    assert (out / "ae" / LOCK_FILE).read_text().split() == [str(os.getpid())]
assert not (out / "ae" / LOCK_FILE).exists()

# The lab's workers are started with spawn, as on macOS and Windows: each imports genlab afresh.
with get_context("spawn").Pool(1) as pool:
    assert pool.apply(sitecustomize.unix_modules_importable) is False, "a spawned worker can import fcntl"
assert main(["lab", "--models", "ae,gan", "--epochs", "1", "--workers", "2", "--device", "cpu", "--quiet", "--data", data, "--out", str(out / "lab")]) == 0
assert (out / "lab" / "report.html").is_file() and (out / "lab" / "gan" / "eval.json").is_file()
print("ok")
"""


@pytest.mark.slow  # a subprocess importing torch, then a two-worker lab: ~30 s on a busy machine
def test_import_train_lock_and_a_spawned_lab_work_without_unix_only_modules(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    data = write_idx_folder(tmp_path / "idx", n_train=64, n_test=20)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO_ROOT / "src")]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_UNIX, str(data), str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------------------------
# The lock file
# --------------------------------------------------------------------------------------------


def test_the_lock_keeps_its_holders_pid_readable_beside_the_locked_byte(tmp_path):
    with RunFolderLock(tmp_path):
        # Windows locks byte 0 for real, so the PID is written after it
        assert (tmp_path / LOCK_FILE).read_bytes() == f"\n{os.getpid()}\n".encode()
        with pytest.raises(RunFolderError, match=f"being written by another genlab process \\(PID {os.getpid()}\\)"):
            RunFolderLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_FILE).exists()
    with RunFolderLock(tmp_path):  # free again
        pass


# --------------------------------------------------------------------------------------------
# A run folder to resume: trained on the CPU, a VAE (its noise makes the RNG states matter)
# --------------------------------------------------------------------------------------------

EPOCHS = 2


def small_vae():
    return MODELS["vae"].config_class(hidden_dims=(32,))


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    return write_idx_folder(tmp_path_factory.mktemp("portable-idx"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, idx_dir) -> Path:
    return fit(tiny_train_config("vae", idx_dir, epochs=EPOCHS), small_vae(), tmp_path_factory.mktemp("portable") / "vae", **QUIET)


@pytest.fixture
def stopped(tmp_path, idx_dir) -> Path:
    """The same run, stopped mid-way through epoch 1 (checkpointed at step 3): nothing final yet."""
    config = tiny_train_config("vae", idx_dir, epochs=EPOCHS, checkpoint_every=3)
    run = fit_killed_after(5, config, small_vae(), tmp_path / "vae", **QUIET)
    assert not (run / WEIGHTS_FILE).exists()
    return run


# --------------------------------------------------------------------------------------------
# Choice fields, validated when a config is read
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "section, field, value",
    [("train", "precision", "fp8"), ("model", "arch", "transformer"), ("model", "recon_loss", "l1"), ("model", "activation", "gelu")],
)
def test_a_saved_config_with_an_unknown_choice_is_one_line(section, field, value, stopped, tmp_path):
    edit_config(stopped, section, **{field: value})
    before = (stopped / CHECKPOINT_FILE).read_bytes()
    assert_one_line_error(run_cli("resume", stopped, "--quiet"), f"{field} must be one of", f"'{value}'")
    assert_one_line_error(run_cli("sample", stopped, "-n", "4", "-o", tmp_path / "s.npy"), f"{field} must be one of")
    assert (stopped / CHECKPOINT_FILE).read_bytes() == before  # nothing written


# --------------------------------------------------------------------------------------------
# genlab resume RUN --device D
# --------------------------------------------------------------------------------------------


def test_resume_on_the_same_device_is_bitwise(stopped, uninterrupted):
    code, out, err = run_cli("resume", stopped, "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "resuming" in out
    assert_same_weights(stopped, uninterrupted)


@pytest.mark.parametrize("device", ["gpu0", "meta", "cuda:x"])
def test_resume_on_an_unknown_device_is_one_line(device, stopped):
    config = (stopped / CONFIG_FILE).read_text()
    assert_one_line_error(run_cli("resume", stopped, "--device", device, "--quiet"), "unknown device", device)
    assert (stopped / CONFIG_FILE).read_text() == config


@pytest.mark.skipif(torch.cuda.is_available(), reason="shows a CUDA run on a machine without CUDA")
def test_a_cuda_run_resumes_on_the_cpu_and_says_so_in_its_config(stopped):
    # As a run trained on a GPU left it: its config names CUDA and its checkpoint holds the GPU's RNG state.
    edit_config(stopped, "train", device="cuda")
    tensors, meta = load_tensors(stopped / CHECKPOINT_FILE)
    save_tensors(stopped / CHECKPOINT_FILE, {**tensors, "rng.cuda": torch.zeros(16, dtype=torch.uint8)}, meta)

    assert_one_line_error(run_cli("resume", stopped, "--quiet"), "CUDA is not available here", "--device cpu")
    code, _, err = run_cli("resume", stopped, "--device", "cpu", "--quiet")
    assert code == 0, err
    info = json.loads((stopped / CONFIG_FILE).read_text())
    assert info["train"]["device"] == "cpu" and info["device"] == "cpu"  # the next resume needs no --device
    code, _, err = run_cli("resume", stopped, "--epochs", str(EPOCHS + 1), "--quiet")
    assert code == 0, err


@needs_cuda
def test_a_cpu_run_resumes_on_cuda_and_back(stopped, uninterrupted):
    """On a GPU: CPU -> CUDA -> CPU, the checkpoint's tensors moved each time; the weights stay
    close to the CPU-only run's (not bitwise: another device sums in another order)."""
    code, _, err = run_cli("resume", stopped, "--device", "cuda", "--epochs", "1", "--quiet")
    assert code == 0, err
    assert json.loads((stopped / CONFIG_FILE).read_text())["device"].startswith("cuda")
    assert "rng.cuda" in load_tensors(stopped / CHECKPOINT_FILE)[0]
    code, _, err = run_cli("resume", stopped, "--device", "cpu", "--epochs", str(EPOCHS), "--quiet")
    assert code == 0, err
    wa, wb = load_tensors(stopped / WEIGHTS_FILE)[0], load_tensors(uninterrupted / WEIGHTS_FILE)[0]
    assert all(torch.isfinite(wa[k]).all() for k in wa) and wa.keys() == wb.keys()


# --------------------------------------------------------------------------------------------
# genlab classifier train: never over the shipped classifier unless asked
# --------------------------------------------------------------------------------------------


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped classifier standing in for it, so --replace-shipped can be tried."""
    import genlab.classifier as classifier

    real = classifier.default_path()
    copy = Path(shutil.copytree(real.parent, tmp_path / "package-assets")) / real.name
    monkeypatch.setattr(classifier, "default_path", lambda: copy)
    return copy


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_classifier_train_writes_where_the_user_says_and_never_over_the_shipped_one(shipped, tmp_path, monkeypatch, idx_dir):
    quick = ["--epochs", "1", "--data", idx_dir, "--quiet"]
    before = digest(shipped)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("classifier", "train", *quick)
    assert code == 0, err
    assert (tmp_path / "mnist_classifier.safetensors").is_file() and (tmp_path / "mnist_classifier.json").is_file()
    code, _, err = run_cli("classifier", "train", *quick, "-o", tmp_path / "mine.safetensors")
    assert code == 0, err
    assert (tmp_path / "mine.json").is_file()

    assert_one_line_error(run_cli("classifier", "train", *quick, "-o", shipped), "shipped with genlab", "--replace-shipped")
    linked = tmp_path / "link.safetensors"
    linked.symlink_to(shipped)
    assert_one_line_error(run_cli("classifier", "train", *quick, "-o", linked), "shipped with genlab")
    assert_one_line_error(run_cli("classifier", "train", *quick, "-o", tmp_path / "x.safetensors", "--replace-shipped"), "give one of them")
    assert_one_line_error(run_cli("classifier", "train", *quick, "-o", tmp_path / "x.pt"), "must end in .safetensors")
    assert digest(shipped) == before

    code, _, err = run_cli("classifier", "train", *quick, "--replace-shipped")
    assert code == 0, err
    assert digest(shipped) != before
    assert json.loads(shipped.with_suffix(".json").read_text())["config"]["epochs"] == 1


def test_classifier_train_help_names_the_output_and_the_flag():
    code, out, _ = run_cli("classifier", "train", "--help")
    assert code == 0 and "-o PATH" in out and "--replace-shipped" in out


# --------------------------------------------------------------------------------------------
# CUDA paths, read on the CPU (benchmarks/README.md, "GPU: not yet run")
# --------------------------------------------------------------------------------------------


def test_the_gradient_penalty_is_float32_under_autocast():
    """WGAN-GP's inner gradient is outside fp16's loss scaler: under bf16/fp16 autocast it is
    computed in float32, so the penalty is the fp32 one (autocast to bf16 here, on the CPU)."""
    from genlab.models.wgan_gp import WGANGP, WGANGPConfig, gradient_penalty

    torch.manual_seed(0)
    model = WGANGP(WGANGPConfig())
    real, eps = torch.rand(8, 1, 28, 28), torch.rand(8)
    fake = torch.rand(8, 1, 28, 28).bfloat16().float()  # as G's output under autocast: bf16 values
    expected = gradient_penalty(model.critic, real, fake, eps)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gradient_penalty(model.critic, real, fake.bfloat16(), eps)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    got.backward()  # and it still trains the critic
    assert all(p.grad is not None for p in model.phase_parameters("critic"))


def test_the_gpu_check_refuses_to_run_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: benchmarks/gpu_check.py would run")
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("gpu_check: error: CUDA is not available"), done.stderr
    assert not (tmp_path / "out").exists()
