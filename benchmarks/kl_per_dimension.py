"""KL per latent dimension of trained VAE runs on their test split (benchmarks/README.md, "KL per latent dimension").

    python benchmarks/kl_per_dimension.py RUN_DIR [RUN_DIR ...]

Prints one JSON line per run: the total KL(q(z|x) || p(z)) in nats averaged over the test digits,
the number of dimensions above `losses.ACTIVE_KL` (the threshold of the logged `active_dims`) and
every dimension's KL, largest first. Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import json
import sys

from genlab.data import fixed_binarization, load_dataset
from genlab.models.losses import ACTIVE_KL, kl_per_dimension
from genlab.runs import load_run


def main(run_dirs: list[str]) -> None:
    for run_dir in run_dirs:
        run = load_run(run_dir)
        run.model.eval()
        x_test, _ = load_dataset(run.train_config.dataset, run.train_config.data_dir).tensors("test", run.model.device)
        if run.train_config.binarize:  # scored as `genlab eval` scores it
            x_test = fixed_binarization(x_test)
        per_dim = kl_per_dimension(run.model, x_test).sort(descending=True).values
        print(json.dumps({
            "run": run_dir,
            "kl_nats": round(float(per_dim.sum()), 2),
            "active_dims": int((per_dim > ACTIVE_KL).sum()),
            "kl_per_dim": [round(float(v), 2) for v in per_dim],
        }))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/kl_per_dimension.py RUN_DIR [RUN_DIR ...]")
    main(sys.argv[1:])
