"""Image files of any size: `genlab sample -n N` (and `reconstruct`) in bounded memory.

A `.npy` file is written block by block (SAMPLE_BATCH images at a time, each block written and
dropped), so any N the disk can hold works; the free space is checked before anything is drawn.
Plain sequential writes rather than a memory map of the whole file: the pages of a mapped file
count as the process's resident memory until they are unmapped, so a map would grow with N.
A `.png` grid is for looking at and holds at most MAX_GRID_IMAGES digits.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .errors import GenlabError
from .limits import MAX_GRID_IMAGES, SAMPLE_BATCH
from .utils import atomic_file, make_generator

IMAGE_SHAPE = (28, 28)


def _npy_header(n: int) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (n, *IMAGE_SHAPE)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def check_image_output(target: Path, n: int) -> None:
    """Before any work: refuse a .png grid of more than MAX_GRID_IMAGES digits, and a .npy of n
    images that the disk holding `target` has no room for (naming the bytes it needs)."""
    if target.suffix.lower() == ".png":
        if n > MAX_GRID_IMAGES:
            side = math.isqrt(MAX_GRID_IMAGES)
            raise GenlabError(f"-o {target}: a .png grid holds at most {MAX_GRID_IMAGES:,} images ({side} x {side}); write {n:,} to a .npy file")
        return
    needed = len(_npy_header(n)) + n * math.prod(IMAGE_SHAPE) * 4
    free = shutil.disk_usage(target.parent).free
    if needed > free:
        raise GenlabError(f"cannot write {target}: {n:,} images need {needed:,} bytes and {target.parent} has {free:,} free")


def sample_batches(run, n: int, seed: int = 0, digit: int | None = None, prior=None, **sampler) -> Iterator[np.ndarray]:
    """n samples of `run` as float32 blocks (b, 28, 28) of at most SAMPLE_BATCH images, drawn
    from one generator seeded by `seed`: together, exactly `run.sample(n, seed, **sampler)`, which
    draws in the same blocks (`sampler`: steps, solver, guidance of an iterative model)."""
    generator = make_generator(seed, run.device)
    for start in range(0, n, SAMPLE_BATCH):
        b = min(SAMPLE_BATCH, n - start)
        labels = None if digit is None else [digit] * b
        yield run.sample(b, labels=labels, prior=prior, generator=generator, **sampler).squeeze(1).numpy().astype(np.float32)


def write_image_blocks(target: Path, n: int, blocks: Iterable[np.ndarray]) -> tuple[int, ...]:
    """Write n images, given as blocks (b, 28, 28) in [0, 1], to `target` atomically: a .npy
    array (streamed) or a .png grid (digits dark on light); returns the array's shape."""
    from . import plots

    check_image_output(target, n)
    if target.suffix.lower() == ".png":
        images = np.concatenate(list(blocks))
        with atomic_file(target) as f:
            f.write(plots.grid_png(images))
        return images.shape
    with atomic_file(target) as f:  # a failed write (disk full) leaves no half file
        f.write(_npy_header(n))
        for block in blocks:
            f.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
    return (n, *IMAGE_SHAPE)
