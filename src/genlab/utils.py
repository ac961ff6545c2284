"""Small helpers every module shares: device choice, seeding, atomic file writes."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import random
import sys
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
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):  # torch knows more (meta, xla...); genlab trains on these
        raise GenlabError(f"unknown device '{requested}': use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenlabError(f"device '{requested}' asked for, but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise GenlabError(f"device '{requested}' asked for, but this machine has {torch.cuda.device_count()} CUDA device(s): use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
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


# glibc's mallopt parameters (malloc.h) and what genlab sets them to (`reuse_freed_memory`)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # the largest glibc accepts
TRIM_THRESHOLD_BYTES = 128 * 2**20  # 32 and 64 MB kept the faults (4,000 flow samples: 12-14 CPU-s in the kernel); 128 MB: 0.3


def reuse_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks of up to 32 MB for the next allocation instead of
    handing each back to the system and faulting fresh pages in for the next: a flow's sampling
    allocates activations of 6-12 MB per network pass, and sampling 10,000 images spent 30 of
    its 163 CPU-seconds in the kernel (benchmarks/README.md, "Flow matching"). Both thresholds
    are set, since setting one alone stops glibc's own adjustment and leaves every block above
    128 kB to mmap (worse). `release_freed_memory` still hands memory back where it matters.
    Linux with glibc only; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc (musl)
        pass


def release_freed_memory() -> None:
    """Hand the memory that glibc's malloc keeps after frees back to the system (elsewhere: nothing).
    After a bf16 training run, the evaluation that followed in the same process could not reuse
    those scattered pieces and nearly doubled the peak (benchmarks/README.md, "What the lab's evaluation costs")."""
    if not sys.platform.startswith("linux"):  # macOS, Windows: their allocators trim on their own
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): its allocator does its own trimming
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
