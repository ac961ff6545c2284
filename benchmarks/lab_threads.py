"""Training speed of each lab entry at 1 and at 2 (or more) intra-op threads: how the lab should
share a machine's cores out between parallel entries and threads (genlab.lab.plan_workers).

    python benchmarks/lab_threads.py                    # every entry, 1 vs 2 threads, 3 rounds
    python benchmarks/lab_threads.py --threads 1,2,4 --steps 300 --rounds 2

Each measurement is a real `genlab.fit` of the entry's settings for `--steps` steps on the offline
digits; the figure is its metrics row's images/s (training time only: the per-epoch evaluation
and the one-off preparation are excluded). The thread counts alternate within each round, and
their order flips from round to round, so a change in the machine's load falls on both; the
median over rounds is printed. Not a test: it prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", default="ae,vae,vae-conv16,gan,cgan")
    parser.add_argument("--threads", default="1,2", help="thread counts to compare (default: 1,2)")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per measurement (default: 200)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))

    import torch

    from genlab.data import load_dataset
    from genlab.lab import entry_configs, lab_entry
    from genlab.runs import read_metrics
    from genlab.train import fit

    data = load_dataset("mnist", allow_download=False)
    counts = [int(t) for t in args.threads.split(",")]
    speeds: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for threads in counts if r % 2 == 0 else counts[::-1]:
                torch.set_num_threads(threads)
                for name in args.entries.split(","):
                    train, model = entry_configs(lab_entry(name), None, 0, None, "cpu", "fp32", steps=args.steps)
                    run = fit(train, model, Path(tmp) / f"{name}-{threads}-{r}", data=data, progress=False, log=lambda _: None)
                    speeds.setdefault((name, threads), []).append(read_metrics(run)[0]["images_per_s"])
    print(f"images/s of training, median of {args.rounds} rounds ({args.steps} steps each, fp32, CPU, {data.source})")
    print("entry        " + "  ".join(f"{t:>2} thread{'s' if t > 1 else ' '}" for t in counts) + "   speed-up over 1")
    for name in args.entries.split(","):
        medians = [statistics.median(speeds[(name, t)]) for t in counts]
        ups = "  ".join(f"{m / medians[0]:.2f}x" for m in medians[1:])
        print(f"{name:<12} " + "  ".join(f"{m:>10.0f}" for m in medians) + f"   {ups}")


if __name__ == "__main__":
    main()
