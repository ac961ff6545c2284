"""The IDX reader and where the data comes from (genlab.data)."""

from __future__ import annotations

import gzip
import urllib.request

import numpy as np
import pytest
import torch

from conftest import N_TEST, N_TRAIN, synthetic_digits, write_idx_folder
from genlab import data as gdata
from genlab.data import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_LABELS,
    DataBundle,
    embedded_mnist,
    load_dataset,
    read_idx,
    read_idx_pair,
    write_idx,
)
from genlab.errors import DataError, GenlabError

# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_round_trip_raw_and_gzipped(tmp_path, name):
    images, _ = synthetic_digits(12)
    path = tmp_path / name
    write_idx(path, images)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == np.uint8
    assert back.shape == (12, 28, 28)
    np.testing.assert_array_equal(back, images)


def test_read_idx_header_is_big_endian_idx(tmp_path):
    # Written by hand, not by write_idx: magic 0x00000801 and a big-endian count, as in MNIST.
    raw = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([7, 0, 9])
    (tmp_path / "labels").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), [7, 0, 9])


def test_read_pair_gives_images_and_labels(tmp_path):
    images, labels = synthetic_digits(20)
    write_idx(tmp_path / "i.gz", images)
    write_idx(tmp_path / "l", labels)  # mixed gzipped and raw is fine
    got_images, got_labels = read_idx_pair(tmp_path / "i.gz", tmp_path / "l")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("cut", [1, 100, 28 * 28 * 5])
def test_truncated_raw_file_is_rejected(tmp_path, cut):
    images, _ = synthetic_digits(10)
    write_idx(tmp_path / "x", images)
    data = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(data[:-cut])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "x")


def test_truncated_header_is_rejected(tmp_path):
    (tmp_path / "x").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(tmp_path / "x")


@pytest.mark.parametrize("name", ["x", "x.gz"])
def test_a_size_field_cut_short_is_a_truncated_header_not_a_huge_read(tmp_path, name):
    # 2 dims, the second cut to 2 bytes: read as a size, 0x01000000 × 0x0600 would ask for 25 GB
    header = bytes([0, 0, 8, 2, 1, 0, 0, 0, 6, 0])
    (tmp_path / name).write_bytes(gzip.compress(header) if name.endswith(".gz") else header)
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(tmp_path / name)


def test_truncated_gzip_file_is_rejected(tmp_path):
    images, _ = synthetic_digits(10)
    write_idx(tmp_path / "x.gz", images)
    data = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="gzip"):
        read_idx(tmp_path / "x.gz")


def test_trailing_bytes_are_rejected(tmp_path):
    images, _ = synthetic_digits(3)
    write_idx(tmp_path / "x", images)
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes() + b"\0\0")
    with pytest.raises(DataError, match="unexpected bytes"):
        read_idx(tmp_path / "x")


@pytest.mark.parametrize(
    "header, message",
    [
        (bytes([0x1F, 0x00, 8, 1]), "magic"),  # not an IDX file at all
        (b"PK\x03\x04", "magic"),  # a zip archive
        (bytes([0, 0, 0x0D, 1]), "type code"),  # float IDX: not supported
        (bytes([0, 0, 8, 0]), "dimensions"),
        (bytes([0, 0, 8, 9]), "dimensions"),
        (b"\0\0", "too short"),
    ],
)
def test_wrong_magic_or_header_is_rejected(tmp_path, header, message):
    (tmp_path / "x").write_bytes(header + bytes(16))
    if message == "too short":
        (tmp_path / "x").write_bytes(header)
    with pytest.raises(DataError, match=message):
        read_idx(tmp_path / "x")


def test_reader_errors_name_the_file_and_are_user_errors(tmp_path):
    (tmp_path / "broken-file").write_bytes(b"hello world, not idx")
    with pytest.raises(GenlabError, match="broken-file"):
        read_idx(tmp_path / "broken-file")
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "missing")
    with pytest.raises(DataError, match="folder"):
        read_idx(tmp_path)


def test_mismatched_image_and_label_counts_are_rejected(tmp_path):
    images, labels = synthetic_digits(10)
    write_idx(tmp_path / "i", images)
    write_idx(tmp_path / "l", labels[:9])
    with pytest.raises(DataError, match="10 images but 9 labels"):
        read_idx_pair(tmp_path / "i", tmp_path / "l")


