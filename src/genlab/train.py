"""The one training loop, for every model: data on the device, phases in order, checkpoints.

Read `fit` top to bottom: `_prepare` checks the run folder, configs, data and checkpoint before it
writes anything and builds a `Training` (the model, one Adam optimizer per phase, the data, where
the loop is); then each epoch `_train_epoch` steps every phase on every batch (`_train_step`) and
`_end_epoch` evaluates the test split and the run's health (`health.py`), appends a metrics row
and saves a checkpoint. The model computes its own losses; the loop never asks what it trains.

For any model the loop can keep a moving average of the weights (`--ema`, genlab.ema: updated
after each batch's last phase; evaluation and model.safetensors use it) and sets each step's
learning rate from a schedule (`learning_rate`: warmup, then constant or cosine).

Budget: `total_steps` optimizer steps, from `cfg.steps` or `cfg.epochs` × batches per epoch; a
step budget may end mid-epoch, and that shorter last epoch ends like any other (row, checkpoint).

Speed: the whole split lives on the device as one float tensor and batches are index slices;
logged values are summed as tensors and read back (one host sync) only every `SYNC_EVERY` steps,
when the progress bar and the non-finite guard look at them.

Precision: `_train_step` runs each phase's forward under `cfg.precision`'s autocast
(genlab.precision); the weights and their gradients, the optimizer step and evaluation stay float32.

Several processes (torchrun): `_prepare` joins the process group and `_loss_fn` wraps each
phase's loss in DDP; every batch of the shared order is sharded (`distributed.shard`), and
`t.ranks.is_main` is the one predicate for writing, logging and evaluating (genlab.distributed).

Resume: a checkpoint holds the weights (and their average), each optimizer's state, the global and the shuffling RNG
states (the latter as of the epoch's start, so the epoch's permutation can be rebuilt), how
far into the epoch the loop got and the metrics rows so far (metrics.jsonl is rebuilt from them,
so a kill between the two writes leaves no gap). Resuming on CPU with the same seed gives bitwise
the weights an uninterrupted run gives. Every file is written atomically; a checkpoint is only
written when the weights are finite, so the last one is always good. Ctrl-C or SIGTERM stops at
the next batch boundary after saving one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm  # plain text bar: works in terminals and notebooks without ipywidgets

from . import distributed, tracking
from .config import LOOP_DEFAULTS, ModelConfig, TrainConfig
from .data import DataBundle, binarize, fixed_binarization, load_dataset
from .ema import WeightAverage
from .errors import GenlabError, Interrupted, RunFolderError, TrainingDiverged
from .health import epoch_health
from .lock import LOCK_FILE, RunFolderLock
from .modelcard import write_card
from .models import GenerativeModel, get_model_class
from .precision import check_precision, forward_context, grad_scaler
from .progress import Progress
from .runs import (
    CARD_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EVAL_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    PRIOR_EVAL_FILE,
    PRIOR_FILE,
    TB_DIR,
    WEIGHTS_FILE,
    build_model,
    load_state_into,
    load_tensors,
    read_config,
    require_training_data,
    save_tensors,
    save_weights,
    versions,
    write_config,
    write_metrics,
)
from .utils import TMP_SUFFIX, pick_device, seed_everything

SYNC_EVERY = 20  # steps between host syncs (progress bar, non-finite check)
RUN_FILES = (CONFIG_FILE, WEIGHTS_FILE, CHECKPOINT_FILE, METRICS_FILE)
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
LR_FLOOR = 0.1  # a cosine schedule ends at this fraction of the learning rate
WRITE_PROBE = ".genlab-write-test"  # an empty file made and removed to test that the folder is writable


def batches_per_epoch(cfg: TrainConfig, n_train: int) -> int:
    return math.ceil(n_train / cfg.batch_size)


def total_steps(cfg: TrainConfig, n_train: int) -> int:
    """The run's optimizer steps in all (the one place they are computed: the loop's end, the
    progress display and learning-rate schedules read it): `cfg.steps`, else epochs × batches per
    epoch of `n_train` images. `cfg` is resolved (one of the two is set)."""
    return cfg.steps if cfg.steps is not None else cfg.epochs * batches_per_epoch(cfg, n_train)


def resolve_configs(train_config: TrainConfig, model_config: ModelConfig | None = None) -> tuple[TrainConfig, ModelConfig]:
    """Validate both configs and fill what they leave None from the model's `defaults`."""
    model_cls = get_model_class(train_config.model)
    model_config = model_config if model_config is not None else model_cls.config_class()
    if not isinstance(model_config, model_cls.config_class):
        raise GenlabError(f"model '{train_config.model}' takes a {model_cls.config_class.__name__}, got {type(model_config).__name__}")
    model_config = model_cls.resolved_config(model_config)
    # A step budget replaces the epochs: the model's default epochs are not filled in beside it.
    defaults = {**LOOP_DEFAULTS, **model_cls.defaults(model_config)}
    unset = {k for k in TRAIN_FIELDS if getattr(train_config, k) is None and not (k == "epochs" and train_config.steps is not None)}
    train_config = dataclasses.replace(train_config, **{k: v for k, v in defaults.items() if k in unset})
    train_config.validate()
    return train_config, model_config


