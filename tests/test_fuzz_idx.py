"""Robust data reading: the IDX reader fed random and mutated files.

Whatever bytes it is given — noise, valid files with flipped bits, cut short, with edited
headers, gzipped or gzip-corrupted — `parse_idx` / `read_idx` / `check_images_labels` either
return a well-formed uint8 array or raise the project's DataError; never anything else.
Bounded: a fixed number of examples each, with a per-example deadline.
"""

from __future__ import annotations

import gzip
import math
from datetime import timedelta

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from genlab.data import check_images_labels, parse_idx, read_idx
from genlab.errors import DataError

FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=5),  # generous: the suite shares a busy machine
    suppress_health_check=[HealthCheck.too_slow],
)


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


@st.composite
def valid_idx(draw) -> bytes:
    shape = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4))
    payload = draw(st.binary(min_size=math.prod(shape), max_size=math.prod(shape)))
    return idx_bytes(np.frombuffer(payload, dtype=np.uint8).reshape(shape))


@st.composite
def mutated_idx(draw) -> bytes:
    """A valid file, then a few of: bit flips, truncation, header edits, appended bytes."""
    data = bytearray(draw(valid_idx()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "header", "dimension", "append"]))
        if kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "header" and len(data) >= 4:
            data[draw(st.integers(0, 3))] = draw(st.integers(0, 255))
        elif kind == "dimension" and len(data) >= 8:
            # a size field set to anything, up to 2^32 - 1 (e.g. 65536^4 = 2^64 elements)
            i = 4 + 4 * draw(st.integers(0, (len(data) - 4) // 4 - 1))
            data[i : i + 4] = draw(st.sampled_from([0, 1, 255, 65536, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)).to_bytes(4, "big")
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@st.composite
def hostile_header(draw) -> bytes:
    """A header promising any shape at all (up to (2^32 - 1)^4 bytes) over a short payload."""
    ndim = draw(st.integers(1, 4))
    sizes = st.sampled_from([0, 1, 28, 255, 65536, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)
    dims = draw(st.lists(sizes, min_size=ndim, max_size=ndim))
    return bytes([0, 0, 0x08, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims) + draw(st.binary(max_size=64))


# 65536^4 = 2^64 elements: wraps to 0 in 64-bit arithmetic, matching an empty payload
WRAPPING_HEADER = bytes([0, 0, 0x08, 4]) + (65536).to_bytes(4, "big") * 4


def _deflate_garbage() -> bytes:
    """A gzip file whose header is fine but whose deflate stream is garbage (zlib.error)."""
    packed = bytearray(gzip.compress(idx_bytes(np.arange(3000, dtype=np.uint8).reshape(3, 1000) % 7)))
    for i in range(12, 40):
        packed[i] ^= 0xFF
    return bytes(packed)


def check_result(data: bytes, array: np.ndarray) -> None:
    """What a successful parse must look like: the header's shape, every payload byte."""
    assert isinstance(array, np.ndarray) and array.dtype == np.uint8
    ndim = data[3]
    assert array.ndim == ndim and 1 <= ndim <= 4
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    assert array.shape == shape
    assert array.tobytes() == data[4 + 4 * ndim :]


def parse_or_data_error(data: bytes) -> None:
    try:
        array = parse_idx(data, source="fuzz")
    except DataError as e:
        assert str(e).startswith("fuzz: ")  # names its source
        return
    check_result(data, array)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data):
    parse_or_data_error(data)


@FUZZ
@given(valid_idx())
def test_valid_files_round_trip(data):
    check_result(data, parse_idx(data))


@FUZZ
@given(mutated_idx() | hostile_header())
@example(WRAPPING_HEADER)
@example(WRAPPING_HEADER[:8] + (2**32 - 1).to_bytes(4, "big") * 3)
@example(bytes([0, 0, 0x08, 4, 0, 0, 0, 0, 0, 0, 0, 28]) + (2**31).to_bytes(4, "big") * 2)  # found by this test
def test_mutated_files(data):
    parse_or_data_error(data)


@st.composite
def file_bytes(draw) -> bytes:
    """What a file on disk might hold: raw or gzipped IDX, possibly damaged after compression."""
    data = draw(mutated_idx() | valid_idx())
    if draw(st.booleans()):
        packed = bytearray(gzip.compress(data))
        damage = draw(st.sampled_from(["none", "flip", "truncate"]))
        if damage == "flip":
            i = draw(st.integers(2, len(packed) - 1))  # keep the gzip magic: the reader must try to inflate
            packed[i] ^= 1 << draw(st.integers(0, 7))
        elif damage == "truncate":
            del packed[draw(st.integers(2, len(packed) - 1)) :]
        data = bytes(packed)
    return data


@settings(FUZZ, max_examples=200)
@given(data=file_bytes())
@example(data=_deflate_garbage())
@example(data=gzip.compress(WRAPPING_HEADER)[:-3])
def test_read_idx_on_files(tmp_path_factory, data):
    folder = tmp_path_factory.getbasetemp() / "fuzz-files"
    folder.mkdir(exist_ok=True)
    path = folder / "images-idx3-ubyte.gz"
    path.write_bytes(data)
    try:
        array = read_idx(path)
    except DataError as e:
        assert str(path) in str(e)
        return
    check_result(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data, array)


@FUZZ
@given(images=mutated_idx() | valid_idx(), labels=mutated_idx() | valid_idx())
def test_images_and_labels_checks(images, labels):
    """Whatever two parsed files hold, the pair check accepts only (N, 28, 28) with N labels 0..9."""
    try:
        x, y = check_images_labels(parse_idx(images), parse_idx(labels), "fuzz")
    except DataError:
        return
    assert x.shape[1:] == (28, 28) and y.shape == (len(x),) and len(x) > 0 and int(y.max()) <= 9


@FUZZ
@given(
    n=st.integers(1, 5),
    side=st.sampled_from([27, 28, 29]),
    labels=st.lists(st.integers(0, 255), min_size=0, max_size=6),
)
def test_images_and_labels_shapes_and_ranges(n, side, labels):
    images = np.zeros((n, side, side), dtype=np.uint8)
    y = np.array(labels, dtype=np.uint8)
    valid = side == 28 and len(labels) == n and max(labels) <= 9
    try:
        check_images_labels(images, y, "fuzz")
    except DataError:
        assert not valid
        return
    assert valid
