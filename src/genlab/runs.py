"""Run folders: what is saved, how it is loaded back, and the `Run` object users work with.

A run folder holds
  config.json            the resolved configs, versions, device, data source and hash
  model.safetensors      the final weights (written when training finishes)
  checkpoint.safetensors weights, optimizer tensors and RNG states of the last checkpoint,
                         with the loop's position (epoch, step) as JSON in its metadata
  metrics.jsonl          one JSON object per finished epoch
  eval.json              the measured metrics (`genlab eval`), when the run has been evaluated
  prior.safetensors      a VAE's fitted Gaussian-mixture prior (`genlab fit-prior`), if any,
  eval-gmm.json          and the metrics measured with it (`genlab eval --prior gmm`)
  figures/               the PNG figures (`genlab plot RUN_DIR` rewrites them)
  README.md              the model card (genlab.modelcard), rewritten by train, eval and fit-prior
  tb/                    TensorBoard event files and Projector data (genlab.tracking), unless --no-tensorboard
Every file is written atomically (utils.atomic_write_*), and nothing is ever unpickled: tensors
come from safetensors, everything else from JSON validated against the config dataclasses.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from . import __version__
from .config import ModelConfig, TrainConfig, from_dict, to_dict
from .errors import GenlabError, RunFolderError
from .limits import (
    METRICS_ROW_FIELDS,
    SAMPLE_BATCH,
    check_config_fits_weights,
    check_fields,
    check_run_info,
    meta_state_shapes,
    parse_json,
    read_json_text,
    safetensors_header,
)
from .models import GenerativeModel, get_model_class
from .models.sampling import SamplerOptions
from .precision import forward_context
from .utils import atomic_write_bytes, atomic_write_json, atomic_write_text, make_generator, pick_device

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"  # written by `genlab eval` and `genlab lab` (genlab.evaluate)
PRIOR_FILE = "prior.safetensors"  # genlab.prior
PRIOR_EVAL_FILE = "eval-gmm.json"  # `genlab eval --prior gmm`
FIGURES_DIR = "figures"
CARD_FILE = "README.md"  # genlab.modelcard
TB_DIR = "tb"  # genlab.tracking
# Bump when a run folder's files change incompatibly; a folder of another version is refused
# (no compatibility layer before a release: such a run is retrained). 3: train.precision;
# 4: train.ema, lr_schedule, warmup_steps (SCGAN's g_ema is the loop's ema), train.steps, train.tensorboard;
# 5: a flow's sample_shift; 6: a flow's coupling.
FORMAT_VERSION = 6


def versions() -> dict[str, str]:
    return {
        "genlab": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------


def write_config(run_dir: Path, train_config: TrainConfig, model_config: ModelConfig, extra: dict) -> None:
    atomic_write_json(
        run_dir / CONFIG_FILE,
        {
            "format_version": FORMAT_VERSION,
            "train": to_dict(train_config),
            "model": to_dict(model_config),
            **extra,
        },
    )


def other_training_data(info: dict, data) -> dict | None:
    """The data summary a run's config.json records (its `info`), when its SHA-256 differs from
    that of `data` (a DataBundle): the run was trained on other digits. None when it matches or
    the run recorded none."""
    saved = info.get("data") if isinstance(info.get("data"), dict) else {}
    return saved if saved.get("sha256") and saved["sha256"] != data.sha256 else None


def require_training_data(run_dir: Path, info: dict, data, remedy: str) -> None:
    """Refuse to go on with a run (resume it, fit its prior) on other digits than it trained on;
    `remedy` ends the one-line error with what to do."""
    saved = other_training_data(info, data)
    if saved:
        raise RunFolderError(
            f"{run_dir} was trained on other data ({saved.get('source', '?')}, sha256 {saved['sha256'][:12]}) than found now "
            f"({data.source}, sha256 {data.sha256[:12]}): {remedy}"
        )


def read_config(run_dir: Path) -> tuple[TrainConfig, ModelConfig, dict]:
    """Load and validate config.json; returns (train config, model config, the whole JSON)."""
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise RunFolderError(f"{run_dir} is not a genlab run folder (no {CONFIG_FILE})")
    raw = parse_json(read_json_text(path), str(path))
    if not isinstance(raw, dict):
        raise RunFolderError(f"{path}: missing the 'train' and 'model' sections")
    if raw.get("format_version") != FORMAT_VERSION:
        raise RunFolderError(
            f"{path}: run folder format {raw.get('format_version')!r}, this genlab reads format {FORMAT_VERSION} only: "
            f"retrain the run with this genlab (genlab train ... --overwrite)"
        )
    if not isinstance(raw.get("train"), dict) or not isinstance(raw.get("model"), dict):
        raise RunFolderError(f"{path}: missing the 'train' and 'model' sections")
    check_run_info(raw, str(path))
    try:
        train_config = from_dict(TrainConfig, raw["train"], where=f"{path}: train")
        model_cls = get_model_class(train_config.model)
        model_config = from_dict(model_cls.config_class, raw["model"], where=f"{path}: model")
    except RunFolderError:
        raise
    except Exception as e:  # GenlabError from validation: re-raised as a run-folder problem
        message = str(e)  # say which file, so the user knows what to fix
        raise RunFolderError(message if str(path) in message else f"{path}: {message}") from None
    return train_config, model_config, raw


def build_model(train_config: TrainConfig, model_config: ModelConfig) -> GenerativeModel:
    model_cls = get_model_class(train_config.model)
    meta_state_shapes(model_cls, model_config)  # refuses an absurd size before allocating it
    return model_cls(model_config)


# --------------------------------------------------------------------------------------------
# safetensors files
# --------------------------------------------------------------------------------------------


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """Write tensors with JSON metadata, atomically. Tensors are copied to contiguous CPU memory."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    payload = save_safetensors_bytes(flat, metadata={"genlab": json.dumps(metadata)})
    atomic_write_bytes(path, payload)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a safetensors file written by `save_tensors`; RunFolderError if unreadable."""
    if not path.is_file():
        raise RunFolderError(f"{path} not found")
    try:
        header = safetensors_header(path)  # bounded, and consistent with the file's size, before reading it
        tensors = load_safetensors_bytes(path.read_bytes())
        metadata = json.loads(header.get("__metadata__", {}).get("genlab", "{}"))
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError, TypeError, OSError, RecursionError) as e:
        raise RunFolderError(f"{path}: not a readable safetensors file ({str(e)[:120]})") from None
    if not isinstance(metadata, dict):
        raise RunFolderError(f"{path}: metadata is not a JSON object")
    return tensors, metadata


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy `state` into `model`, refusing any missing, extra or differently shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise RunFolderError(
            f"{source}: weights do not fit this model (another model or architecture?): "
            f"{len(missing)} missing, {len(extra)} unexpected tensors"
            + (f", e.g. '{(missing or extra)[0]}'" if missing or extra else "")
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise RunFolderError(
                f"{source}: tensor '{key}' has shape {tuple(state[key].shape)}, this model expects {tuple(tensor.shape)} "
                "(another architecture or latent size?)"
            )
        if not torch.isfinite(state[key]).all() and state[key].is_floating_point():
            raise RunFolderError(f"{source}: tensor '{key}' holds NaN or infinite values")
    model.load_state_dict(state)


def save_weights(run_dir: Path, model: GenerativeModel) -> None:
    save_tensors(run_dir / WEIGHTS_FILE, model.state_dict(), {"model": model.name, "format_version": FORMAT_VERSION})


def load_weights(run_dir: Path, model: GenerativeModel, path: Path | None = None) -> None:
    path = path or run_dir / WEIGHTS_FILE
    tensors, meta = load_tensors(path)
    if meta.get("model") != model.name:
        raise RunFolderError(f"{path}: weights of model '{meta.get('model')}', but the config says '{model.name}'")
    load_state_into(model, tensors, path)


# --------------------------------------------------------------------------------------------
# metrics.jsonl
# --------------------------------------------------------------------------------------------


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(read_json_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise RunFolderError(f"{path}: line {i} is not valid JSON") from None
        if not isinstance(row, dict):
            raise RunFolderError(f"{path}: line {i} is not a JSON object")
        check_fields(row, METRICS_ROW_FIELDS, f"{path}: line {i}", others="number")
        rows.append(row)
    return rows


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """Rewrite the whole log atomically: it is small, and a resume can cut it back cleanly."""
    atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


# --------------------------------------------------------------------------------------------
# The Run object: a trained model and its folder
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A trained run folder, loaded: `run.sample(16)`, `run.encode(x)`, `run.decode(z)`."""

    path: Path
    model: GenerativeModel
    train_config: TrainConfig
    model_config: ModelConfig
    info: dict = field(default_factory=dict)  # the whole config.json (versions, data, device)

    @property
    def name(self) -> str:
        return self.train_config.model

    @property
    def metrics(self) -> list[dict]:
        return read_metrics(self.path)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.ndim == 3:  # (B, 28, 28) -> (B, 1, 28, 28)
            x = x.unsqueeze(1)
        return x.to(self.device)

    def _labels(self, labels) -> torch.Tensor | None:
        return None if labels is None else torch.as_tensor(labels, dtype=torch.long, device=self.device)

    def sampler(
        self, steps: int | None = None, solver: str | None = None, guidance: float | None = None, shift: float | None = None
    ) -> SamplerOptions:
        """Sampler options checked against the model: one line for a bad value, or for guidance
        asked of a model without classes to guide by."""
        sampler = SamplerOptions(steps=steps, solver=solver, guidance=guidance, shift=shift)
        if guidance is not None and not self.model.conditional:
            raise GenlabError(f"--guidance needs a conditional model (cflow); '{self.name}' has no classes to guide towards")
        return sampler

    @torch.inference_mode()
    def sample(
        self, n: int, seed: int = 0, labels=None, prior=None, generator=None,
        steps: int | None = None, solver: str | None = None, guidance: float | None = None, shift: float | None = None,
    ) -> torch.Tensor:
        """n generated images (n, 1, 28, 28) in [0, 1], reproducible from `seed`; `prior`: a fitted
        `prior.MixturePrior` to draw the codes from instead of the model's N(0, I); `generator`:
        draw from it instead (batches of one long sample continue one stream). `steps`, `solver`,
        `guidance`, `shift`: an iterative model's sampler (models.sampling.SamplerOptions; None: the
        model's default); one-step models ignore them.
        Drawn SAMPLE_BATCH images at a time from the one generator, so the network's activations
        stay bounded whatever n is (a conditional model's default digits still cycle 0..9).
        An iterative model samples under the precision it trained in (bf16 autocast where it
        did): its cost is steps × a network pass, and the solver's state stays float32."""
        sampler = self.sampler(steps, solver, guidance, shift)
        gen = generator if generator is not None else make_generator(seed, self.device)
        labels = self._labels(labels)
        prior = None if prior is None else prior.to(self.device)
        blocks = []
        with self.sampling_precision():
            for start in range(0, max(n, 1), SAMPLE_BATCH):  # n = 0: one empty block, of the right shape
                b = min(SAMPLE_BATCH, n - start)
                if prior is not None:
                    blocks.append(self.decode(prior.sample(b, generator=gen)))
                else:
                    block_labels = None if labels is None else labels[start : start + b]
                    blocks.append(self.model.sample(b, generator=gen, labels=block_labels, sampler=sampler).float().cpu())
        return torch.cat(blocks)

    def sampling_precision(self):
        """The autocast context samples are drawn in: the run's own precision for an iterative
        model, float32 for the rest (their one pass is cheap; metrics stay comparable)."""
        return forward_context(self.train_config.precision if self.model.iterative else "fp32", self.device)

    @torch.inference_mode()
    def trajectory(
        self, n: int, seed: int = 0, labels=None, steps: int | None = None, solver: str | None = None,
        guidance: float | None = None, shift: float | None = None, keep: int = 8,
    ) -> torch.Tensor:
        """(keep, n, 1, 28, 28): n samples of an iterative model along t, noise first (the
        model's `trajectory`), drawn with the same noise as `sample(n, seed)`."""
        sampler = self.sampler(steps, solver, guidance, shift)
        with self.sampling_precision():
            out = self.model.trajectory(n, generator=make_generator(seed, self.device), labels=self._labels(labels), sampler=sampler, keep=keep)
        return out.float().cpu()

    @torch.inference_mode()
    def encode(self, x, labels=None) -> torch.Tensor:
        return self.model.encode(self._to_model(x), labels=self._labels(labels)).cpu()

    @torch.inference_mode()
    def decode(self, z, labels=None) -> torch.Tensor:
        """Codes or noise (B, latent_dim) -> images (B, 1, 28, 28): the decoder, or a GAN's generator."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        return self.model.decode(z, labels=self._labels(labels)).cpu()

    @torch.inference_mode()
    def reconstruct(self, x, labels=None) -> torch.Tensor:
        return self.model.reconstruct(self._to_model(x), labels=self._labels(labels)).cpu()


def load_run(path: str | os.PathLike, device: str = "cpu", weights: str = "final") -> Run:
    """Load a run folder for use: validated config, safe weights, model in eval mode.

    weights="final" reads model.safetensors; "checkpoint" (or a run that never finished) reads
    the last checkpoint's weights: their moving average for a run that keeps one (--ema), as
    model.safetensors holds.
    """
    run_dir = Path(path)
    train_config, model_config, info = read_config(run_dir)
    final = run_dir / WEIGHTS_FILE
    checkpoint_prefix = "ema." if train_config.ema else "model."  # genlab.train's checkpoint: live weights and their average
    source, prefix = (final, "") if weights == "final" and final.is_file() else (run_dir / CHECKPOINT_FILE, checkpoint_prefix)
    if source.is_file():  # a config asking for another (or an enormous) network is refused before it is built
        check_config_fits_weights(get_model_class(train_config.model), model_config, source, prefix, str(run_dir / CONFIG_FILE))
    model = build_model(train_config, model_config)
    if weights == "final" and final.is_file():
        load_weights(run_dir, model)
    elif (run_dir / CHECKPOINT_FILE).is_file():
        tensors, meta = load_tensors(run_dir / CHECKPOINT_FILE)
        if meta.get("model") != model.name:
            raise RunFolderError(f"{run_dir / CHECKPOINT_FILE}: checkpoint of model '{meta.get('model')}', config says '{model.name}'")
        prefix = checkpoint_prefix
        load_state_into(model, {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, run_dir / CHECKPOINT_FILE)
    else:
        raise RunFolderError(f"{run_dir} has no weights yet ({WEIGHTS_FILE} or {CHECKPOINT_FILE})")
    model.to(pick_device(device)).eval()
    # oneDNN's convolutions infer faster on channels-last weights (benchmarks/README.md, "What the lab's evaluation costs")
    if model.device.type == "cpu" and model.channels_last:
        model.to(memory_format=torch.channels_last)
    return Run(path=run_dir, model=model, train_config=train_config, model_config=model_config, info=info)
