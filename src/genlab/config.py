"""Configuration as plain dataclasses, validated, with a JSON round trip.

A run is described by two objects: `TrainConfig` (the loop's mechanics: epochs, batch, seed,
data, device) and the model's own config dataclass (`models.<family>.XConfig`, a subclass of
`ModelConfig`). Both are saved, fully resolved, in `config.json` in every run folder.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Literal

from .errors import GenlabError


def check_widths(name: str, widths: tuple[int, ...]) -> None:
    """Layer widths of a model config: at least one, all positive."""
    if not widths or min(widths) < 1:
        raise GenlabError(f"{name} must be positive widths, got {widths}")


def check_off_or_positive(name: str, value: float) -> None:
    """A weight or strength that 0 switches off (grad clipping, input noise, the neighbour term)."""
    if not (math.isfinite(value) and value >= 0):
        raise GenlabError(f"{name} must be 0 (off) or a positive number, got {value}")


def check_seed(seed: int) -> None:
    """A seed torch can take (a signed or unsigned 64-bit integer)."""
    if not -(2**63) <= seed < 2**64:
        raise GenlabError(f"seed must fit in 64 bits, got {seed}")


def check_fraction(name: str, value: float, upper: float) -> None:
    """A rate or probability of a config (dropout, label smoothing): in [0, upper)."""
    if not 0 <= value < upper:
        raise GenlabError(f"{name} must be in [0, {upper:g}), got {value}")


@dataclass
class ModelConfig:
    """Fields every model has; each model family subclasses this with its own fields."""

    latent_dim: int = 2  # size of the code z; 2 lets us draw the latent space directly

    def validate(self) -> None:
        check_choices(self)
        if self.latent_dim < 1:
            raise GenlabError(f"latent_dim must be at least 1, got {self.latent_dim}")


# The dtype autocast runs the forward passes in; weights, optimizer state and loss sums stay float32.
Precision = Literal["fp32", "bf16", "fp16"]
LRSchedule = Literal["constant", "cosine"]
# What a run gets for the loop fields below that its model's `defaults` leave unstated.
LOOP_DEFAULTS = {"ema": 0.0, "lr_schedule": "constant", "warmup_steps": 0}


@dataclass
class TrainConfig:
    """The training loop's knobs. None means: the model's own default (`GenerativeModel.defaults`),
    filled in when the run starts."""

    model: str = "vae"  # registry name, see `genlab.models.MODELS`
    epochs: int | None = None  # passes over the training split (default: the model's own, unless --steps is given)
    steps: int | None = None  # optimizer steps in all, whatever the data's size (nanoGPT's max_iters); instead of epochs, not with them
    batch_size: int | None = None  # images per optimizer step (default: the model's own)
    lr: float | None = None  # Adam learning rate, every optimizer of the model (default: the model's own)
    lr_schedule: LRSchedule | None = None  # constant, or cosine: from lr down to a tenth of it over the run's steps (default: the model's own, else constant)
    warmup_steps: int | None = None  # raise the learning rate linearly from 0 over the first N optimizer steps (default: the model's own, else 0)
    ema: float | None = None  # decay of a moving average of the weights, which evaluation, samples and model.safetensors use (0: off; default: the model's own, else 0)
    seed: int = 0  # seeds weights, shuffling, noise: same seed + CPU = same run
    dataset: str = "mnist"  # mnist, fashion-mnist, kmnist
    data_dir: str | None = None  # folder with IDX files; None: GENLAB_DATA, cache, download, offline
    device: str = "auto"  # auto = CUDA, then MPS, then CPU
    checkpoint_every: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    grad_clip: float = 0.0  # clip each optimizer's gradient norm to this (0: off)
    binarize: bool = False  # train on stochastically binarised pixels, score a fixed binarised test split (NLL papers' setting)
    compile: bool = False  # torch.compile the model's loss (measured: see benchmarks/README.md)
    precision: Precision = "fp32"  # forward passes under autocast: bf16 (fast on CPUs with avx512_bf16/AMX and on recent GPUs) or fp16 (CUDA only, with a gradient scaler)
    eval_batch_size: int = 1000  # batch for test-set losses and figures (memory, not results)
    # 2,000 keep the curves' noise far below the epoch-to-epoch changes at a fraction of the
    # full split's cost (benchmarks/README.md, "The default lab").
    epoch_eval_images: int = 2000  # first N test images scored after each epoch for the loss curves (0: all); genlab eval scores all

    def validate(self) -> None:
        check_choices(self)  # precision, lr_schedule
        if self.epochs is not None and self.epochs < 1:
            raise GenlabError(f"epochs must be at least 1, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise GenlabError(f"steps must be at least 1, got {self.steps}")
        if self.epochs is not None and self.steps is not None:  # two budgets would leave one of them a lie in config.json
            raise GenlabError(f"give the training budget as epochs or as steps, not both (got {self.epochs} epochs and {self.steps} steps)")
        if self.batch_size is not None and self.batch_size < 1:
            raise GenlabError(f"batch size must be at least 1, got {self.batch_size}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise GenlabError(f"learning rate must be a positive finite number, got {self.lr}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise GenlabError(f"warmup-steps must be 0 or more, got {self.warmup_steps}")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise GenlabError(f"ema must be 0 (off) or a decay below 1, e.g. 0.999; got {self.ema}")
        if self.checkpoint_every < 0:
            raise GenlabError(f"checkpoint-every must be 0 or more steps, got {self.checkpoint_every}")
        check_off_or_positive("grad-clip", self.grad_clip)
        check_seed(self.seed)
        if self.eval_batch_size < 1:
            raise GenlabError(f"eval batch size must be at least 1, got {self.eval_batch_size}")
        if self.epoch_eval_images < 0:
            raise GenlabError(f"epoch-eval-images must be 0 (the whole test split) or more, got {self.epoch_eval_images}")


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def choices(hint) -> tuple | None:
    """The allowed values of a choice field (`Literal[...]`, optionally `| None`), else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None


def check_choices(config) -> None:
    """Every choice field of a config dataclass holds one of its values (None where allowed)."""
    for name, hint in typing.get_type_hints(type(config)).items():
        allowed = choices(hint)
        value = getattr(config, name, None)
        if allowed and value is not None and value not in allowed:
            raise GenlabError(f"{name} must be one of {', '.join(map(str, allowed))}, got '{value}'")


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass `cls` from `data` (a saved, fully resolved config), refusing unknown or
    missing keys and values of the wrong type: a field is never silently given today's default."""
    if not isinstance(data, dict):
        raise GenlabError(f"{where}: expected a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise GenlabError(f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    missing = sorted(set(known) - set(data))
    if missing:
        raise GenlabError(f"{where}: missing field(s) {', '.join(missing)} for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        values[name] = _check_type(value, hints[name], f"{where}.{name}")
    config = cls(**values)
    config.validate()
    return config


def _check_type(value, hint, where: str):
    """Accept `value` if it fits the annotation `hint` (int, float, str, bool, Literal, X | None, tuple)."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:  # which value is checked by check_choices, with the field's name
        hint = type(typing.get_args(hint)[0])
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
        non_none = [a for a in typing.get_args(hint) if a is not type(None)]
        return _check_type(value, non_none[0], where)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            return tuple(_check_type(v, item, where) for v in value)
    raise GenlabError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
