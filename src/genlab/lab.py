"""`genlab lab`: the whole lab in one call — train each model, draw its figures, measure it,
and write one HTML report comparing them.

Layout: `OUT/<entry>/` is an ordinary run folder per lab entry, `OUT/report.html` the report.
`resume=True` reuses finished runs and resumes unfinished ones, so a killed lab carries on.

A lab entry is a name, a registry model and the settings the lab trains it with (`LAB_ENTRIES`);
`--models` takes entry names or plain registry names (those train with the model's defaults).
Budget: each entry trains a fixed number of optimizer steps, whatever the data's size (today's
epochs × batches per epoch on the offline default's 4,500 training digits), so the lab takes
about as long on the full MNIST as on the offline digits, and sees more varied digits there.

Cores: the entries run side by side in `workers` processes of `threads` threads each, workers ×
threads = the machine's cores (`plan_workers`): these small models gain little from a second
intra-op thread, so parallel entries come first (benchmarks/README.md, "The default lab"). With CUDA: one process per GPU, each pinned to
its GPU; on a single GPU the entries run one after another in the lab's own process.

Progress: workers send their `Progress` and log lines to the lab process through a queue, where a
`progress.LiveBoard` shows one line per entry, redrawn in place in a terminal.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
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
from .progress import LiveBoard
from .runs import CONFIG_FILE, WEIGHTS_FILE, load_run, read_config
from .train import TRAIN_FIELDS, fit
from .utils import pick_device, release_freed_memory, reuse_freed_memory, usable_cores


@dataclass(frozen=True)
class LabEntry:
    """One run of the lab: `OUT/<name>/` trains registry `model` with `settings` (TrainConfig or
    model-config fields; the rest are the model's defaults)."""

    name: str
    model: str
    settings: dict = field(default_factory=dict)
    fit_prior: bool = False  # fit the Gaussian-mixture prior after training; sample and score with it
    why: str = ""  # the report's line on what this entry is for


# The default lab; each entry's settings and its cost are in benchmarks/README.md, "The default lab". Its
# budgets are the steps the entries trained when they were budgeted in epochs: epochs × batches
# per epoch of the offline default's 4,500 training digits (ae, vae: 35 × 141 at batch 32;
# vae-conv16: 40 × 71 at batch 64; gan, cgan: 20 × 141 at batch 32), so that lab is unchanged.
LAB_ENTRIES: dict[str, LabEntry] = {
    e.name: e
    for e in (
        LabEntry("ae", "ae", {"neighbor_weight": 0.3, "steps": 4935}, why="The notebook's 2-D autoencoder, with the neighbour term that keeps similar digits together in the code."),
        LabEntry(
            "vae", "vae", {"neighbor_weight": 100.0, "steps": 4935},
            why="The notebook's 2-D VAE: its latent space can be drawn (latent map, manifold) and explored, with the neighbour term; "
            "2 dimensions are too few to hold a digit's detail, so its samples are blurry.",
        ),
        LabEntry(
            "vae-conv16", "vae", {"arch": "conv", "latent_dim": 16, "recon_loss": "bce", "lr": 2e-3, "batch_size": 64, "steps": 2840},
            fit_prior=True,
            why="A VAE for samples worth looking at: convolutional, 16-D, Bernoulli likelihood, sampled from a Gaussian mixture "
            "fitted to its codes (genlab fit-prior) instead of N(0, I), whose empty regions are where blurry samples come from. "
            "Its 16-D space cannot be drawn as a map: that is why the lab keeps the 2-D VAE beside it.",
        ),
        LabEntry(
            "gan", "scgan", {"steps": 2820},
            why="The notebook's unconditional GAN (noise in, digit out, no labels), as a self-conditioned DCGAN: k-means clusters "
            "of the training digits play the part of the class, which on 5,000 digits is what keeps the game from mixing shapes.",
        ),
        LabEntry("cgan", "cgan", {"steps": 2820}, why="The class-conditional GAN: the digit is an input, so every digit can be asked for."),
        LabEntry(
            "flow", "flow", {"steps": 2000, "epoch_eval_images": 500},
            why="Flow matching, the family of today's image generators (noise in, digit out, no labels): a U-Net learns the "
            "velocity that carries noise to digits along straight lines, and a sample is that velocity integrated in a few "
            "solver steps, each a pass of the network. Its exact log-likelihood is measured in bits per dimension.",
        ),
    )
}
DEFAULT_MODELS = tuple(LAB_ENTRIES)


def plan_workers(cores: int, gpus: int, entries: int, workers: int | None = None, threads: int | None = None) -> tuple[int, int]:
    """(worker processes, threads per worker) for `entries` lab entries on `cores` CPU cores and
    `gpus` GPUs; `workers` / `threads` given by the user win. CPU: as many entries at a time as
    there are cores (a second thread speeds one entry up far less than a second entry runs,
    README "The lab's budget, cores and time"), the cores left over shared out as threads. GPUs: one
    worker per GPU (one GPU: the entries one after another), each with its share of the cores."""
    if workers is not None and workers < 1 or threads is not None and threads < 1:
        raise GenlabError(f"workers and threads must be at least 1, got {workers} and {threads}")
    if workers is None:
        slots = gpus if gpus > 0 else max(1, cores // (threads or 1))
        workers = max(1, min(entries, slots))
    return workers, threads or max(1, cores // workers)


def lab_entry(name: str) -> LabEntry:
    """The lab entry `name`, or a registry model of that name with its defaults."""
    if name in LAB_ENTRIES:
        return LAB_ENTRIES[name]
    get_model_class(name)  # a typo: one line naming the models
    return LabEntry(name, name)


def entry_configs(
    entry: LabEntry, epochs: int | None, seed: int, data_dir: str | None, device: str, precision: str = "fp32", steps: int | None = None,
    tensorboard: bool = True,
):
    """(TrainConfig, resolved model config) of an entry, both validated; a budget in `epochs` or
    `steps` (the lab's --epochs / --steps) replaces its own; `precision` a concrete one (`lab_precision`)."""
    model_cls = get_model_class(entry.model)
    train_fields = {k: v for k, v in entry.settings.items() if k in TRAIN_FIELDS}
    model_fields = {k: v for k, v in entry.settings.items() if k not in TRAIN_FIELDS}
    if epochs is not None or steps is not None:
        train_fields["epochs"], train_fields["steps"] = epochs, steps
    try:
        model_config = model_cls.config_class(**model_fields)
    except TypeError as e:
        raise GenlabError(f"lab entry '{entry.name}': {e}") from None
    train_config = TrainConfig(model=entry.model, seed=seed, data_dir=data_dir, device=device, precision=precision, tensorboard=tensorboard, **train_fields)
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
    workers: int | None = None,
    threads: int | None = None,
    steps: int | None = None,
    tensorboard: bool = True,
    sample_steps: int | None = None,
    solver: str | None = None,
    sample_shift: float | None = None,
) -> Path:
    """Train, plot and evaluate the lab entries `models` into `out_dir`; returns the report's path.
    `workers` > 1: that many entries at a time, each in its own process of `threads` threads
    (None: `plan_workers` for this machine). `precision` "auto" is resolved once, for this machine
    and each entry (`lab_precision`), to the concrete value each run records. `progress`: a live
    line per entry (in place when `log` is print to a terminal). `sample_steps`, `solver`, `sample_shift`: the
    sampler the iterative models (flow) are evaluated with (their own defaults when None)."""
    from .report import write_report

    import torch

    out_dir = Path(out_dir)
    if not models:
        raise RunFolderError("no models given: e.g. --models ae,vae,gan")
    if env_rank() > 0 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise GenlabError("genlab lab runs in one process: train one model over several with torchrun ... -m genlab train MODEL")
    entries = [lab_entry(name) for name in models]  # fails on a typo
    sampler = {"steps": sample_steps, "solver": solver, "shift": sample_shift}
    SamplerOptions(**sampler)  # a bad option: one line before anything is trained
    on = pick_device(device)
    # Accelerators to give each a worker: every CUDA device for "cuda"/"auto", else the one named.
    gpus = (torch.cuda.device_count() if on.index is None else 1) if on.type == "cuda" else int(on.type == "mps")
    workers, threads = plan_workers(usable_cores(), gpus, len(entries), workers, threads)
    # Every entry's configs, built (and so checked) before anything is written.
    configs = {e.name: entry_configs(e, epochs, seed, data_dir, device, lab_precision(e.model, precision, on), steps, tensorboard) for e in entries}
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
        log(f"lab: {len(entries)} entries, {workers} at a time, {threads} thread{'s' * (threads > 1)} each")
        jobs = [(entry, out_dir / entry.name, *configs[entry.name], resume, overwrite, sampler) for entry in entries]
        board = LiveBoard([e.name for e in entries], log=log, tty=progress and log is print and sys.stdout.isatty(), out=sys.stdout)
        if workers <= 1 or len(jobs) == 1:
            with _threads(threads):
                for job in jobs:
                    name = job[0].name
                    shown = (lambda p, name=name: board.update(name, p)) if progress else False
                    board.finish(name, _run_entry(*job, data=data, progress=shown, log=board.message))
        else:
            _run_in_workers(jobs, workers, threads, gpus if on.type == "cuda" and on.index is None else 0, progress, board)
        return write_report(out_dir, models=[e.name for e in entries])


def _run_in_workers(jobs: list[tuple], workers: int, threads: int, gpus: int, progress: bool, board: LiveBoard) -> None:
    """The entries' jobs in `workers` processes, their progress and lines shown on `board` as they
    come; with `gpus` > 1 each worker is pinned to one of that many CUDA devices."""
    # A fresh process per entry: memory an entry's training and evaluation held goes back to the
    # system, rather than staying with a worker that runs the next one.
    jobs = longest_first(jobs)
    context = get_context("spawn")
    events = context.Queue()  # (kind, entry, payload) from the workers: "log", "progress", "done"
    gpu_slots = None
    if gpus > 1:  # each worker takes one GPU and gives it back when its entry is done
        gpu_slots = context.Queue()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        for gpu in visible.split(",")[:gpus] if visible else range(gpus):
            gpu_slots.put(str(gpu))
    pool = ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=context, initializer=_start_worker,
        initargs=(os.getpid(), threads, events, gpu_slots), max_tasks_per_child=1,
    )
    # A thread shows the workers' events as they come, until every worker has ended: a worker
    # whose queue is not read could not end (its last events wait in a full pipe).
    finished = threading.Event()

    def show_events():
        while _relay(events, board, block_s=0.2) or not finished.is_set():
            pass

    shower = threading.Thread(target=show_events, daemon=True)
    shower.start()
    try:
        with pool:
            futures = [pool.submit(_run_in_worker, *job, progress=progress) for job in jobs]
            for future in futures:  # in submission order; a failed entry raises its own one-line error (the pool finishes the rest)
                future.result()
    finally:
        finished.set()  # the pool has shut down: every worker's events are in the queue
        shower.join()


def _relay(events, board: LiveBoard, block_s: float) -> bool:
    """Show every event waiting in `events`, after waiting up to `block_s` for one; False if none came."""
    try:
        event = events.get(timeout=block_s)
    except queue.Empty:
        return False
    while True:
        kind, entry, payload = event
        if kind == "progress":
            board.update(entry, payload)
        elif kind == "done":
            board.finish(entry, payload)
        else:
            board.message(payload)
        try:
            event = events.get_nowait()
        except queue.Empty:
            return True


class _threads:
    """torch's and the BLAS libraries' thread counts set to `n` for a block, then restored."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import torch
        from threadpoolctl import threadpool_limits

        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.n)
        self.blas = threadpool_limits(self.n)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.previous)
        self.blas.restore_original_limits()


_PARENT_GONE = threading.Event()  # set in a worker whose lab process has died
_WORKER: dict = {}  # in a worker process: its "events" queue, and its "gpu" and "gpu_slots" with CUDA


def _start_worker(parent: int, threads: int, events, gpu_slots) -> None:
    """A worker process: `threads` threads for torch and for numpy's BLAS (both are imported by
    now, so OMP_NUM_THREADS would come too late), one GPU of `gpu_slots` made its only visible
    one (CUDA is not initialised yet), and it stops when the lab process `parent` is gone."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    reuse_freed_memory()  # a spawned process starts with glibc's defaults
    _WORKER["events"] = events
    if gpu_slots is not None:
        _WORKER["gpu"], _WORKER["gpu_slots"] = gpu_slots.get(), gpu_slots
        os.environ["CUDA_VISIBLE_DEVICES"] = _WORKER["gpu"]
    threading.Thread(target=_stop_with_parent, args=(parent,), daemon=True).start()


