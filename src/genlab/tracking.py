"""TensorBoard event files of a run, in `RUN/tb/`: one sink the training loop reports to.

The loop (genlab.train) calls a `Sink` at three places and never asks which one it has:
  - `log_steps` at each host sync (every SYNC_EVERY steps): the logged values averaged over the
    steps since the last call (a difference of the loop's running sums, so nothing more is
    summed), each optimizer's learning rate and the images per second;
  - `log_epoch` with the epoch's metrics row: train and test losses, health figures and
    warnings, a sample grid drawn from the same z every epoch (the film of a GAN learning),
    reconstructions of fixed test digits and, for a model that encodes, the test digits' codes
    as a Projector embedding with their labels and a sprite of the digits;
  - `close` when `fit` returns.
`open_sink` gives rank 0 a `TensorBoardSink` when the run has `tensorboard` on and the writer
imports, else the do-nothing `Sink`. A missing package is said once per process, with the
command that adds it.

Writer: `torch.utils.tensorboard.SummaryWriter` (needs the `tensorboard` package, the one that
also serves the pages; README's dependency table says why not tensorboardX).

Resume: the writer opens with `purge_step` = the checkpoint's step + 1; TensorBoard's reader
then drops whatever the killed process wrote after the checkpoint (it will be written again),
so no step shows twice. Projector folders past the checkpoint are deleted for the same reason.

After `genlab eval`, `log_evaluation` writes the headline metrics with the run's settings as
TensorBoard hparams, so `tensorboard --logdir lab` compares the runs in one table.
"""

from __future__ import annotations

import io
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .runs import TB_DIR
from .utils import make_generator

INSTALL_HINT = "pip install 'genlab[tensorboard]'"
SAMPLE_SEED_OFFSET = 104729  # the film's fixed z: seed + this, apart from the figures' and health's seeds
SAMPLE_GRID = 8  # an 8×8 grid of samples (a conditional model: 10 rows, one per digit, of 8)
RECON_DIGITS = 16  # first test digits shown with their reconstructions
PROJECTOR_DIGITS = 1000  # test digits in the Projector: a 32×32 sprite of 28-pixel digits
PROJECTOR_DIR = "projector"  # RUN/tb/projector/: metadata.tsv, sprite.png, step-NNNNNNNN/tensors.tsv
PROJECTOR_CONFIG = "projector_config.pbtxt"  # what TensorBoard's Projector reads in the run's log folder
HPARAMS_SUFFIX = ".hparams"  # the event file log_evaluation rewrites (one per run)
FLUSH_SECONDS = 5  # the writer's flush interval: a live view lags training by this much

_told_missing = False  # the install hint is said once per process


class Sink:
    """Where the loop's figures go: this base class drops them (TensorBoard off, not installed,
    or a rank other than 0)."""

    def log_steps(self, step: int, running: dict[str, torch.Tensor], optimizers: dict) -> None:
        """The loop's running sums over the epoch so far (with "_n", the images seen)."""

    def log_epoch(self, t, row: dict) -> None:
        """The epoch's metrics row; `t` the loop's Training (model, test split, seed)."""

    def close(self) -> None:
        """Write out what is buffered."""


def writer_class():
    """torch's SummaryWriter, or None when the `tensorboard` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


def open_sink(t, resume: bool, log: Callable[[str], None]) -> Sink:
    """The sink for the Training `t` (rank 0 only writes); a resumed run appends after its
    checkpoint's step (an --overwrite'n run's RUN/tb/ was removed with its other files)."""
    tb_dir = Path(t.run_dir) / TB_DIR
    if not t.ranks.is_main or not t.cfg.tensorboard:
        return Sink()
    writer = writer_class()
    if writer is None:
        global _told_missing
        if not _told_missing:
            log(f"tensorboard: not installed, so no event files are written ({INSTALL_HINT} adds them; --no-tensorboard silences this)")
            _told_missing = True
        return Sink()
    return TensorBoardSink(writer, tb_dir, t, purge_step=t.state.step + 1 if resume else None)


