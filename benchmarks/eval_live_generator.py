"""A run with a moving average of its weights (`--ema`, scgan's default), evaluated twice: with the
average it samples with, and with the live weights of its last checkpoint (benchmarks/README.md, "GANs").

    python benchmarks/eval_live_generator.py RUN_DIR [--seed 0]

Training is the same either way, so one run gives both figures. Prints one JSON line per
generator with `genlab eval`'s sample metrics (FID, precision, recall, class entropy). Not a
test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json

from genlab.evaluate import evaluate_run
from genlab.runs import CHECKPOINT_FILE, load_run, load_state_into, load_tensors

KEYS = ("fid", "precision", "recall", "class_entropy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = load_run(args.run_dir)
    if not run.train_config.ema:
        raise SystemExit(f"{args.run_dir} was trained without --ema: it has one set of weights")
    for name in ("average", "live"):
        if name == "live":  # the checkpoint keeps the live weights as "model.*" beside their average
            tensors, _ = load_tensors(run.path / CHECKPOINT_FILE)
            live = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
            load_state_into(run.model, live, run.path / CHECKPOINT_FILE)
        metrics = evaluate_run(run, seed=args.seed)["metrics"]
        print(json.dumps({"run": args.run_dir, "generator": name, **{k: round(metrics[k], 4) for k in KEYS if k in metrics}}))


if __name__ == "__main__":
    main()
