"""Small helpers every module shares: device choice, seeding, atomic file writes."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from .config import check_seed
from .errors import GenlabError

TMP_SUFFIX = ".tmp"  # temporary files are ".<name>.<random>.tmp" beside their target


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU; `requested` overrides ('cpu', 'cuda', 'cuda:1', 'mps')."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise GenlabError(f"unknown device '{requested}': use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenlabError(f"device '{requested}' asked for, but CUDA is not available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GenlabError(f"device '{requested}' asked for, but Apple MPS is not available here; use --device cpu")
    return device


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one: a container's
    or taskset's share, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices) so a run can be repeated exactly on CPU."""
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private torch.Generator: sampling with it never disturbs the global RNG stream."""
    check_seed(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def release_freed_memory() -> None:
    """Hand the memory that glibc's malloc keeps after frees back to the system (elsewhere: nothing).
    After a bf16 training run, the evaluation that followed in the same process could not reuse
    those scattered pieces and nearly doubled the peak (benchmarks/README.md section 11)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator does its own trimming
        pass


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a network's weights and buffers, by name (0.4 MB for the classifier: a millisecond)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """Yield a binary file that becomes `path` when the block ends, so that a crash leaves either
    the old file or the new one.

    Temporary file in the same folder, fsync, then rename (atomic on POSIX), then fsync the
    folder so the rename itself survives power loss.

    A failed write (disk full, no permission) raises GenlabError naming the file; the old file,
    if there was one, is left as it was and no temporary file is left behind.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(e, OSError):
            kept = "the previous version is kept" if path.is_file() else "nothing was written"
            raise GenlabError(f"cannot write {path}: {e.strerror or e} ({kept})") from None
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