def _stop_with_parent(parent: int, grace_s: float = 30.0) -> None:
    """A lab killed alone (SIGTERM or SIGKILL to its PID, not Ctrl-C to the whole group) would
    leave its workers training for nobody. Once the parent is gone, SIGTERM this worker: a
    training run checkpoints at the next batch and stops (`genlab lab --resume` carries on),
    anything else ends at once; whatever is still alive after `grace_s` exits."""
    while os.getppid() == parent:
        time.sleep(0.5)
    _PARENT_GONE.set()
    signal.raise_signal(signal.SIGTERM)  # to this process's own handler, on Windows too (os.kill there terminates at once)
    time.sleep(grace_s)
    os._exit(1)


def _run_in_worker(*job, progress: bool) -> None:
    """One entry in a worker: its lines, progress and headline go to the lab process as events."""
    events, name = _WORKER["events"], job[0].name
    try:
        shown = (lambda p: events.put(("progress", name, p))) if progress else False
        headline = _run_entry(*job, progress=shown, log=lambda line: events.put(("log", name, line)))
        events.put(("done", name, headline))
    finally:
        if "gpu" in _WORKER:  # this process ends with its entry: its GPU is free for the next worker
            _WORKER["gpu_slots"].put(_WORKER["gpu"])
        if _PARENT_GONE.is_set():  # the run has checkpointed and there is nobody to report to
            os._exit(1)