@dataclass
class LoopState:
    """Where the loop is: enough, with the checkpointed tensors, to continue exactly."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps (batches) done in all
    step_in_epoch: int = 0  # batches done in the current, unfinished epoch
    epoch_seconds: float = 0.0  # training seconds spent in the current epoch so far
    seed: int = 0


@dataclass
class Training:
    """Everything one `fit` call works on; the loop's functions read and update it."""

    run_dir: Path
    cfg: TrainConfig
    model: GenerativeModel
    optimizers: dict[str, torch.optim.Optimizer]
    loss_fn: Callable  # model.loss, torch.compile'd if asked, in one DDP wrapper per phase across processes (_loss_fn)
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    shuffle_gen: torch.Generator
    epoch_start_shuffle: torch.Tensor  # the shuffle RNG state at the current epoch's start
    state: LoopState
    running: dict[str, torch.Tensor]  # sums of the logged values over the epoch so far
    metrics_rows: list[dict]
    recent: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (step, loss or grad norm) since the last sync
    steps_this_call: int = 0
    started: float = field(default_factory=time.perf_counter)  # when this call began: elapsed and remaining time
    ranks: distributed.Ranks = field(default_factory=distributed.Ranks)  # which process of how many (one without torchrun)
    scalers: dict[str, torch.amp.GradScaler] = field(default_factory=dict)  # fp16 only: one gradient scaler per phase
    ema: WeightAverage | None = None  # --ema: the average of the weights, updated after every step
    sink: tracking.Sink = field(default_factory=tracking.Sink)  # TensorBoard's event files (genlab.tracking), or nothing

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    @property
    def eval_model(self) -> GenerativeModel:
        """What evaluation, health checks and model.safetensors use: the average, if kept."""
        return self.ema.model if self.ema else self.model

    @property
    def total(self) -> int:
        return total_steps(self.cfg, len(self.x_train))

    @property
    def epochs(self) -> int:
        """Epochs the budget spans: those done, then full ones from the current epoch's start, the last maybe partial."""
        left = max(self.total - self.state.step + self.state.step_in_epoch, 0)
        return self.state.epoch + math.ceil(left / batches_per_epoch(self.cfg, len(self.x_train)))


# Tests end a `fit` call after this many optimizer steps, as if the process were killed there
# (what was not checkpointed is lost); None in normal use. tests/conftest.py's `fit_killed_after`.
_kill_after_steps: int | None = None


def fit(
    train_config: TrainConfig,
    model_config: ModelConfig | None = None,
    run_dir: str | Path = "runs/run",
    *,
    resume: bool = False,
    overwrite: bool = False,
    data: DataBundle | None = None,
    progress: bool | Callable[[Progress], None] = True,
    log: Callable[[str], None] = print,
    device: str | None = None,
) -> Path:
    """Train (or continue) a run in `run_dir`; returns the folder. See the module docstring.
    `device`: continue a resumed run there instead of on its config's device (recorded).
    `progress`: True for a progress bar, or a function called with a `Progress` at every host
    sync and at each epoch's end (the lab's live display; it then gets the epoch lines too).
    The folder's lock (lock.py) is held throughout, by rank 0 under torchrun (the one writer): a
    second writer of the same folder is refused before it reads, deletes or writes anything."""
    main = distributed.env_rank() == 0
    if not main:  # under torchrun rank 0 alone logs and shows the bar
        log, progress = _silent, False
    with RunFolderLock(run_dir) if main else contextlib.nullcontext() as lock:
        t = _prepare(train_config, model_config, Path(run_dir), resume, overwrite, data, log, lock, device)
        interrupted = _InterruptFlag()
        try:
            # An epoch begun (a checkpoint after its last step) is ended with its row even at the budget.
            while t.state.step < t.total or t.state.step_in_epoch > 0:
                if not _train_epoch(t, interrupted, progress):
                    return t.run_dir  # killed in a test: nothing more is written
                row, warnings = _end_epoch(t)
                if row is not None and callable(progress):
                    progress(_progress(t, row))
                elif row is not None:
                    log(_epoch_line(t.model.name, row, t.epochs))
                for warning in warnings:
                    log(f"warning: {warning}")
                if _stop_requested(t, interrupted, at_sync=True) and t.state.step < t.total:  # Ctrl-C during the evaluation
                    raise _interrupted(t.state, t.run_dir, interrupted)
            if t.ranks.is_main:
                save_weights(t.run_dir, t.eval_model)
                write_card(t.run_dir)
            distributed.wait_for_all(t.ranks)  # no rank tears its end of the group down while another still works
        except TrainingDiverged as e:
            raise TrainingDiverged(f"{e}; {_checkpoint_note(t.run_dir)}") from None
        except Exception as e:
            if t.ranks.distributed and distributed.is_collective_failure(e):
                raise _rank_lost(t) from None
            raise
        finally:
            interrupted.restore()
            t.sink.close()
    run_dir, ranks = t.run_dir, t.ranks
    del t  # the DDP wrappers go before their process group (leave), not at interpreter exit
    distributed.leave(ranks)
    return run_dir


