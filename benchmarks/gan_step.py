"""Training throughput of the GANs under two versions of genlab, measured alternately.

    git worktree add /tmp/genlab-main main          # or: git archive main | tar -x -C /tmp/genlab-main
    python benchmarks/gan_step.py --before /tmp/genlab-main/src --after src --rounds 3

Each measurement is `genlab train MODEL --epochs 1` (the model's defaults, the 5,000 offline
digits, CPU, one thread, seed 0) in a fresh subprocess with PYTHONPATH set to one version's
`src`; the figure is its metrics row's `images_per_s` (the loop's own: training only, the
evaluation and checkpoint excluded). The versions alternate within every round, and the order
flips each round, so a busy machine slows both alike. Prints one JSON line per model: the
median images/s of each version, every round's figures and after / before.
Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

GANS = "gan,dcgan,cgan,scgan,wgan_gp"


def images_per_s(src: Path, model: str, out: Path) -> float:
    """One epoch of `model` with the genlab in `src`; the loop's training images/s."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "GENLAB_OFFLINE": "1"}
    env.pop("GENLAB_DATA", None)
    cmd = [sys.executable, "-m", "genlab", "train", model, "--epochs", "1", "--seed", "0", "--device", "cpu"]
    cmd += ["--out", str(out), "--overwrite", "--quiet", "--no-figures"]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return float(row["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the `src` folder of the version to compare against")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1] / "src", help="the `src` folder of this version")
    parser.add_argument("--models", default=GANS, help=f"comma-separated models (default: {GANS})")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per model and version (default: 3)")
    args = parser.parse_args()
    versions = {"before": args.before.resolve(), "after": args.after.resolve()}
    with tempfile.TemporaryDirectory(prefix="gan-step-") as tmp:
        for model in args.models.split(","):
            figures: dict[str, list[float]] = {name: [] for name in versions}
            for round_ in range(args.rounds):
                order = list(versions) if round_ % 2 == 0 else list(versions)[::-1]
                for name in order:
                    figures[name].append(images_per_s(versions[name], model, Path(tmp) / f"{model}-{name}"))
            medians = {name: statistics.median(values) for name, values in figures.items()}
            print(json.dumps({
                "model": model, **{f"{name}_images_per_s": round(m, 1) for name, m in medians.items()},
                "after_over_before": round(medians["after"] / medians["before"], 3), "rounds": figures,
            }), flush=True)


if __name__ == "__main__":
    main()
