"""`genlab lab`: the whole lab in one call — train each model, draw its figures, measure it,
and write one HTML report comparing them.

Layout: `OUT/<model>/` is an ordinary run folder per model, `OUT/report.html` the report.
`resume=True` reuses finished runs and resumes unfinished ones, so a killed lab carries on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .config import TrainConfig
from .data import load_dataset
from .distributed import env_rank
from .errors import GenlabError, RunFolderError
from .lock import LOCK_FILE, RunFolderLock
from .models import get_model_class
from .runs import CONFIG_FILE, WEIGHTS_FILE, load_run, read_config
from .precision import resolve_precision
from .train import fit
from .utils import pick_device

# The lab's default set: both families, and the class-conditional GAN whose samples cover every
# digit; its time on 2 CPU cores is in benchmarks/README.md ("The default lab").
DEFAULT_MODELS = ("ae", "vae", "gan", "cgan")


def run_lab(
    out_dir: Path,
    models=DEFAULT_MODELS,
    epochs: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Train, plot and evaluate `models` into `out_dir`; returns the report's path. `precision`
    "auto" is resolved once, for this machine and each model (`lab_precision`), to the concrete
    value each run records."""
    from . import plots
    from .report import write_report

    out_dir = Path(out_dir)
    if env_rank() > 0 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise GenlabError("genlab lab runs in one process: train one model over several with torchrun ... -m genlab train MODEL")
    precisions = {name: lab_precision(name, precision, pick_device(device)) for name in models}  # fails on a typo
    for name in models:  # fail on a bad option before anything is written
        TrainConfig(model=name, epochs=epochs, seed=seed, data_dir=data_dir, device=device, precision=precisions[name]).validate()
    if not models:
        raise RunFolderError("no models given: e.g. --models ae,vae,gan")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"lab folder {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(p.name != LOCK_FILE for p in out_dir.iterdir()) and not (resume or overwrite):
        raise RunFolderError(f"lab folder {out_dir} already exists: use --resume to continue it or --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)

    with RunFolderLock(out_dir):  # one lab per folder; each fit also locks its model's folder
        data = load_dataset("mnist", data_dir)
        log(f"data: {data.source}")
        for note in data.notes:
            log(f"data: {note}")

        for name in models:
            run_dir = out_dir / name
            train_config = TrainConfig(model=name, epochs=epochs, seed=seed, data_dir=data_dir, device=device, precision=precisions[name])
            if resume and _finished(run_dir, epochs):
                log(f"{name}: finished run found in {run_dir}, reusing it")
            else:
                continue_run = resume and (run_dir / CONFIG_FILE).is_file()
                log(f"{name}: {'resuming' if continue_run else 'training'} into {run_dir}")
                fit(train_config, None, run_dir, resume=continue_run, overwrite=overwrite and not continue_run, data=data, progress=progress, log=log)
            run = load_run(run_dir, device=device)
            plots.make_figures(run, data, seed=seed)
            _evaluate(run, data, seed, log)
        return write_report(out_dir, models=list(models))


def lab_precision(name: str, precision: str, device) -> str:
    """The precision a lab model trains in. "auto": bf16 where it pays on this device
    (genlab.precision), and only for the reconstruction family; bf16 moved the GANs' FID beyond
    the seeds' spread in the lab (benchmarks/README.md, "bf16 mixed precision"), so they keep fp32."""
    if precision == "auto" and get_model_class(name).family != "reconstruction":
        return "fp32"
    return resolve_precision(precision, device)


def _finished(run_dir: Path, epochs: int | None) -> bool:
    if not (run_dir / WEIGHTS_FILE).is_file():
        return False
    train_config, _, _ = read_config(run_dir)
    return epochs is None or train_config.epochs == epochs


def _evaluate(run, data, seed: int, log) -> None:
    """Measure the run (genlab.evaluate) and store eval.json beside it, for the report."""
    from .evaluate import evaluate_run, write_eval
    from .metrics import HEADLINE

    results = evaluate_run(run, data=data, seed=seed)
    write_eval(run.path, results)
    shown = [f"{k} {results['metrics'][k]:.4g}" for k in HEADLINE if k in results["metrics"]]
    log(f"{run.name}: {', '.join(shown)}")