def _prepare(train_config, model_config, run_dir: Path, resume: bool, overwrite: bool, data, log, lock: RunFolderLock, device: str | None = None) -> Training:
    """Check the folder, configs, data and checkpoint, build the model and its optimizers, and
    only then create (or clear) the folder and write config.json: a refused run writes nothing."""
    resumable = _check_run_dir(run_dir, resume, overwrite)
    if resume and not resumable:
        log(f"nothing to resume in {run_dir} yet: starting the run")
    resume = resumable
    saved_info: dict = {}
    if resume:
        # The saved config wins: a resumed run continues exactly what was started.
        saved_train, model_config, saved_info = read_config(run_dir)
        if (train_config.epochs, train_config.steps) not in ((None, None), (saved_train.epochs, saved_train.steps)):
            saved_train.epochs, saved_train.steps = train_config.epochs, train_config.steps  # a new budget: extend a finished run
        if device is not None:
            saved_train.device = device  # e.g. a CUDA run continued on a CPU: the checkpoint's tensors are moved
        saved_train.validate()
        train_config = saved_train
    cfg, model_config = resolve_configs(train_config, model_config)
    ranks, device = distributed.join(pick_device(cfg.device))
    check_precision(cfg.precision, device)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir)
        for note in data.notes:
            log(f"data: {note}")
    if resume:  # a resumed run must see the data it started with, or it would not be the same run
        require_training_data(run_dir, saved_info, data, "resume with the same data (--data DIR or GENLAB_DATA)")
    x_train, y_train, x_test, y_test = _training_tensors(data, cfg, device)
    distributed.check_batches(len(x_train), cfg.batch_size, ranks)

    seed_everything(cfg.seed)  # every rank builds the same initial weights
    model = build_model(cfg, model_config).to(device)
    model.prepare_training(x_train)
    optimizers = _optimizers(model, cfg, device)
    ema = WeightAverage(model, cfg.ema) if cfg.ema else None  # from the initial weights, before DDP wraps the model
    shuffle_gen = torch.Generator().manual_seed(cfg.seed)  # the same order on every rank
    t = Training(
        run_dir, cfg, model, optimizers, _loss_fn(model, cfg, ranks, device),
        x_train, y_train, x_test, y_test, shuffle_gen, shuffle_gen.get_state(), LoopState(seed=cfg.seed), {}, [],
        ranks=ranks, scalers={p: s for p in model.phases if (s := grad_scaler(cfg.precision, device)) is not None}, ema=ema,
    )
    if ranks.rank > 0:  # each rank its own noise; rank 0 keeps the stream one process would draw
        torch.manual_seed(distributed.rank_seed(cfg.seed, ranks.rank, 0))
    if resume and (run_dir / CHECKPOINT_FILE).is_file():
        _load_checkpoint(t)
        log(f"resuming {run_dir} at epoch {t.state.epoch + 1}, step {t.state.step}")
    if ranks.is_main:
        _write_run_start(t, resume, overwrite, model_config, saved_info, data, lock)
    t.sink = tracking.open_sink(t, resume, log)
    model.train()
    return t


def _loss_fn(model: GenerativeModel, cfg: TrainConfig, ranks: distributed.Ranks, device: torch.device) -> Callable:
    """model.loss with its wrappers, in the one place they go: torch.compile if asked, and
    across processes one DDP wrapper per phase (genlab.distributed), built on every rank at once."""
    loss_fn = torch.compile(model.loss) if cfg.compile else model.loss
    if ranks.distributed:
        phase_params = {phase: set(map(id, model.phase_parameters(phase))) for phase in model.phases}
        loss_fn = distributed.phase_loss_fns(model, phase_params, loss_fn, ranks, device)
    return loss_fn