def test_labels_out_of_range_are_rejected(tmp_path):
    images, labels = synthetic_digits(10)
    labels[3] = 10
    write_idx(tmp_path / "i", images)
    write_idx(tmp_path / "l", labels)
    with pytest.raises(DataError, match="label 10 out of range"):
        read_idx_pair(tmp_path / "i", tmp_path / "l")


@pytest.mark.parametrize("shape", [(10, 32, 32), (10, 784), (10, 28, 28, 3)])
def test_images_of_the_wrong_shape_are_rejected(tmp_path, shape):
    write_idx(tmp_path / "i", np.zeros(shape, np.uint8))
    write_idx(tmp_path / "l", np.zeros(10, np.uint8))
    with pytest.raises(DataError, match="expected \\(N, 28, 28\\)"):
        read_idx_pair(tmp_path / "i", tmp_path / "l")


# --------------------------------------------------------------------------------------------
# Where the data comes from
# --------------------------------------------------------------------------------------------


def test_folder_with_all_four_files(tiny_data_dir):
    bundle = load_dataset("mnist", tiny_data_dir)
    train_images, train_labels = synthetic_digits(N_TRAIN, seed=1)
    test_images, test_labels = synthetic_digits(N_TEST, seed=2)
    np.testing.assert_array_equal(bundle.train_images, train_images)
    np.testing.assert_array_equal(bundle.train_labels, train_labels)
    np.testing.assert_array_equal(bundle.test_images, test_images)
    np.testing.assert_array_equal(bundle.test_labels, test_labels)
    assert str(tiny_data_dir) in bundle.source
    assert bundle.notes == []
    assert bundle.summary()["n_train"] == N_TRAIN and bundle.summary()["n_test"] == N_TEST


def test_raw_files_and_dotted_names_are_found(tmp_path):
    folder = write_idx_folder(tmp_path / "raw", compress=False)
    for stem in (TEST_IMAGES, TEST_LABELS):  # the 't10k-images.idx3-ubyte' variant
        (folder / stem).rename(folder / stem.replace("-idx", ".idx"))
    bundle = load_dataset("mnist", folder)
    assert len(bundle.train_images) == N_TRAIN and len(bundle.test_images) == N_TEST


def test_genlab_data_variable_is_used(tiny_data_dir, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(tiny_data_dir))
    bundle = load_dataset("mnist")
    assert len(bundle.train_images) == N_TRAIN
    assert str(tiny_data_dir) in bundle.source


def test_folder_with_only_test_files_uses_embedded_training_digits(tmp_path):
    folder = write_idx_folder(tmp_path / "test-only", train=False)
    bundle = load_dataset("mnist", folder)
    np.testing.assert_array_equal(bundle.test_images, synthetic_digits(N_TEST, seed=2)[0])
    assert bundle.train_images.shape == (5000, 28, 28)
    assert "embedded" in bundle.source
    assert len(bundle.notes) == 1 and "training" in bundle.notes[0] and "embedded" in bundle.notes[0]


def test_folder_with_only_train_files_holds_out_a_stratified_tenth(tmp_path):
    folder = write_idx_folder(tmp_path / "train-only", test=False, n_train=300)
    bundle = load_dataset("mnist", folder)
    images, labels = synthetic_digits(300, seed=1)
    assert len(bundle.test_images) == 30 and len(bundle.train_images) == 270
    assert np.bincount(bundle.test_labels, minlength=10).tolist() == [3] * 10  # 10% of each class
    # The two splits are a partition of the file's digits: nothing lost, nothing shared.
    rows = {bytes(img): i for i, img in enumerate(images)}
    train_rows = {rows[bytes(img)] for img in bundle.train_images}
    test_rows = {rows[bytes(img)] for img in bundle.test_images}
    assert not train_rows & test_rows and len(train_rows | test_rows) == 300
    assert len(bundle.notes) == 1 and "holding out" in bundle.notes[0] and "10%" in bundle.notes[0]
    # Fixed: every model and every run sees the same held-out digits.
    np.testing.assert_array_equal(load_dataset("mnist", folder).test_images, bundle.test_images)


def test_folder_with_images_but_no_labels_is_an_error(tmp_path):
    folder = write_idx_folder(tmp_path / "half")
    (folder / f"{TRAIN_LABELS}.gz").unlink()
    with pytest.raises(DataError, match=TRAIN_LABELS):
        load_dataset("mnist", folder)