class TensorBoardSink(Sink):
    def __init__(self, writer_cls, tb_dir: Path, t, purge_step: int | None):
        self.dir = tb_dir
        if purge_step is not None:
            _drop_projector_steps(tb_dir, purge_step)
        self.writer = writer_cls(log_dir=str(tb_dir), purge_step=purge_step, flush_secs=FLUSH_SECONDS)
        # The sums as of now: after a resume, the first window starts at the checkpoint.
        self._last = {k: float(v) for k, v in t.running.items()}
        self._last_time = time.perf_counter()

    def log_steps(self, step: int, running: dict[str, torch.Tensor], optimizers: dict) -> None:
        now = {k: float(v) for k, v in running.items()}
        if now.get("_n", 0.0) < self._last.get("_n", 0.0):  # a new epoch: the loop's sums restarted
            self._last = {}
        n = now.get("_n", 0.0) - self._last.get("_n", 0.0)
        if n <= 0:
            return
        for key, value in now.items():
            if key != "_n":
                self.writer.add_scalar(f"steps/{key}", (value - self._last.get(key, 0.0)) / n, step)
        for phase, optimizer in optimizers.items():
            self.writer.add_scalar(f"lr/{phase}", optimizer.param_groups[0]["lr"], step)
        seconds = time.perf_counter() - self._last_time
        self.writer.add_scalar("steps/images_per_s", n / max(seconds, 1e-9), step)
        self._last, self._last_time = now, time.perf_counter()

    def log_epoch(self, t, row: dict) -> None:
        step, w = row["step"], self.writer
        for section in ("train", "test", "health"):
            for key, value in row.get(section, {}).items():
                w.add_scalar(f"{section}/{key}", value, step)
        for key in ("images_per_s", "seconds", "eval_seconds"):
            w.add_scalar(f"epoch/{key}", row[key], step)
        w.add_scalar("epoch/epoch", row["epoch"], step)
        if row.get("warnings"):
            w.add_text("warnings", "\n\n".join(row["warnings"]), step)
        model = t.eval_model  # the moving average where the run keeps one (--ema), as evaluation uses
        was_training = model.training
        model.eval()
        devices = [t.device] if t.device.type == "cuda" else []
        try:
            # A forked RNG: the pictures never shift what a seeded run trains.
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                for tag, grid in epoch_images(model, t.x_test, t.y_test, t.cfg.seed).items():
                    w.add_image(tag, grid, step, dataformats="HW")
                if model.can_encode:
                    self._write_embedding(model, t.x_test, t.y_test, step, row["epoch"])
        finally:
            model.train(was_training)
        w.flush()
        self._last_time = time.perf_counter()  # the evaluation is not training time

    def _write_embedding(self, model, x: torch.Tensor, y: torch.Tensor, step: int, epoch: int) -> None:
        x, y = spread(x, y, PROJECTOR_DIGITS)
        codes = model.encode(x, labels=y if model.conditional else None).float().cpu().numpy()  # (N, latent_dim)
        if codes.shape[1] < 3:  # the Projector's PCA needs 3 columns: zeros show a 2-D code as the plane it is
            codes = np.pad(codes, ((0, 0), (0, 3 - codes.shape[1])))
        write_projector_step(self.dir, step, epoch, codes, x, y)

    def close(self) -> None:
        self.writer.close()


@torch.inference_mode()
def epoch_images(model, x_test: torch.Tensor, y_test: torch.Tensor, seed: int) -> dict[str, np.ndarray]:
    """The epoch's pictures as (H, W) arrays in [0, 1], dark digits on a light ground like the
    figures: "samples" from the same z every epoch (can_sample), "reconstructions" of the first
    test digits, each row of originals above its reconstructions (can_encode)."""
    from .plots import tile

    images = {}
    if model.can_sample:
        gen = make_generator(seed + SAMPLE_SEED_OFFSET, model.device)
        rows = 10 if model.conditional else SAMPLE_GRID
        labels = torch.arange(10, device=model.device).repeat_interleave(SAMPLE_GRID) if model.conditional else None
        samples = model.sample(rows * SAMPLE_GRID, generator=gen, labels=labels)  # (rows·8, 1, 28, 28)
        images["samples"] = 1.0 - tile(samples.float().cpu().numpy(), rows, SAMPLE_GRID)
    if model.can_encode:
        x, y = spread(x_test, y_test, RECON_DIGITS)
        recon = model.reconstruct(x, labels=y if model.conditional else None)
        cols = SAMPLE_GRID
        pairs = [part for i in range(0, len(x), cols) for part in (x[i : i + cols], recon[i : i + cols])]
        stacked = torch.cat(pairs).float().cpu().numpy()  # (2·N, 1, 28, 28): originals, then their reconstructions
        images["reconstructions"] = 1.0 - tile(stacked, math.ceil(len(stacked) / cols), cols)
    return images


