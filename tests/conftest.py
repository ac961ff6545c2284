"""Shared fixtures: an isolated, offline environment, tiny synthetic IDX data, the real MNIST
test set when it is around, and tiny trained runs that several test files look at.

Every test runs with GENLAB_OFFLINE=1, its own empty XDG_CACHE_HOME, GENLAB_DATA unset and
urllib's `urlopen` replaced by one that refuses, so nothing touches the network or the user's
cache and every test sees the same data whatever the shell exported. Tests that want the real
MNIST test set ask for the `mnist_dir` fixture, which reads the GENLAB_DATA the session started
with (or `<repo root>/../shared/data/mnist`) and skips when the files are not there.
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# Read once, before the per-test isolation below removes it from the environment.
_SESSION_GENLAB_DATA = os.environ.get("GENLAB_DATA")
# Also set at import, for session-scoped fixtures (monkeypatch is per test) and subprocesses.
os.environ["GENLAB_OFFLINE"] = "1"
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="genlab-test-cache-")
os.environ.pop("GENLAB_DATA", None)
os.environ.setdefault("MPLBACKEND", "Agg")
# One CPU thread per process, children included: the tiny models here gain nothing from more,
# and on a shared 2-core machine oversubscribed threads made the suite ten times slower.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

N_TRAIN, N_TEST = 200, 60  # tiny: a 1-epoch run of any model takes well under a second
QUIET = dict(progress=False, log=lambda _: None)  # fit(..., **QUIET): no bar, no log lines

# What each registered model can do, written out by hand: the tests check the models' own
# capability flags against these, and the CLI, figures and metrics against the flags.
CAN_ENCODE = {"ae", "vae", "cvae", "aae"}
CAN_SAMPLE = {"vae", "cvae", "aae", "gan", "dcgan", "cgan", "scgan", "wgan_gp", "flow", "cflow"}
HAS_LIKELIHOOD = {"vae", "cvae"}
CONDITIONAL = {"cvae", "cgan", "cflow"}
ITERATIVE = {"flow", "cflow"}
HAS_DENSITY = {"flow", "cflow"}


_REAL_URLOPEN = urllib.request.urlopen  # kept for the loopback mirrors of `idx_mirror`


def _refuse_network(*args, **kwargs):
    raise OSError("network access is disabled in the test suite")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread in every test (and, by OMP_NUM_THREADS above, in subprocesses): the
    same reduction order everywhere, so bitwise comparisons across processes are fair, and no
    thread thrashing on a busy machine. Restored after a test that changes it."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("GENLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    monkeypatch.delenv("GENLAB_DATA", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", _refuse_network)


# --------------------------------------------------------------------------------------------
# Synthetic data in IDX format
# --------------------------------------------------------------------------------------------


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 28, 28) uint8 with labels 0..9 in turn: class c is a cross whose bars sit at
    row and column 4 + 2c, plus noise, so a model has something class-dependent to learn."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, 4 + 2 * c, 3:25] = 255
        images[i, 3:25, 4 + 2 * c] = 200
    return images, labels


def image_batch(n: int = 20, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """n synthetic digits as a model takes them: (n, 1, 28, 28) floats in [0, 1], (n,) labels."""
    images, labels = synthetic_digits(n, seed=seed)
    return torch.from_numpy(images).float().div(255).unsqueeze(1), torch.from_numpy(labels).long()


def input_recorder(module: torch.nn.Module) -> list[torch.Tensor]:
    """Record the first positional input of every call of `module` (what a layer was fed)."""
    seen: list[torch.Tensor] = []
    module.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    return seen


SMALL_CONV = dict(channels=(4, 8))  # conv channels small enough for a fast test


def write_idx_folder(
    folder: Path,
    train: bool = True,
    test: bool = True,
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
    compress: bool = True,
) -> Path:
    """Write the standard MNIST file names into `folder` with synthetic digits."""
    from genlab.data import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, write_idx

    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    splits = []
    if train:
        splits.append((TRAIN_IMAGES, TRAIN_LABELS, synthetic_digits(n_train, seed=1)))
    if test:
        splits.append((TEST_IMAGES, TEST_LABELS, synthetic_digits(n_test, seed=2)))
    for images_stem, labels_stem, (images, labels) in splits:
        write_idx(folder / (images_stem + suffix), images)
        write_idx(folder / (labels_stem + suffix), labels)
    return folder


@pytest.fixture
def tiny_data_dir(tmp_path) -> Path:
    """A folder with all four MNIST file names (gzipped), N_TRAIN + N_TEST synthetic digits."""
    return write_idx_folder(tmp_path / "tiny-idx")


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory) -> Path:
    """Like `tiny_data_dir`, shared by the session-scoped runs; do not modify it."""
    return write_idx_folder(tmp_path_factory.mktemp("session-idx"))


@pytest.fixture(scope="session")
def tiny_bundle(session_data_dir):
    from genlab.data import load_dataset

    return load_dataset("mnist", session_data_dir, allow_download=False)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST test set (GENLAB_DATA as the session started, else ../shared/data/mnist)."""
    candidates = [Path(_SESSION_GENLAB_DATA)] if _SESSION_GENLAB_DATA else []
    candidates.append(REPO_ROOT.parent / "shared" / "data" / "mnist")
    for folder in candidates:
        if any((folder / f"t10k-images-idx3-ubyte{s}").is_file() for s in (".gz", "")):
            return folder
    pytest.skip("the real MNIST test set is not available (set GENLAB_DATA to a folder holding t10k-*-ubyte.gz)")


