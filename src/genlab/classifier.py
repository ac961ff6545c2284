"""The fixed MNIST digit classifier that the sample metrics look through.

FID, precision / recall and the class histogram of generated digits (`genlab.evaluate`) need a
feature network that knows what digits look like; ImageNet's Inception knows little about
28×28 strokes, so genlab ships its own small CNN, trained on the *training* digits only:

    genlab classifier train --seed 0 -o clf.safetensors   # trains one into clf.safetensors (+ clf.json)
    genlab classifier train --seed 0 --replace-shipped    # rebuilds src/genlab/assets/mnist_classifier.*
    genlab classifier test                                # accuracy of the shipped weights on the test split

The weights live in the package as `assets/mnist_classifier.safetensors` (about 400 kB), with a
JSON beside them saying how they were made (command, seed, data hash, accuracies). The
penultimate layer, 128 ReLU units, is the feature space of the metrics (`features`), as
Inception's pool layer is for the usual FID (Heusel et al. 2017, https://arxiv.org/abs/1706.08500).

Training sees 5,000 digits at most offline, so each batch is randomly shifted, rotated and
scaled a little (a seeded affine warp, `augment`): the classic cure for a small MNIST set.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import check_fraction
from .data import DataBundle, load_dataset, stratified_split
from .errors import GenlabError, RunFolderError
from .runs import load_state_into, load_tensors, save_tensors
from .utils import atomic_write_json, make_generator, seed_everything

ASSET_NAME = "mnist_classifier"
FEATURE_DIM = 128  # width of the penultimate layer: the feature space of FID / precision / recall
# Mean and std of MNIST pixels in [0, 1]; the network standardises its input with them.
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081
# Where `genlab classifier train` writes without -o: the current folder, never the shipped file
# (replacing that changes every later FID, so it takes --replace-shipped).
DEFAULT_OUT = f"{ASSET_NAME}.safetensors"


def default_path() -> Path:
    """The shipped weights: `<package>/assets/mnist_classifier.safetensors`."""
    return Path(str(resources.files("genlab") / "assets" / f"{ASSET_NAME}.safetensors"))


class DigitClassifier(nn.Module):
    """Three conv blocks and two linear layers, about 100k parameters (400 kB).

    (B, 1, 28, 28) in [0, 1] -> conv 16 -> pool -> (B, 16, 14, 14) -> conv 32 -> pool
    -> (B, 32, 7, 7) -> conv 64 -> pool -> (B, 64, 3, 3) -> linear -> (B, 128) features
    -> linear -> (B, 10) logits.

    Each block pools right after its convolution, before batch norm and ReLU: the elementwise
    layers then touch a quarter of the values, and on CPU they cost as much as the convolutions.
    About 4 MFLOP per image, so 10k digits take well under a second on two cores.
    """

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), dropout: float = 0.3):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(c_out), nn.ReLU())

        c1, c2, c3 = widths
        self.conv = nn.Sequential(block(1, c1), block(c1, c2), block(c2, c3), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(c3 * 3 * 3, FEATURE_DIM), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [0, 1] -> penultimate activations (B, 128)."""
        return self.embed(self.conv((x - PIXEL_MEAN) / PIXEL_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) in [0, 1] -> class logits (B, 10)."""
        return self.head(self.dropout(self.features(x)))


# --------------------------------------------------------------------------------------------
# Loading the shipped weights
# --------------------------------------------------------------------------------------------

_LOADED: dict[tuple[str, str], DigitClassifier] = {}


def load_classifier(path: str | Path | None = None, device: torch.device | str = "cpu") -> DigitClassifier:
    """The classifier in eval mode, its weights validated (names, shapes, finite values).

    Loaded once per (file, device) and process; GenlabError if the file is missing or unusable.
    """
    path = Path(path) if path is not None else default_path()
    key = (str(path.resolve()), str(device))
    if key in _LOADED:
        return _LOADED[key]
    fix = "reinstall genlab or rebuild it with `genlab classifier train --replace-shipped`"
    if not path.is_file():
        raise GenlabError(f"the MNIST classifier weights {path} are missing: {fix}")
    try:
        tensors, meta = load_tensors(path)
        if meta.get("model") != ASSET_NAME:
            raise RunFolderError(f"{path}: not a genlab MNIST classifier (metadata model={meta.get('model')!r})")
        model = DigitClassifier()
        load_state_into(model, tensors, path)
    except RunFolderError as e:
        raise GenlabError(f"the MNIST classifier weights are unusable ({e}): {fix}") from None
    # channels_last: oneDNN's faster convolution layout on CPU
    model.to(device, memory_format=torch.channels_last).eval()
    _LOADED[key] = model
    return model


def weights_sha256(path: str | Path | None = None) -> str:
    path = Path(path) if path is not None else default_path()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@torch.inference_mode()
def predict(model: DigitClassifier, x: torch.Tensor, batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, 128), predicted class (N,)) for images (N, 1, 28, 28), on the model's device."""
    device = next(model.parameters()).device
    feats, preds = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, torch.float32).contiguous(memory_format=torch.channels_last)
        f = model.features(xb)
        feats.append(f)
        preds.append(model.head(f).argmax(1))
    return torch.cat(feats), torch.cat(preds)