def spread(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n test digits evenly spaced through the split (all if it has fewer): a split sorted by
    class, like the offline one, still shows every digit."""
    index = torch.linspace(0, len(x) - 1, min(n, len(x)), device=x.device).round().long()
    return x[index], y[index]


# --------------------------------------------------------------------------------------------
# The Projector: written by hand rather than with SummaryWriter.add_embedding, which rewrites
# projector_config.pbtxt from its own memory (a resumed writer would forget earlier epochs) and
# writes the same sprite again every epoch.
# --------------------------------------------------------------------------------------------


def _step_dir(step: int, epoch: int) -> str:
    return f"step-{step:08d}-epoch-{epoch}"


def _dir_step(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def write_projector_step(tb_dir: Path, step: int, epoch: int, codes: np.ndarray, x: torch.Tensor, y: torch.Tensor) -> None:
    """The codes (N, D) of one epoch, plus (once) the labels and the sprite of the digits `x`;
    then projector_config.pbtxt listing every epoch's codes on disk."""
    from PIL import Image

    folder = tb_dir / PROJECTOR_DIR
    (folder / _step_dir(step, epoch)).mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / _step_dir(step, epoch) / "tensors.tsv", codes, delimiter="\t", fmt="%.6g")
    if not (folder / "sprite.png").is_file():
        (folder / "metadata.tsv").write_text("".join(f"{int(label)}\n" for label in y.tolist()))
        side = math.ceil(math.sqrt(len(x)))
        digits = x.float().cpu().numpy().reshape(-1, *x.shape[-2:])
        sprite = np.zeros((side * digits.shape[1], side * digits.shape[2]), dtype=np.float32)
        for i, digit in enumerate(digits):  # row-major, as the Projector reads a sprite
            r, c = divmod(i, side)
            sprite[r * digits.shape[1] : (r + 1) * digits.shape[1], c * digits.shape[2] : (c + 1) * digits.shape[2]] = digit
        buffer = io.BytesIO()
        Image.fromarray(np.round(sprite * 255).astype(np.uint8)).save(buffer, format="PNG")
        (folder / "sprite.png").write_bytes(buffer.getvalue())
    _write_projector_config(tb_dir, digit_shape=tuple(x.shape[-2:]))


def _write_projector_config(tb_dir: Path, digit_shape: tuple[int, int]) -> None:
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config = ProjectorConfig()
    for step_dir in sorted((tb_dir / PROJECTOR_DIR).glob("step-*")):
        embedding = config.embeddings.add()
        embedding.tensor_name = f"codes, epoch {step_dir.name.split('-')[-1]} (step {_dir_step(step_dir)})"
        embedding.tensor_path = f"{PROJECTOR_DIR}/{step_dir.name}/tensors.tsv"
        embedding.metadata_path = f"{PROJECTOR_DIR}/metadata.tsv"
        embedding.sprite.image_path = f"{PROJECTOR_DIR}/sprite.png"
        embedding.sprite.single_image_dim.extend(digit_shape)
    (tb_dir / PROJECTOR_CONFIG).write_text(text_format.MessageToString(config))


def _drop_projector_steps(tb_dir: Path, purge_step: int) -> None:
    """Projector folders of steps the resumed run will write again."""
    for step_dir in (tb_dir / PROJECTOR_DIR).glob("step-*"):
        if _dir_step(step_dir) >= purge_step:
            shutil.rmtree(step_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# After `genlab eval`: hparams
# --------------------------------------------------------------------------------------------


def log_evaluation(run_dir: Path, results: dict) -> bool:
    """The headline metrics of eval.json `results` as TensorBoard hparams of the run (its model,
    size and the settings that differ from the defaults), in RUN/tb/'s one hparams event file,
    replaced on every evaluation. False (nothing written) when TensorBoard is off for the run or
    not installed."""
    from .metrics import HEADLINE
    from .modelcard import changed_settings
    from .runs import read_config, read_metrics

    train_config, model_config, _ = read_config(run_dir)
    writer_cls = writer_class()
    if not train_config.tensorboard or writer_cls is None:
        return False
    from torch.utils.tensorboard.summary import hparams

    tb_dir = Path(run_dir) / TB_DIR
    rows = read_metrics(run_dir)
    step = rows[-1]["step"] if rows else 0
    settings = {f"{section}.{name}": value for section, name, value, _ in changed_settings(train_config, model_config)}
    values = {
        "run": Path(run_dir).name,
        "model": train_config.model,
        "latent_dim": model_config.latent_dim,
        **{k: getattr(train_config, k) for k in ("epochs", "batch_size", "lr", "seed", "precision")},
        "prior": results.get("prior", "standard normal"),
        "settings": ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults",
    }
    metrics = {f"eval/{name}": value for name, value in results["metrics"].items() if name in HEADLINE}
    # Every run declares the same columns (all headline metrics), so the table is the same
    # whichever run TensorBoard reads the experiment from.
    experiment, start, end = hparams({k: _hparam(v) for k, v in values.items()}, {f"eval/{name}": 0.0 for name in HEADLINE})
    for old in tb_dir.glob(f"events.out.tfevents.*{HPARAMS_SUFFIX}"):
        old.unlink()
    with writer_cls(log_dir=str(tb_dir), filename_suffix=HPARAMS_SUFFIX) as w:
        for summary in (experiment, start, end):
            w.file_writer.add_summary(summary, step)
        for tag, value in metrics.items():
            w.add_scalar(tag, value, step)
    return True


def _hparam(value):
    """A value TensorBoard's hparams take: bool, number or string."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)