def _write_run_start(t: Training, resume: bool, overwrite: bool, model_config: ModelConfig, saved_info: dict, data: DataBundle, lock: RunFolderLock) -> None:
    """Rank 0, once every check has passed on every rank: create (or clear) the folder and write
    config.json, or, on resume, put metrics.jsonl right and record a new length or process count."""
    run_dir, cfg, world_size = t.run_dir, t.cfg, t.ranks.world_size
    _prepare_run_dir(run_dir, resume, overwrite, lock)
    if resume:
        # The checkpoint's rows are the log: a row written after it (or lost before it) is
        # put right now, so metrics.jsonl never has gaps or duplicates.
        write_metrics(run_dir, t.metrics_rows)
    if not resume:
        parameters = sum(p.numel() for p in t.model.parameters())
        info = {"versions": versions(), "device": str(t.device), "data": data.summary(), "parameters": parameters, "world_size": world_size}
        write_config(run_dir, cfg, model_config, info)
    elif (saved_info["train"].get("epochs"), saved_info["train"].get("steps"), saved_info["train"].get("device"), saved_info.get("world_size")) != (cfg.epochs, cfg.steps, cfg.device, world_size):
        kept = {k: v for k, v in saved_info.items() if k not in ("format_version", "train", "model")}
        # extended, resumed at another N, or on another device
        write_config(run_dir, cfg, model_config, {**kept, "world_size": world_size, "device": str(t.device)})


def _training_tensors(data: DataBundle, cfg: TrainConfig, device: torch.device):
    """(x_train, y_train, x_test, y_test) on the device; the test split is the per-epoch subset."""
    x_train, y_train = data.tensors("train", device)
    x_test, y_test = data.tensors("test", device)
    if cfg.binarize:  # the same binary test digits as `genlab eval` scores
        x_test = fixed_binarization(x_test)
    if cfg.epoch_eval_images:  # the per-epoch loss curves' subset; see TrainConfig
        x_test, y_test = x_test[: cfg.epoch_eval_images], y_test[: cfg.epoch_eval_images]
    if cfg.batch_size > len(x_train):
        raise GenlabError(f"batch size {cfg.batch_size} is larger than the {len(x_train)} training images")
    return x_train, y_train, x_test, y_test


def _epoch_order(t: Training) -> torch.Tensor:
    """The epoch's permutation of the training images: a pure function of the shuffle RNG state
    at the epoch's start, so a resumed epoch sees the same batches in the same order."""
    t.shuffle_gen.set_state(t.epoch_start_shuffle)
    return torch.randperm(len(t.x_train), generator=t.shuffle_gen).to(t.device)


def _train_epoch(t: Training, interrupted: _InterruptFlag, progress: bool | Callable[[Progress], None]) -> bool:
    """The rest of the current epoch's batches; False if a test's kill point was reached."""
    cfg, state = t.cfg, t.state
    order = _epoch_order(t)
    # One gather per epoch, so every batch below is a contiguous slice (no per-step copy).
    x_epoch, y_epoch = t.x_train[order], t.y_train[order]
    n_train = len(t.x_train)
    n_batches = min(batches_per_epoch(cfg, n_train), state.step_in_epoch + t.total - state.step)  # the budget may end mid-epoch
    bar = tqdm(
        total=t.total, initial=state.step, desc=f"{t.model.name} epoch {state.epoch + 1}/{t.epochs}",
        disable=progress is not True, leave=False, dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    for batch_index in range(state.step_in_epoch, n_batches):
        start, stop = batch_index * cfg.batch_size, min((batch_index + 1) * cfg.batch_size, n_train)
        rows = distributed.shard(start, stop, t.ranks)  # this process's share of the global batch (all of it in one)
        _train_step(t, x_epoch[rows], y_epoch[rows], stop - start)
        bar.update(1)
        last = batch_index == n_batches - 1
        at_sync = state.step % SYNC_EVERY == 0 or last
        if at_sync:
            _check_finite(t)
            t.sink.log_steps(state.step, t.running, t.optimizers)
            if callable(progress):
                progress(_progress(t))
            elif progress:
                bar.set_postfix({k: f"{v:.4g}" for k, v in _running_means(t).items()})
        stop_now = _stop_requested(t, interrupted, at_sync)
        if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and not last) or stop_now:
            _check_finite(t)
            state.epoch_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            _save_checkpoint(t)
            if stop_now:
                bar.close()
                raise _interrupted(state, t.run_dir, interrupted)
        if _kill_after_steps is not None and t.steps_this_call >= _kill_after_steps:
            bar.close()
            return False
    bar.close()
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)
    state.epoch_seconds += time.perf_counter() - t0
    return True