# --------------------------------------------------------------------------------------------
# Tiny trained runs, one per registered model
# --------------------------------------------------------------------------------------------


def tiny_train_config(model: str, data_dir: Path | None = None, **overrides):
    from genlab import TrainConfig

    values = dict(model=model, epochs=1, batch_size=32, seed=0, device="cpu", eval_batch_size=256)
    values.update(overrides)
    return TrainConfig(data_dir=str(data_dir) if data_dir else None, **values)


def fit_killed_after(steps: int, *args, **kwargs):
    """`genlab.fit(*args, **kwargs)` ended after `steps` optimizer steps of this call, as if the
    process had been killed there: what was not checkpointed is lost."""
    import genlab.train as train

    train._kill_after_steps = steps
    try:
        return train.fit(*args, **kwargs)
    finally:
        train._kill_after_steps = None


TIMING_KEYS = ("seconds", "eval_seconds", "images_per_s")  # wall-clock: the only metrics fields two runs may differ in


def without_timing(rows: list[dict]) -> list[dict]:
    """Metrics rows without their wall-clock fields, to compare two runs' logs."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """A run folder's model.safetensors tensors."""
    from genlab.runs import WEIGHTS_FILE, load_tensors

    return load_tensors(run_dir / WEIGHTS_FILE)[0]


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str = "tensors") -> None:
    """The same names, each bitwise equal."""
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{what} differ: {different}"


def assert_same_weights(a: Path, b: Path) -> None:
    """Two run folders' final weights are bitwise equal (a resumed run and the uninterrupted one)."""
    assert_same_tensors(weights(a), weights(b), "weights")


TINY_CLI_OPTIONS = ["--epochs", "1", "--batch-size", "32", "--device", "cpu", "--quiet"]


def edit_config(run_dir: Path, section: str, **values) -> None:
    """Change fields of a run folder's config.json section ("train", "model") as someone might."""
    import json

    config = run_dir / "config.json"
    info = json.loads(config.read_text())
    info[section].update(values)
    config.write_text(json.dumps(info))


def run_cli(*argv) -> tuple[int, str, str]:
    """Run `genlab argv...` in-process; (exit status, stdout, stderr), argparse exits included."""
    import contextlib
    import io

    from genlab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(result: tuple[int, str, str], *fragments: str) -> str:
    """`result` of `run_cli` is a user error: exit status 2 and one line on stderr, starting with
    'genlab', no traceback, holding every fragment. Returns the line."""
    code, _, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("genlab") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def small_evaluation(monkeypatch):
    """10,000 samples per run, a flow's FID curve on 1,000 and its bits/dim of 100 digits are the
    lab's; 200 samples, a curve of 20 and 4 digits exercise the same code (in this process: a lab
    with one worker)."""
    import genlab.evaluate as evaluate_module

    real = evaluate_module.evaluate_run
    small = dict(n_samples=200, nfe_samples=20, density_digits=4)
    monkeypatch.setattr(evaluate_module, "evaluate_run", lambda *a, **k: real(*a, **dict(k, **small)))


