"""`genlab lab`: the whole lab in one call — train each model, draw its figures, measure it,
and write one HTML report comparing them.

Layout: `OUT/<entry>/` is an ordinary run folder per lab entry, `OUT/report.html` the report.
`resume=True` reuses finished runs and resumes unfinished ones, so a killed lab carries on.

A lab entry is a name, a registry model and the settings the lab trains it with (`LAB_ENTRIES`);
`--models` takes entry names or plain registry names (those train with the model's defaults).
The entries run in `workers` processes of one thread each: these small models gain little from a
second intra-op thread, so two single-thread runs side by side keep both cores of a 2-core
machine busy (the lab's CPU time and wall time: benchmarks/README.md section 11).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from .config import TrainConfig
from .data import load_dataset
from .distributed import env_rank
from .errors import GenlabError, RunFolderError
from .lock import LOCK_FILE, RunFolderLock
from .models import get_model_class
from .models.sampling import SamplerOptions
from .precision import resolve_precision
from .runs import CONFIG_FILE, WEIGHTS_FILE, load_run, read_config
from .train import TRAIN_FIELDS, fit
from .utils import pick_device, release_freed_memory


@dataclass(frozen=True)
class LabEntry:
    """One run of the lab: `OUT/<name>/` trains registry `model` with `settings` (TrainConfig or
    model-config fields; the rest are the model's defaults)."""

    name: str
    model: str
    settings: dict = field(default_factory=dict)
    fit_prior: bool = False  # fit the Gaussian-mixture prior after training; sample and score with it
    why: str = ""  # the report's line on what this entry is for


# The default lab; each entry's settings and its cost are in benchmarks/README.md section 11.
LAB_ENTRIES: dict[str, LabEntry] = {
    e.name: e
    for e in (
        LabEntry("ae", "ae", {"neighbor_weight": 0.3}, why="The notebook's 2-D autoencoder, with the neighbour term that keeps similar digits together in the code."),
        LabEntry(
            "vae", "vae", {"neighbor_weight": 100.0},
            why="The notebook's 2-D VAE: its latent space can be drawn (latent map, manifold) and explored, with the neighbour term; "
            "2 dimensions are too few to hold a digit's detail, so its samples are blurry.",
        ),
        LabEntry(
            "vae-conv16", "vae", {"arch": "conv", "latent_dim": 16, "recon_loss": "bce", "lr": 2e-3, "batch_size": 64, "epochs": 40},
            fit_prior=True,
            why="A VAE for samples worth looking at: convolutional, 16-D, Bernoulli likelihood, sampled from a Gaussian mixture "
            "fitted to its codes (genlab fit-prior) instead of N(0, I), whose empty regions are where blurry samples come from. "
            "Its 16-D space cannot be drawn as a map: that is why the lab keeps the 2-D VAE beside it.",
        ),
        LabEntry(
            "gan", "scgan",
            why="The notebook's unconditional GAN (noise in, digit out, no labels), as a self-conditioned DCGAN: k-means clusters "
            "of the training digits play the part of the class, which on 5,000 digits is what keeps the game from mixing shapes.",
        ),
        LabEntry("cgan", "cgan", why="The class-conditional GAN: the digit is an input, so every digit can be asked for."),
    )
}
DEFAULT_MODELS = tuple(LAB_ENTRIES)
WORKERS = 2  # parallel single-thread runs (one per core of the 2-core machine the lab is sized for)


def lab_entry(name: str) -> LabEntry:
    """The lab entry `name`, or a registry model of that name with its defaults."""
    if name in LAB_ENTRIES:
        return LAB_ENTRIES[name]
    get_model_class(name)  # a typo: one line naming the models
    return LabEntry(name, name)


def entry_configs(entry: LabEntry, epochs: int | None, seed: int, data_dir: str | None, device: str, precision: str = "fp32"):
    """(TrainConfig, resolved model config) of an entry, both validated; `epochs` (the lab's
    --epochs) wins over its own; `precision` a concrete one (`lab_precision`)."""
    model_cls = get_model_class(entry.model)
    train_fields = {k: v for k, v in entry.settings.items() if k in TRAIN_FIELDS}
    model_fields = {k: v for k, v in entry.settings.items() if k not in TRAIN_FIELDS}
    if epochs is not None:
        train_fields["epochs"] = epochs
    try:
        model_config = model_cls.config_class(**model_fields)
    except TypeError as e:
        raise GenlabError(f"lab entry '{entry.name}': {e}") from None
    train_config = TrainConfig(model=entry.model, seed=seed, data_dir=data_dir, device=device, precision=precision, **train_fields)
    train_config.validate()
    return train_config, model_cls.resolved_config(model_config)


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
    workers: int = WORKERS,
    steps: int | None = None,
    solver: str | None = None,
) -> Path:
    """Train, plot and evaluate the lab entries `models` into `out_dir`; returns the report's path.
    `workers` > 1: that many entries at a time, each in its own single-thread process. `precision`
    "auto" is resolved once, for this machine and each entry (`lab_precision`), to the concrete
    value each run records. `steps`, `solver`: the sampler the iterative models (flow) are
    evaluated with (their own defaults when None)."""
    from .report import write_report

    if workers < 1:
        raise GenlabError(f"workers must be at least 1, got {workers}")
    out_dir = Path(out_dir)
    if not models:
        raise RunFolderError("no models given: e.g. --models ae,vae,gan")
    if env_rank() > 0 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise GenlabError("genlab lab runs in one process: train one model over several with torchrun ... -m genlab train MODEL")
    entries = [lab_entry(name) for name in models]  # fails on a typo
    sampler = {"steps": steps, "solver": solver}
    SamplerOptions(**sampler)  # a bad option: one line before anything is trained
    # Every entry's configs, built (and so checked) before anything is written.
    configs = {e.name: entry_configs(e, epochs, seed, data_dir, device, lab_precision(e.model, precision, pick_device(device))) for e in entries}
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
        jobs = [(entry, out_dir / entry.name, *configs[entry.name], resume, overwrite, sampler) for entry in entries]
        if workers <= 1 or len(jobs) == 1:
            for job in jobs:
                _run_entry(*job, data=data, progress=progress, log=log)
        else:
            # Longest first, so the short runs fill in beside them; progress bars would interleave.
            # A fresh process per entry: memory an entry's training and evaluation held goes back
            # to the system, rather than staying with a worker that runs the next one.
            jobs.sort(key=lambda job: -_cost(job[0]))
            pool = ProcessPoolExecutor(
                min(workers, len(jobs)), mp_context=get_context("spawn"), initializer=_start_worker, initargs=(os.getpid(),), max_tasks_per_child=1
            )
            with pool:
                futures = [pool.submit(_run_in_worker, *job) for job in jobs]
                for future in futures:  # in submission order; a failed entry raises its own one-line error
                    for line in future.result():
                        log(line)
        return write_report(out_dir, models=[e.name for e in entries])


