"""The lab's wall time and peak memory on 5,000 and on 60,000 training digits (issue 20).

    python benchmarks/lab_sizes.py                       # both labs, full budgets (minutes: run on a quiet machine)
    python benchmarks/lab_sizes.py --steps 20 --sizes 60k  # a smoke run of the large one
    python benchmarks/lab_sizes.py --data-only           # build the 60,000 digits and time loading them

The 60,000-digit stand-in for the full MNIST training split is built in a temporary folder (never
committed): the offline 5,000 digits shifted by ±1–2 pixels into 12 copies, plus the real test set
(GENLAB_DATA or ../shared/data/mnist), written as IDX files. The 5,000-digit lab reads the same
test set with the offline training digits. The shifted copies say nothing about quality: the
comparison is of time and memory. Not a test: it prints figures, it asserts nothing.

Peak memory is the largest sum of the resident memory of the lab and its worker processes,
sampled every 0.2 s from /proc (Linux); wall time is the `genlab lab` command's, from start to
report. Record the figures in benchmarks/README.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# 12 distinct shifts (dx, dy) of 1–2 pixels: with the 5,000 digits, 60,000 training images.
SHIFTS = [(dx, dy) for dx in (-2, -1, 1, 2) for dy in (-2, -1, 1, 2) if abs(dx) + abs(dy) <= 3][:12]


def shifted(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """(N, 28, 28) uint8 moved dx pixels right and dy down, the border filled with 0 (no wrap-around)."""
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[:, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    return out


def build_60k(folder: Path, test_dir: Path) -> Path:
    """The stand-in: 12 shifted copies of the offline digits (shuffled with a fixed seed) and the real test set."""
    from genlab.data import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, embedded_mnist, write_idx

    images, labels = embedded_mnist()
    train_x = np.concatenate([shifted(images, dx, dy) for dx, dy in SHIFTS])
    train_y = np.tile(labels, len(SHIFTS))
    order = np.random.default_rng(0).permutation(len(train_x))
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / TRAIN_IMAGES, train_x[order])  # uncompressed: gzip would take most of a minute here
    write_idx(folder / TRAIN_LABELS, train_y[order])
    for stem in (TEST_IMAGES, TEST_LABELS):
        shutil.copy(test_dir / f"{stem}.gz", folder / f"{stem}.gz")
    return folder


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, in MB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(p)
        rss[p] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24 of stat: rss in pages
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total / 1e6


def run_lab(data_dir: Path, out: Path, extra: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak MB of the process tree, exit status) of `genlab lab` on `data_dir`."""
    command = [sys.executable, "-m", "genlab", "lab", "--out", str(out), "--data", str(data_dir), "--overwrite", *extra]
    env = {**os.environ, "GENLAB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    lab = subprocess.Popen(command, env=env)
    peak = 0.0
    while lab.poll() is None:
        peak = max(peak, tree_rss_mb(lab.pid))
        time.sleep(0.2)
    return time.perf_counter() - start, peak, lab.returncode


def time_loading(data_dir: Path) -> None:
    """What each lab worker does with the data before it trains: read and check the IDX files,
    hash them (the run's data SHA-256) and make the float tensors."""
    from genlab.data import load_dataset

    t = time.perf_counter()
    data = load_dataset("mnist", data_dir, allow_download=False)
    loaded = time.perf_counter() - t
    t = time.perf_counter()
    data.sha256
    hashed = time.perf_counter() - t
    t = time.perf_counter()
    x, _ = data.tensors("train")
    floats = time.perf_counter() - t
    print(f"data {data_dir}: {len(data.train_images):,} training digits; read {loaded:.2f}s, hash {hashed:.2f}s, "
          f"float tensor {floats:.2f}s ({x.numel() * 4 / 1e6:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5k,60k", help="which labs: 5k, 60k or both (default: 5k,60k)")
    parser.add_argument("--test-data", type=Path, default=Path(os.environ.get("GENLAB_DATA") or REPO.parent / "shared" / "data" / "mnist"),
                        help="folder with the real t10k-*.gz test files (default: $GENLAB_DATA or ../shared/data/mnist)")
    parser.add_argument("--data-only", action="store_true", help="build the 60,000 digits and time loading them; no lab")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("lab_args", nargs=argparse.REMAINDER, help="more `genlab lab` options after --, e.g. -- --steps 20 --models ae,gan")
    args, unknown = parser.parse_known_args()
    extra = [a for a in (args.lab_args + unknown) if a != "--"]
    sys.path.insert(0, str(REPO / "src"))

    tmp = Path(tempfile.mkdtemp(prefix="genlab-lab-sizes-"))
    try:
        t = time.perf_counter()
        big = build_60k(tmp / "mnist-60k", args.test_data)
        print(f"built the 60,000-digit stand-in in {time.perf_counter() - t:.1f}s: {big}")
        time_loading(big)
        time_loading(args.test_data)
        if args.data_only:
            return
        results = {}
        for size in args.sizes.split(","):
            data_dir = big if size == "60k" else args.test_data  # 5k: the offline training digits, the real test set
            wall, peak, status = run_lab(data_dir, tmp / f"lab-{size}", extra)
            results[size] = wall
            print(f"lab {size}: wall {wall:.1f}s ({wall / 60:.1f} min), peak memory {peak:.0f} MB, exit status {status}", flush=True)
        if {"5k", "60k"} <= results.keys():
            print(f"60k / 5k wall time: {results['60k'] / results['5k']:.2f}x")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