@pytest.fixture(scope="session")
def tiny_cli_runs(tmp_path_factory, session_data_dir) -> dict[str, tuple[Path, tuple[int, str, str]]]:
    """name -> (run folder, (status, stdout, stderr) of `genlab train NAME --epochs 1 ...`) for
    every registered model, trained once per session on the tiny data (recorded in its config,
    so `genlab encode` etc. find the same data), figures included."""
    from genlab import MODELS

    root = tmp_path_factory.mktemp("tiny-runs")
    return {
        name: (root / name, run_cli("train", name, *TINY_CLI_OPTIONS, "--data", session_data_dir, "--out", root / name))
        for name in sorted(MODELS)
    }


@pytest.fixture(scope="session")
def tiny_runs(tiny_cli_runs) -> dict[str, Path]:
    """name -> run folder of `tiny_cli_runs`."""
    return _RunFolders(tiny_cli_runs)


class _RunFolders(dict):
    """A dict of run folders; looking up a model whose training failed fails that test, with
    the command's error, instead of an unhelpful missing-file error later."""

    def __init__(self, cli_runs):
        super().__init__({name: run_dir for name, (run_dir, _) in cli_runs.items()})
        self._results = {name: result for name, (_, result) in cli_runs.items()}

    def __getitem__(self, name):
        code, _, err = self._results[name]
        if code != 0:
            pytest.fail(f"genlab train {name} failed (status {code}): {err.strip()[-500:]}")
        return super().__getitem__(name)


# --------------------------------------------------------------------------------------------
# genlab explore's server, on a free loopback port
# --------------------------------------------------------------------------------------------


@pytest.fixture
def explore_server():
    """start(run_dir) -> a running `genlab explore` server (genlab.explore.ExploreServer) for that
    run, on 127.0.0.1 and a free port, in a background thread; all are stopped after the test."""
    import threading

    from genlab.explore import make_server

    servers = []

    def start(run_dir):
        server = make_server(run_dir)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------
# Hostile inputs: a decompression bomb, and the CLI in a child process with bounded memory
# --------------------------------------------------------------------------------------------


def write_gzip_bomb(path: Path, shape: tuple[int, ...], inflated_bytes: int, block: int = 2**20) -> Path:
    """A valid .gz IDX file whose header promises `shape` but which inflates to about
    `inflated_bytes` of zeros after it. Built without inflating anything: after a full flush a
    deflate block does not refer back, so the compressed block of `block` zeros is repeated."""
    import gzip
    import zlib

    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(int(d).to_bytes(4, "big") for d in shape)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    start = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    zeros = deflate.compress(bytes(block)) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeats = inflated_bytes // block
    crc = zlib.crc32(header)
    for _ in range(repeats):
        crc = zlib.crc32(bytes(block), crc)
    with open(path, "wb") as f:
        f.write(gzip.compress(b"")[:10])  # the 10-byte gzip member header
        f.write(start)
        for _ in range(repeats):
            f.write(zeros)
        f.write(deflate.flush())
        f.write(crc.to_bytes(4, "little") + ((len(header) + repeats * block) % 2**32).to_bytes(4, "little"))
    return path


# Run in a child: imports genlab's modules, caps the address space at what it then uses plus the
# budget (so an unbounded allocation fails at once instead of swamping the machine), runs the
# command and reports its peak resident memory above the level it started the command at.
_LIMITED_CLI = """
import json, resource, sys
import genlab.cli, genlab.evaluate, genlab.plots, genlab.train
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(key + ':'))
budget, report, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
resource.setrlimit(resource.RLIMIT_AS, (status('VmSize') + budget, resource.RLIM_INFINITY))
start = status('VmRSS')
try:
    code = genlab.cli.main(argv)
finally:
    open(report, 'w').write(json.dumps({'start': start, 'peak': status('VmHWM')}))
sys.exit(code)
"""