_PARENT_GONE = threading.Event()  # set in a worker whose lab process has died


def _start_worker(parent: int) -> None:
    """A worker process: one thread for torch and for numpy's BLAS (both are imported by now, so
    OMP_NUM_THREADS would come too late), and it stops when the lab process `parent` is gone."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    threading.Thread(target=_stop_with_parent, args=(parent,), daemon=True).start()


def _stop_with_parent(parent: int, grace_s: float = 30.0) -> None:
    """A lab killed alone (SIGTERM or SIGKILL to its PID, not Ctrl-C to the whole group) would
    leave its workers training for nobody. Once the parent is gone, SIGTERM this worker: a
    training run checkpoints at the next batch and stops (`genlab lab --resume` carries on),
    anything else ends at once; whatever is still alive after `grace_s` exits."""
    while os.getppid() == parent:
        time.sleep(0.5)
    _PARENT_GONE.set()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os._exit(1)


def _run_in_worker(*job) -> list[str]:
    try:
        return _run_entry(*job, progress=False, log=None)
    finally:
        if _PARENT_GONE.is_set():  # the run has checkpointed and there is nobody to report to
            os._exit(1)


def _cost(entry: LabEntry) -> int:
    """Rough order of the entries' training time: GANs, then the conv VAE, then the rest."""
    return 2 if get_model_class(entry.model).family == "adversarial" else int(entry.fit_prior)


def _run_entry(entry, run_dir, train_config, model_config, resume, overwrite, sampler, data=None, progress=True, log=None) -> list[str]:
    """Train (or reuse) one entry with its configs (`entry_configs`), draw its figures, measure
    it. Logs through `log`, or, in a worker process (log None), returns the lines for the parent
    to print."""
    from . import plots
    from .prior import fit_run_prior

    lines: list[str] = []
    say = log or lines.append
    if data is None:
        data = load_dataset("mnist", train_config.data_dir)
    name, seed = entry.name, train_config.seed
    if resume and _finished(run_dir, train_config.epochs):
        say(f"{name}: finished run found in {run_dir}, reusing it")
    else:
        continue_run = resume and (run_dir / CONFIG_FILE).is_file()
        say(f"{name}: {'resuming' if continue_run else 'training'} into {run_dir}")
        fit(train_config, model_config, run_dir, resume=continue_run, overwrite=overwrite and not continue_run, data=data, progress=progress, log=say)
        release_freed_memory()
    run = load_run(run_dir, device=train_config.device)
    prior = None
    if entry.fit_prior:
        x_train, _ = data.tensors("train", run.device)
        prior, _, _ = fit_run_prior(run, x_train, seed=seed, data_sha256=data.sha256)
    plots.make_figures(run, data, seed=seed, prior=prior)
    _evaluate(run, data, seed, say, prior, sampler)
    return lines


def lab_precision(model: str, precision: str, device) -> str:
    """The precision a lab run trains in. "auto": bf16 where it pays on this device
    (genlab.precision), and only for the reconstruction family; bf16 moved the GANs' FID beyond
    the seeds' spread in the lab (benchmarks/README.md, "bf16 mixed precision"), so they keep fp32."""
    if precision == "auto" and get_model_class(model).family != "reconstruction":
        return "fp32"
    return resolve_precision(precision, device)


def _finished(run_dir: Path, epochs: int | None) -> bool:
    if not (run_dir / WEIGHTS_FILE).is_file():
        return False
    train_config, _, _ = read_config(run_dir)
    return epochs is None or train_config.epochs == epochs


def _evaluate(run, data, seed: int, log, prior=None, sampler=None) -> None:
    """Measure the run (genlab.evaluate) and store eval.json beside it, for the report; with a
    fitted `prior`, samples and bounds are the prior's (eval.json says so in "prior")."""
    from .evaluate import evaluate_run, write_eval
    from .metrics import HEADLINE

    results = evaluate_run(run, data=data, seed=seed, prior=prior, **(sampler or {}))
    write_eval(run.path, results)
    shown = [f"{k} {results['metrics'][k]:.4g}" for k in HEADLINE if k in results["metrics"]]
    log(f"{run.path.name}: {', '.join(shown)}" + (f" (prior: {results['prior']})" if prior is not None else ""))