def longest_first(jobs: list[tuple]) -> list[tuple]:
    """The jobs in the order the workers take them: longest first, so the short runs fill in beside them."""
    return sorted(jobs, key=lambda job: -_cost(job[0]))


def _cost(entry: LabEntry) -> int:
    """Rough order of the entries' time: an iterative model (its samples cost steps × a network
    pass), GANs, then the conv VAE, then the rest."""
    model = get_model_class(entry.model)
    return 3 if model.iterative else 2 if model.family == "adversarial" else int(entry.fit_prior)


def _run_entry(entry, run_dir, train_config, model_config, resume, overwrite, sampler, data=None, progress=True, log=print) -> str:
    """Train (or reuse) one entry with its configs (`entry_configs`), draw its figures, measure
    it; logs through `log`, `progress` as `fit`'s. Returns its headline (its measured figures)."""
    from . import plots
    from .evaluate import TRAIN_REFERENCE_DIGITS
    from .prior import fit_run_prior

    if data is None:
        data = load_dataset("mnist", train_config.data_dir)
    name, seed = entry.name, train_config.seed
    if resume and _finished(run_dir, train_config):
        log(f"{name}: finished run found in {run_dir}, reusing it")
    else:
        continue_run = resume and (run_dir / CONFIG_FILE).is_file()
        log(f"{name}: {'resuming' if continue_run else 'training'} into {run_dir}")
        fit(train_config, model_config, run_dir, resume=continue_run, overwrite=overwrite and not continue_run, data=data, progress=progress, log=log)
        release_freed_memory()
    run = load_run(run_dir, device=train_config.device)
    prior = None
    if entry.fit_prior:  # on the evaluation's training digits: a cost that does not grow with the training split
        x_train, _ = data.tensors("train", run.device)
        prior, _, _ = fit_run_prior(run, x_train[:TRAIN_REFERENCE_DIGITS], seed=seed, data_sha256=data.sha256)
    plots.make_figures(run, data, seed=seed, prior=prior)
    return _evaluate(run, data, seed, prior, sampler)