def _train_step(t: Training, xb: torch.Tensor, yb: torch.Tensor, n_global: int) -> None:
    """One batch (this process's `xb` of the `n_global` images): every phase in order, each
    stepping its own optimizer; logs summed in `running`."""
    if t.cfg.binarize:  # a fresh draw per step (dynamic binarisation): the global RNG, checkpointed
        xb = binarize(xb)
    model, step = t.model, t.state.step + 1
    # DDP averages the ranks' gradients; weighting each rank's mean by its share of the batch
    # makes that the global batch's mean however unevenly it splits (1.0 in one process).
    weight = len(xb) * t.ranks.world_size / n_global
    lr = learning_rate(t.cfg, step, t.total)  # a pure function of the step: resumes exactly
    for optimizer in t.optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] = lr
    cache: dict = {}
    for phase in model.phases:
        with forward_context(t.cfg.precision, t.device):  # autocast for bf16/fp16; backward and step outside it
            out = t.loss_fn(xb, yb, phase, cache)
        _backward_step(t, phase, out.loss if weight == 1 else out.loss * weight, step)
        t.recent.append((step, out.loss.detach()))
        for key, value in out.logs.items():
            t.running[key] = t.running.get(key, 0) + value.detach() * len(xb)
    if t.ema:
        t.ema.update(model)
    t.running["_n"] = t.running.get("_n", 0) + torch.tensor(float(len(xb)), device=xb.device)
    t.state.step = step
    t.state.step_in_epoch += 1
    t.steps_this_call += 1


def _backward_step(t: Training, phase: str, loss: torch.Tensor, step: int) -> None:
    """Backward pass and the phase's optimizer step; under fp16 through its gradient scaler."""
    optimizer, scaler = t.optimizers[phase], t.scalers.get(phase)
    optimizer.zero_grad(set_to_none=True)
    # Gradients of this phase's own parameters only (the phase contract, models/base.py): the
    # other players' weights get none, and a graph through them may be left for a later phase.
    own = [p for group in optimizer.param_groups for p in group["params"]]
    (scaler.scale(loss) if scaler else loss).backward(inputs=own)
    if t.cfg.grad_clip > 0:
        if scaler:
            scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(own, t.cfg.grad_clip)
        if scaler is None:  # an fp16 overflow is the scaler's to skip, not a divergence
            t.recent.append((step, grad_norm.detach()))
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def _end_epoch(t: Training) -> tuple[dict | None, list[str]]:
    """Test losses, health checks and the metrics row of the epoch just trained (rank 0: they
    are computed once); then the checkpoint and the metrics log. Returns the row (None on the
    other ranks) and its warnings."""
    state = t.state
    running = distributed.sum_over_ranks(t.ranks, t.running)  # the whole global batch's sums
    n_seen = float(running.pop("_n"))
    train_logs = {k: float(v) / n_seen for k, v in running.items()}
    row, warnings = _epoch_row(t, train_logs, n_seen) if t.ranks.is_main else (None, [])
    state.epoch += 1
    state.step_in_epoch = 0
    state.epoch_seconds = 0.0
    t.running = {}
    t.epoch_start_shuffle = t.shuffle_gen.get_state()  # after this epoch's permutation: the next one's start
    # Checkpoint first, then the metrics log: a crash between the two leaves a log one row
    # short, which the resume rewrites from the checkpoint's count.
    _save_checkpoint(t)
    if t.ranks.is_main:
        write_metrics(t.run_dir, t.metrics_rows)
    return row, warnings