def accuracy(model: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    _, pred = predict(model, x)
    return float((pred.cpu() == y.cpu()).float().mean())


# --------------------------------------------------------------------------------------------
# Training, reproducibly
# --------------------------------------------------------------------------------------------


@dataclass
class ClassifierConfig:
    seed: int = 0  # seeds the weights, the shuffling, the augmentation and dropout
    epochs: int = 20  # passes over the training digits
    batch_size: int = 128  # digits per AdamW step
    lr: float = 3e-3  # peak learning rate of the one-cycle schedule (Smith & Topin 2017)
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    val_fraction: float = 0.1  # stratified share of the training digits held out for choices
    max_rotation: float = 12.0  # augmentation: rotation in degrees, uniform in ±this
    max_shift: float = 2.0  # augmentation: shift in pixels, uniform in ±this along each axis
    max_scale: float = 0.1  # augmentation: zoom factor uniform in 1 ± this

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise GenlabError(f"epochs and batch size must be at least 1, got {self.epochs} and {self.batch_size}")
        check_fraction("val_fraction", self.val_fraction, 0.5)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise GenlabError(f"learning rate must be a positive finite number, got {self.lr}")


def augment(x: torch.Tensor, config: ClassifierConfig, generator: torch.Generator) -> torch.Tensor:
    """A random small affine warp per image (rotation, zoom, shift), bilinear, zeros outside.

    (B, 1, 28, 28) -> (B, 1, 28, 28). `affine_grid` works in coordinates where the image spans
    [-1, 1], so a shift of s pixels is 2s/28 there.
    """
    b = x.shape[0]

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator, device=x.device) * 2 - 1) * bound

    angle = uniform(math.radians(config.max_rotation))
    scale = 1 + uniform(config.max_scale)
    shift = torch.stack([uniform(2 * config.max_shift / x.shape[-1]), uniform(2 * config.max_shift / x.shape[-2])], 1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2)
    theta = torch.cat([theta, shift.unsqueeze(2)], 2)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def train_classifier(
    config: ClassifierConfig | None = None,
    data: DataBundle | None = None,
    out: str | Path = DEFAULT_OUT,
    log: Callable[[str], None] = print,
    command: str = "",
    replace_shipped: bool = False,
) -> dict:
    """Train on the training split only (minus a validation share), save weights + provenance
    to `out` (and its .json). The shipped weights (`default_path()`) are written over only with
    `replace_shipped=True`: every FID measured so far was measured through them.

    On CPU with the same seed and thread count the weights come out bitwise the same. Returns
    the provenance dict that is also written beside the weights as JSON.
    """
    config = config or ClassifierConfig()
    config.validate()
    out = Path(out)
    if out.suffix != ".safetensors":
        raise GenlabError(f"-o {out}: the weights file name must end in .safetensors (its provenance goes beside it as .json)")
    shipped = _same_file(out, default_path())
    if shipped and not replace_shipped:
        raise GenlabError(
            f"{out} is the classifier shipped with genlab, behind every FID measured so far: "
            "write elsewhere with -o PATH, or replace it on purpose with --replace-shipped"
        )
    if replace_shipped and not shipped:
        raise GenlabError(f"--replace-shipped writes {default_path()}, not {out}")
    if not out.parent.is_dir():
        raise GenlabError(f"cannot write {out}: folder {out.parent} does not exist")
    data = data if data is not None else load_dataset("mnist")

    x_all, y_all = data.tensors("train")
    if config.val_fraction > 0:
        keep, held = stratified_split(data.train_labels, config.val_fraction, seed=config.seed)
    else:
        keep, held = np.arange(len(y_all)), np.array([], dtype=np.int64)
    x, y = x_all[keep], y_all[keep]
    x_val, y_val = x_all[held], y_all[held]

    seed_everything(config.seed)  # weights and dropout
    gen = make_generator(config.seed + 1)  # shuffling and augmentation
    # channels_last: oneDNN's faster convolution layout on CPU.
    model = DigitClassifier().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch)
    log(f"classifier: {len(x)} training and {len(x_val)} validation digits ({data.source})")
    start = time.perf_counter()
    history = []
    for epoch in range(1, config.epochs + 1):
        row = {"epoch": epoch, "train_loss": round(_train_epoch(model, opt, schedule, x, y, config, gen), 5)}
        if len(x_val):
            row["val_accuracy"] = round(accuracy(model, x_val, y_val), 5)
        history.append(row)
        log(f"classifier: epoch {epoch}/{config.epochs} " + " ".join(f"{k} {v}" for k, v in row.items() if k != "epoch"))
    seconds = time.perf_counter() - start

    save_tensors(out, model.state_dict(), {"model": ASSET_NAME, "feature_dim": FEATURE_DIM})
    made = _provenance(model, out, data, config, command, history, seconds, n_train=len(x), n_validation=len(x_val))
    atomic_write_json(out.with_suffix(".json"), made)
    _LOADED.clear()  # a rebuilt file must not be shadowed by a cached copy
    log(f"classifier: test accuracy {made['test_accuracy']:.4f} on {made['test_data']['n_test']} test digits; wrote {out}")
    return made


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links, `..`, another spelling of the folder)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _train_epoch(model, opt, schedule, x, y, config: ClassifierConfig, gen) -> float:
    """One shuffled, augmented pass over (x, y); returns the mean training loss. Leaves the model in eval mode."""
    model.train()
    order = torch.randperm(len(x), generator=gen)
    total = torch.zeros(())
    for i in range(0, len(x), config.batch_size):
        idx = order[i : i + config.batch_size]
        xb = augment(x[idx], config, gen).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        total += loss.detach() * len(idx)
    model.eval()
    return float(total) / len(x)


def _provenance(model, out: Path, data, config, command: str, history: list, seconds: float, n_train: int, n_validation: int) -> dict:
    """What the classifier's JSON beside its weights records: how it was made and how it scores."""
    made = {
        "command": command or "genlab classifier train",
        "config": asdict(config),
        "training_data": {
            "source": data.source,
            "sha256_train": _sha256(data.train_images, data.train_labels),
            "n_train": int(n_train),
            "n_validation": int(n_validation),
        },
        "validation_accuracy": history[-1].get("val_accuracy"),
        "history": history,
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "weights_sha256": weights_sha256(out),
    }
    x_test, y_test = data.tensors("test")
    made["test_accuracy"] = round(accuracy(model, x_test, y_test), 5)
    made["test_data"] = {
        "source": data.source.split("; ")[-1],
        "n_test": int(len(y_test)),
        "sha256_test": _sha256(data.test_images, data.test_labels),
    }
    return made


def _sha256(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def provenance(path: str | Path | None = None) -> dict:
    """The JSON written beside the weights by `train_classifier` ({} if there is none)."""
    path = (Path(path) if path is not None else default_path()).with_suffix(".json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
