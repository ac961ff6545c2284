"""A GAN run with a moving average of G (`--g-ema`), evaluated twice: with the average it samples
with, and with G itself ("live") (benchmarks/README.md, "GANs").

    python benchmarks/eval_live_generator.py RUN_DIR [--seed 0]

Training is the same either way, so one run gives both figures. Prints one JSON line per
generator with `genlab eval`'s sample metrics (FID, precision, recall, class entropy). Not a
test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json

from genlab.evaluate import evaluate_run
from genlab.models.dcgan import ConvGAN
from genlab.runs import load_run

KEYS = ("fid", "precision", "recall", "class_entropy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = load_run(args.run_dir)
    if not isinstance(run.model, ConvGAN) or run.model.generator_ema is None:
        raise SystemExit(f"{args.run_dir} was trained without --g-ema: it has one generator")
    for name in ("average", "live"):
        if name == "live":
            run.model.generator_ema = None  # the model then samples with G itself
        metrics = evaluate_run(run, seed=args.seed)["metrics"]
        print(json.dumps({"run": args.run_dir, "generator": name, **{k: round(metrics[k], 4) for k in KEYS if k in metrics}}))


if __name__ == "__main__":
    main()