def run_cli_limited(tmp_path: Path, *argv, budget_mb: int, timeout: float = 300) -> tuple[int, str, str, float]:
    """`genlab argv...` in a child process whose memory is capped at `budget_mb` MB above what
    its imports use: (exit status, stdout, stderr, peak resident MB above the start)."""
    import json
    import subprocess
    import sys

    report = tmp_path / "memory-report.json"
    report.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-c", _LIMITED_CLI, str(budget_mb * 2**20), str(report), *map(str, argv)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    used = json.loads(report.read_text()) if report.is_file() else {"start": 0, "peak": 0}
    return result.returncode, result.stdout, result.stderr, (used["peak"] - used["start"]) / 2**20


# --------------------------------------------------------------------------------------------
# Dataset mirrors: a real HTTP server on 127.0.0.1
# --------------------------------------------------------------------------------------------

MIRROR_STALL_S = 60.0  # how long the stalling mirror stays silent: far past any download timeout


class IdxMirror:
    """Four tiny gzipped IDX files (`payloads`, file name -> bytes) served at `url(kind)`, by kind:
    'good' serves them; 'missing' answers 404; 'stall' sends the headers and half the file, then
    nothing for MIRROR_STALL_S; 'corrupt' serves them with one byte changed. `asked` lists
    (kind, file name) of every request."""

    KINDS = ("good", "missing", "stall", "corrupt")

    def __init__(self, base: str, payloads: dict[str, bytes]):
        self.base, self.payloads, self.asked = base, payloads, []

    def url(self, kind: str) -> str:
        return f"{self.base}/{kind}/"

    def spec(self, *kinds: str, name: str = "mnist"):
        """A DatasetSpec `name` whose mirrors are these kinds, in order, with the good files' MD5s."""
        import hashlib

        from genlab.data import DATASETS, DatasetSpec

        md5 = {stem: hashlib.md5(self.payloads[stem + ".gz"]).hexdigest() for stem in DATASETS[name].md5}
        return DatasetSpec(name, tuple(self.url(kind) for kind in kinds), md5, DATASETS[name].class_names)


def idx_payloads() -> dict[str, bytes]:
    """The four MNIST file names as gzipped IDX bytes of synthetic digits (N_TRAIN + N_TEST)."""
    import gzip

    from genlab.data import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS

    train, test = synthetic_digits(N_TRAIN, seed=1), synthetic_digits(N_TEST, seed=2)
    payloads = {}
    for stem, array in ((TRAIN_IMAGES, train[0]), (TRAIN_LABELS, train[1]), (TEST_IMAGES, test[0]), (TEST_LABELS, test[1])):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        payloads[stem + ".gz"] = gzip.compress(header + array.tobytes(), mtime=0)
    return payloads


@pytest.fixture
def idx_mirror(monkeypatch):
    """An `IdxMirror` on 127.0.0.1 and a free port, in a background thread, for one test; urllib
    may reach it (and only it) during the test. Stopped afterwards, stalled answers included."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    payloads, released = idx_payloads(), threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            _, kind, name = self.path.split("/", 2)
            mirror.asked.append((kind, name))
            if kind not in IdxMirror.KINDS or kind == "missing" or name not in payloads:
                self.send_error(404)
                return
            body = payloads[name]
            if kind == "corrupt":
                body = body[:-9] + bytes([body[-9] ^ 0xFF]) + body[-8:]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if kind == "stall":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                released.wait(MIRROR_STALL_S)
                return
            self.wfile.write(body)

        def log_message(self, *args):  # no request lines in the test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    mirror = IdxMirror(f"http://127.0.0.1:{server.server_address[1]}", payloads)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def loopback_only(url, *args, **kwargs):
        if not str(url).startswith(mirror.base + "/"):
            return _refuse_network()
        return _REAL_URLOPEN(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", loopback_only)
    yield mirror
    released.set()
    server.shutdown()
    server.server_close()