def _epoch_row(t: Training, train_logs: dict[str, float], n_seen: float) -> tuple[dict, list[str]]:
    """The metrics row of the epoch just trained, appended to `t.metrics_rows`, and its warnings."""
    state = t.state
    t_eval = time.perf_counter()
    test_logs = evaluate_split(t.eval_model, t.x_test, t.y_test, t.cfg.eval_batch_size, t.cfg.seed)
    health, warnings = epoch_health(t.eval_model, train_logs, t.metrics_rows, t.cfg.seed)
    row = {
        "epoch": state.epoch + 1,
        "step": state.step,
        "seconds": round(state.epoch_seconds, 4),
        "eval_seconds": round(time.perf_counter() - t_eval, 4),
        "images_per_s": round(n_seen / max(state.epoch_seconds, 1e-9), 1),
        "lr": learning_rate(t.cfg, state.step, t.total),  # of the epoch's last step
        "train": train_logs,
        "test": test_logs,
        "health": health,
    }
    if warnings:
        row["warnings"] = warnings  # shown by report.html
    t.metrics_rows.append(row)
    t.sink.log_epoch(t, row)  # before the checkpoint: a resume from an earlier one purges it
    return row, warnings


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    """The learning rate of optimizer step `step` (1, 2, …, total): linear warmup from 0 over
    `warmup_steps`, then constant, or a half cosine from lr down to LR_FLOOR·lr at the last step."""
    warmup = min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "constant":
        return cfg.lr * warmup
    progress = min(1.0, max(0, step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * warmup * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizers(model: GenerativeModel, cfg: TrainConfig, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    # fused Adam: one kernel for all parameters (supported on CPU and CUDA since torch 2.4).
    fused = device.type in ("cpu", "cuda")
    return {
        phase: torch.optim.Adam(model.phase_parameters(phase), lr=cfg.lr, betas=model.adam_betas, fused=fused)
        for phase in model.phases
    }


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Refuse an unusable output folder before anything is read, built or written; returns
    whether there is a run to resume (False for --resume of a run killed before it wrote its
    config: it simply starts)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"output path {run_dir} exists and is not a folder")
    leftovers = (WRITE_PROBE, LOCK_FILE, *(f".{name}." for name in RUN_FILES))  # a killed process's, never read
    existing = run_dir.is_dir() and any(not p.name.startswith(leftovers) for p in run_dir.iterdir())
    if existing and not resume and not overwrite:
        raise RunFolderError(f"output folder {run_dir} already exists: use --resume to continue it or --overwrite to replace it")
    if resume and not (run_dir / CONFIG_FILE).is_file():
        if any((run_dir / name).exists() for name in RUN_FILES):
            raise RunFolderError(f"cannot resume {run_dir}: its {CONFIG_FILE} is missing; use --overwrite to start again")
        return False
    return resume


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool, lock: RunFolderLock) -> None:
    """Create (or, for --overwrite, clear) the folder. Called only once the configs, the data
    and the checkpoint have been checked, so a refused run never deletes an old one."""
    try:
        existing = run_dir.is_dir() and any(run_dir.iterdir())
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()  # a folder made just now (or by a writer started at the same time): before any change
        if overwrite and existing and not resume:
            # Remove only what genlab wrote, never other files the user keeps there.
            for name in (*RUN_FILES, EVAL_FILE, PRIOR_FILE, PRIOR_EVAL_FILE, CARD_FILE):
                (run_dir / name).unlink(missing_ok=True)
            for folder in (FIGURES_DIR, TB_DIR):
                shutil.rmtree(run_dir / folder, ignore_errors=True)
        # Temporary files a killed process left mid-write: never read, safe to remove.
        for name in RUN_FILES:
            for stale in run_dir.glob(f".{name}.*{TMP_SUFFIX}"):
                stale.unlink(missing_ok=True)
        probe = run_dir / WRITE_PROBE
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunFolderError(f"cannot write to {run_dir}: {e.strerror}") from None


def _save_checkpoint(t: Training) -> None:
    """Every rank takes part (the RNG states and running sums are gathered); rank 0 writes."""
    model, state = t.model, t.state
    # A finite loss does not prove finite weights (the step after it may overflow): check the
    # weights themselves, once per checkpoint, so the checkpoint on disk is always a good one.
    if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
        raise TrainingDiverged(_diverged_message("weights", state.step, state.epoch, t.cfg.lr))
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if t.ema:  # the checkpoint keeps the live weights (to go on training) and their average
        tensors.update({f"ema.{k}": v for k, v in t.ema.state_dict().items()})
    optim_meta = {}
    for phase, opt in t.optimizers.items():
        sd = opt.state_dict()
        for pid, pstate in sd["state"].items():
            for key, value in pstate.items():
                tensors[f"optim.{phase}.{pid}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        optim_meta[phase] = sd["param_groups"]
    tensors.update(_rng_states(t))
    tensors["rng.shuffle"] = t.epoch_start_shuffle
    for key, value in distributed.sum_over_ranks(t.ranks, t.running).items():
        tensors[f"running.{key}"] = value
    meta = {
        "model": model.name,
        "loop": state.__dict__,
        "optimizers": optim_meta,
        "scalers": {phase: scaler.state_dict() for phase, scaler in t.scalers.items()},
        "n_metrics_rows": len(t.metrics_rows),
        "metrics": t.metrics_rows,  # the log as of this checkpoint: metrics.jsonl is rebuilt from it on resume
    }
    if t.ranks.is_main:
        save_tensors(t.run_dir / CHECKPOINT_FILE, tensors, meta)


def _rng_states(t: Training) -> dict[str, torch.Tensor]:
    """The global RNG states to checkpoint: "rng.torch" (and "rng.cuda") are rank 0's, the
    stream of a single process; across processes every other rank's as "rng.torch.rank1" etc.,
    so a resume with as many processes continues each rank's noise."""
    states = {"rng.torch": torch.get_rng_state()}
    if t.device.type == "cuda":
        states["rng.cuda"] = torch.cuda.get_rng_state(t.device)
    if t.ranks.distributed:
        for key, value in list(states.items()):
            for rank, state in enumerate(distributed.gather(t.ranks, value, t.device)):
                if rank > 0:
                    states[f"{key}.rank{rank}"] = state.to(torch.uint8)
    return states


def _load_checkpoint(t: Training) -> None:
    """Put the checkpoint's weights, optimizer states, RNG states, loop position and metrics
    rows into `t`; RunFolderError if it does not fit the run."""
    path = t.run_dir / CHECKPOINT_FILE
    tensors, meta = load_tensors(path)
    if meta.get("model") != t.model.name:
        raise RunFolderError(f"{path}: checkpoint of model '{meta.get('model')}', but the config says '{t.model.name}'")
    try:
        state = LoopState(**meta["loop"])
        model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        load_state_into(t.model, model_state, path)
        if t.ema:
            load_state_into(t.ema.model, {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}, path)
        for phase, opt in t.optimizers.items():
            groups = meta["optimizers"][phase]
            for group in groups:
                group["betas"] = tuple(group["betas"])
            per_param: dict[int, dict] = {}
            prefix = f"optim.{phase}."
            for key, value in tensors.items():
                if key.startswith(prefix):
                    pid, name = key[len(prefix) :].split(".", 1)
                    per_param.setdefault(int(pid), {})[name] = value
            opt.load_state_dict({"state": per_param, "param_groups": groups})
        _restore_rng(t, tensors, state)
        for phase, scaler in t.scalers.items():
            scaler.load_state_dict(meta["scalers"][phase])
        shuffle_state = tensors["rng.shuffle"]
        metrics_rows = meta["metrics"]
        if not isinstance(metrics_rows, list) or len(metrics_rows) != state.epoch:
            raise ValueError(f"{len(metrics_rows)} metrics rows for {state.epoch} finished epochs")
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise RunFolderError(f"{path}: checkpoint is incomplete or does not fit this model ({str(e)[:120]})") from None
    if state.step > t.total:
        asked = f"--steps {state.step}" if t.cfg.steps is not None else f"--epochs {state.epoch}"
        raise GenlabError(f"{t.run_dir} has already trained {state.epoch} epochs ({state.step} steps): ask for {asked} or more")
    t.state, t.epoch_start_shuffle, t.metrics_rows = state, shuffle_state, metrics_rows
    # The saved sums are the whole batch's: rank 0 carries them on, the others start from zero.
    running = {k[len("running.") :]: v.to(t.device) for k, v in tensors.items() if k.startswith("running.")}
    t.running = running if t.ranks.is_main else {k: torch.zeros_like(v) for k, v in running.items()}


def _restore_rng(t: Training, tensors: dict[str, torch.Tensor], state: LoopState) -> None:
    """This rank's RNG states from the checkpoint; a rank it has none for (resumed with more
    processes) is seeded from the seed, its rank and the step."""
    suffix = f".rank{t.ranks.rank}" if t.ranks.rank > 0 else ""
    if t.ranks.rank > 0 and f"rng.torch{suffix}" not in tensors:
        torch.manual_seed(distributed.rank_seed(t.cfg.seed, t.ranks.rank, state.step))
        return
    torch.set_rng_state(tensors[f"rng.torch{suffix}"])
    if f"rng.cuda{suffix}" in tensors and t.device.type == "cuda":
        torch.cuda.set_rng_state(tensors[f"rng.cuda{suffix}"], t.device)


def _checkpoint_note(run_dir: Path) -> str:
    """Where the last good checkpoint is, for the message of a stopped run."""
    path = run_dir / CHECKPOINT_FILE
    try:
        meta = load_tensors(path)[1]
        return f"the last good checkpoint (step {meta['loop']['step']}, {meta['loop']['epoch']} epochs done) is kept in {path}"
    except (GenlabError, KeyError, TypeError):
        return "no checkpoint was written before it (--checkpoint-every STEPS saves more often)"


@torch.inference_mode()
def evaluate_split(model: GenerativeModel, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> dict[str, float]:
    """Batch-size-weighted means of `model.eval_losses` over a split, with seeded noise.

    The noise (VAE's z, GAN's z) comes from a forked RNG, so evaluating never shifts the
    training RNG stream, and every epoch's test figures use the same noise.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            for key, value in model.eval_losses(xb, yb).items():
                sums[key] = sums.get(key, 0) + value.float() * len(xb)
    model.train(was_training)
    return {k: float(v) / len(x) for k, v in sums.items()}


def _interrupted(state: LoopState, run_dir: Path, flag: _InterruptFlag) -> Interrupted:
    return Interrupted(
        f"interrupted at epoch {state.epoch + 1}, step {state.step}; checkpoint saved: continue with: genlab resume {run_dir}",
        128 + flag.signum,  # the shell's convention: 130 after Ctrl-C, 143 after SIGTERM
    )


class _InterruptFlag:
    """Ctrl-C (SIGINT) or SIGTERM (what `kill`, schedulers and containers send before they
    force a stop) sets a flag that the loop reads at the next batch boundary, so the checkpoint
    it then writes is consistent (never half a GAN step). A second signal stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.is_set = False
        self.signum = int(signal.SIGINT)  # the first signal; SIGINT on a rank that was told by another
        self._previous: dict = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum, frame):
        if self.is_set:
            raise KeyboardInterrupt
        self.is_set, self.signum = True, signum

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _check_finite(t: Training) -> None:
    """One host sync: raise TrainingDiverged, naming the step, if any (step, loss or gradient
    norm) logged since the last check is NaN/inf, on any rank (every rank stops together)."""
    bad_step = None
    if t.recent:
        finite = torch.isfinite(torch.stack([v.float().reshape(()) for _, v in t.recent]))
        if not bool(finite.all()):
            bad_step = t.recent[int((~finite).nonzero()[0])][0]
        t.recent.clear()
    bad_step = distributed.first_over_ranks(t.ranks, bad_step, t.device)
    if bad_step is not None:
        raise TrainingDiverged(_diverged_message("loss or gradient", bad_step, t.state.epoch, t.cfg.lr))


def _stop_requested(t: Training, interrupted: _InterruptFlag, at_sync: bool) -> bool:
    """Whether to checkpoint and stop now for Ctrl-C/SIGTERM. One process: at any batch. Several:
    at the sync steps, where all agree (a signal reaches the ranks at different batches)."""
    if not t.ranks.distributed:
        return interrupted.is_set
    return at_sync and distributed.any_rank(t.ranks, interrupted.is_set, t.device)


def _rank_lost(t: Training) -> distributed.RankLost:
    """The one-line error of a job that lost a process: who, where, and how to go on."""
    found = distributed.lost_ranks(t.ranks)
    lost, speaks = found if found is not None else ([], True)
    who = f"rank {', '.join(map(str, lost))} of {t.ranks.world_size}" if lost else f"a process of the {t.ranks.world_size}"
    return distributed.RankLost(
        f"{who} was lost (its process ended or its machine stopped answering) in epoch {t.state.epoch + 1}; "
        f"{_checkpoint_note(t.run_dir)}: resume with: genlab resume {t.run_dir} (or under torchrun, with any number of processes)",
        speaks,
    )


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


def _diverged_message(what: str, step: int, epochs_done: int, lr: float) -> str:
    return (
        f"{what} became NaN/inf at step {step} (epoch {epochs_done + 1}): the learning rate {lr:g} is probably "
        f"too high (try --lr {lr / 10:g} or --grad-clip 1.0)"
    )


def _running_means(t: Training) -> dict[str, float]:
    """The logged values' means over the epoch so far (one host sync)."""
    n = float(t.running["_n"])
    return {k: float(v) / n for k, v in t.running.items() if k != "_n"}


def _progress(t: Training, row: dict | None = None) -> Progress:
    """Where the run is, for a `progress` function; at an epoch's end with its metrics `row`."""
    losses = row["train"] if row is not None else _running_means(t)
    return Progress(
        t.model.name, t.state.step, t.total, t.state.epoch + (row is None), t.epochs, losses,
        row["test"] if row is not None else None, time.perf_counter() - t.started, t.steps_this_call,
    )


def _epoch_line(name: str, row: dict, epochs: int) -> str:
    shown = {**{f"train_{k}": v for k, v in row["train"].items()}, **{f"test_{k}": v for k, v in row["test"].items()}}
    figures = "  ".join(f"{k} {v:.4g}" for k, v in shown.items())
    return f"{name} epoch {row['epoch']}/{epochs} ({row['seconds']:.1f}s, {row['images_per_s']:.0f} img/s)  {figures}"