def test_missing_or_empty_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no IDX files"):
        load_dataset("mnist", tmp_path / "empty")


def test_unknown_dataset_name_is_an_error():
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


def test_cache_folder_is_used_when_present(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cached = write_idx_folder(tmp_path / "xdg" / "genlab" / "mnist")
    assert gdata.cache_dir("mnist") == cached
    bundle = load_dataset("mnist", allow_download=False)
    assert len(bundle.train_images) == N_TRAIN and len(bundle.test_images) == N_TEST
    assert str(cached) in bundle.source


def test_cache_serves_other_idx_datasets_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    write_idx_folder(tmp_path / "xdg" / "genlab" / "fashion-mnist")
    bundle = load_dataset("fashion-mnist", allow_download=False)
    assert bundle.name == "fashion-mnist" and bundle.class_names[0] == "T-shirt"
    assert len(bundle.train_images) == N_TRAIN


def test_offline_default_is_the_embedded_digits_without_network(monkeypatch):
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: calls.append(a) or pytest.fail("went online"))
    bundle = load_dataset("mnist")  # GENLAB_OFFLINE=1 (conftest), empty cache
    assert calls == []
    assert len(bundle.train_images) == 4500 and len(bundle.test_images) == 500
    assert np.bincount(bundle.test_labels).tolist() == [50] * 10
    assert "embedded" in bundle.source
    assert bundle.notes  # says out loud that a test split was held out


def test_offline_without_embedded_fallback_for_other_datasets():
    with pytest.raises(DataError, match="no training split for fashion-mnist"):
        load_dataset("fashion-mnist")


# --------------------------------------------------------------------------------------------
# The embedded digits and the tensors a run trains on
# --------------------------------------------------------------------------------------------


def test_embedded_digits_are_5000_with_500_per_class():
    images, labels = embedded_mnist()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [500] * 10
    assert images.max() == 255 and images.min() == 0
    # Real digits, not noise: a centred stroke, empty borders.
    mean = images.mean(0)
    assert mean[10:18, 10:18].mean() > 5 * mean[:3].mean()


def test_tensors_are_float_images_in_unit_range(tiny_bundle):
    x, y = tiny_bundle.tensors("train")
    assert x.shape == (N_TRAIN, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) == 1.0
    assert y.dtype == torch.int64 and y.tolist() == tiny_bundle.train_labels.tolist()
    np.testing.assert_allclose(x[5, 0].numpy() * 255, tiny_bundle.train_images[5], atol=1e-3)
    x_test, _ = tiny_bundle.tensors("test")
    assert x_test.shape == (N_TEST, 1, 28, 28)


def test_bundle_hash_changes_with_the_pixels(tiny_bundle):
    other = DataBundle(**{**tiny_bundle.__dict__, "train_images": tiny_bundle.train_images.copy()})
    assert other.sha256 == tiny_bundle.sha256
    other.train_images[0, 0, 0] ^= 1
    assert other.sha256 != tiny_bundle.sha256


def test_real_test_set_with_embedded_training_digits(mnist_dir):
    bundle = load_dataset("mnist", mnist_dir)
    assert bundle.test_images.shape == (10000, 28, 28)
    assert np.bincount(bundle.test_labels).sum() == 10000 and set(bundle.test_labels.tolist()) == set(range(10))
    assert bundle.train_images.shape == (5000, 28, 28)
    assert np.bincount(bundle.train_labels).tolist() == [500] * 10


def test_binarize_gives_binary_pixels_with_the_grey_level_as_probability():
    grey = torch.full((200, 1, 28, 28), 0.3)
    grey[:, :, :14] = 0.0  # black stays black, white stays white
    grey[:, :, 20:] = 1.0
    binary = gdata.binarize(grey, torch.Generator().manual_seed(0))
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert binary[:, :, :14].sum() == 0 and binary[:, :, 20:].min() == 1
    assert binary[:, :, 14:20].mean().item() == pytest.approx(0.3, abs=0.01)
    fixed = gdata.fixed_binarization(grey)
    assert torch.equal(fixed, gdata.fixed_binarization(grey))  # the same for every run
    assert not torch.equal(fixed, gdata.binarize(grey))  # a fresh draw differs
