"""The dataset download (genlab.data.download) against real HTTP mirrors on 127.0.0.1.

`idx_mirror` (conftest.py) serves four tiny gzipped IDX files four ways: a good mirror, one that
answers 404, one that stalls half-way through a file, one that serves a corrupted file. The
download timeout is set to a fraction of a second here, so the stalled mirror costs about that.
"""

from __future__ import annotations

import io
import sys
import time

import pytest

from conftest import MIRROR_STALL_S, N_TEST, N_TRAIN, TINY_CLI_OPTIONS, assert_one_line_error, run_cli
from genlab import data as gdata
from genlab.data import TRAIN_IMAGES, load_dataset
from genlab.errors import DataError

TIMEOUT_S = 0.5


@pytest.fixture(autouse=True)
def _short_timeout(monkeypatch):
    monkeypatch.setattr(gdata, "DOWNLOAD_TIMEOUT_S", TIMEOUT_S)


def _serve(monkeypatch, mirror, *kinds: str, name: str = "mnist") -> None:
    monkeypatch.setitem(gdata.DATASETS, name, mirror.spec(*kinds, name=name))


def _cached(name: str = "mnist") -> list[str]:
    folder = gdata.cache_dir(name)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_good_mirror_fills_the_cache_once(idx_mirror, monkeypatch):
    _serve(monkeypatch, idx_mirror, "good")
    bundle = load_dataset("mnist", allow_download=True)
    assert len(bundle.train_images) == N_TRAIN and len(bundle.test_images) == N_TEST
    assert "embedded" not in bundle.source and not bundle.notes
    assert _cached() == sorted(idx_mirror.payloads)
    assert len(idx_mirror.asked) == 4
    load_dataset("mnist", allow_download=True)  # read from the cache: nothing asked again
    assert len(idx_mirror.asked) == 4


def test_a_404_mirror_falls_through_to_the_next(idx_mirror, monkeypatch):
    _serve(monkeypatch, idx_mirror, "missing", "good")
    bundle = load_dataset("mnist", allow_download=True)
    assert len(bundle.train_images) == N_TRAIN
    assert [kind for kind, _ in idx_mirror.asked] == ["missing", "good"] * 4


def test_a_stalled_mirror_is_left_after_the_timeout(idx_mirror, monkeypatch):
    _serve(monkeypatch, idx_mirror, "stall", "good")
    start = time.monotonic()
    bundle = load_dataset("mnist", allow_download=True)
    # Each of the four files waits out the stalled mirror once: 4 timeouts, far from its 60 s.
    assert time.monotonic() - start < MIRROR_STALL_S / 2
    assert len(bundle.train_images) == N_TRAIN and not bundle.notes
    assert [kind for kind, _ in idx_mirror.asked] == ["stall", "good"] * 4


def test_only_a_stalled_mirror_is_one_error_naming_the_timeout(idx_mirror, monkeypatch):
    _serve(monkeypatch, idx_mirror, "stall")
    with pytest.raises(DataError, match=f"could not download {TRAIN_IMAGES}.gz .*{idx_mirror.url('stall')}: .*timed out"):
        gdata.download(gdata.DATASETS["mnist"], gdata.cache_dir("mnist"))
    assert _cached() == []  # nothing half-written kept


def test_a_corrupt_file_is_refused_and_nothing_is_kept(idx_mirror, monkeypatch):
    _serve(monkeypatch, idx_mirror, "corrupt")
    with pytest.raises(DataError, match="checksum mismatch"):
        gdata.download(gdata.DATASETS["mnist"], gdata.cache_dir("mnist"))
    assert _cached() == []
    # Through load_dataset: MNIST falls back to the offline digits and says why.
    bundle = load_dataset("mnist", allow_download=True)
    assert "embedded" in bundle.source
    assert any("download failed" in note and "checksum mismatch" in note for note in bundle.notes)


@pytest.mark.parametrize("kinds, reason", [(("corrupt",), "checksum mismatch"), (("missing",), "404")])
def test_a_failed_download_is_one_line_saying_why(kinds, reason, idx_mirror, monkeypatch, tmp_path):
    """A dataset with no offline digits: the command stops on one line that names the cause."""
    _serve(monkeypatch, idx_mirror, *kinds, name="fashion-mnist")
    monkeypatch.setenv("GENLAB_OFFLINE", "0")
    result = run_cli("train", "ae", *TINY_CLI_OPTIONS, "--dataset", "fashion-mnist", "--out", tmp_path / "run")
    assert_one_line_error(result, "no training split for fashion-mnist", "download failed", reason)


def test_the_progress_bar_shows_on_a_terminal_only(idx_mirror, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    _serve(monkeypatch, idx_mirror, "good")
    monkeypatch.setattr("sys.stderr", Terminal())
    gdata.download(gdata.DATASETS["mnist"], gdata.cache_dir("mnist"))
    shown = sys.stderr.getvalue()
    assert f"download mnist {TRAIN_IMAGES}.gz" in shown and "B/s" in shown  # the bar: name, bytes, speed

    for path in gdata.cache_dir("mnist").iterdir():
        path.unlink()
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file: no bar
    gdata.download(gdata.DATASETS["mnist"], gdata.cache_dir("mnist"))
    assert sys.stderr.getvalue() == ""
    assert _cached() == sorted(idx_mirror.payloads)