def lab_precision(model: str, precision: str, device) -> str:
    """The precision a lab run trains in. "auto": bf16 where it pays on this device
    (genlab.precision), except for the adversarial family, measured on a CPU where bf16 is fast
    (benchmarks/README.md, "bf16 mixed precision"): their steps ran only 1.13-1.15x faster in
    bf16 and the lab's scgan lost FID beyond the seeds' spread, so they keep fp32. The flow
    trains and samples in bf16 (benchmarks/README.md, "Flow matching")."""
    if precision == "auto" and get_model_class(model).family == "adversarial":
        return "fp32"
    return resolve_precision(precision, device)


def _finished(run_dir: Path, asked: TrainConfig) -> bool:
    """Whether `run_dir` holds a finished run of the budget `asked` (any budget when it sets none:
    the model's defaults)."""
    if not (run_dir / WEIGHTS_FILE).is_file():
        return False
    saved, _, _ = read_config(run_dir)
    return (asked.epochs, asked.steps) in ((None, None), (saved.epochs, saved.steps))


def _evaluate(run, data, seed: int, prior=None, sampler=None) -> str:
    """Measure the run (genlab.evaluate) and store eval.json beside it, for the report; returns
    the headline line. With a fitted `prior`, samples and bounds are the prior's (eval.json says so
    in "prior"); `sampler`: Run.sample's steps, solver and shift for an iterative model."""
    from .evaluate import evaluate_run, write_eval
    from .metrics import HEADLINE

    results = evaluate_run(run, data=data, seed=seed, prior=prior, **(sampler or {}))
    write_eval(run.path, results)
    shown = [f"{k} {results['metrics'][k]:.4g}" for k in HEADLINE if k in results["metrics"]]
    return f"{run.path.name}: {', '.join(shown)}" + (f" (prior: {results['prior']})" if prior is not None else "")
