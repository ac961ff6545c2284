"""The shipped MNIST classifier: it loads, validates its file, is accurate on real test digits,
and the training command is seeded (same seed, same weights)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import N_TEST
from genlab.classifier import (
    FEATURE_DIM,
    ClassifierConfig,
    DigitClassifier,
    accuracy,
    augment,
    default_path,
    load_classifier,
    predict,
    provenance,
    train_classifier,
)
from genlab.cli import main
from genlab.data import load_dataset
from genlab.errors import GenlabError
from genlab.runs import save_tensors
from genlab.utils import make_generator


def test_shipped_weights_are_small_and_documented():
    path = default_path()
    assert path.is_file() and path.stat().st_size < 2_000_000
    made = provenance()
    assert made["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # the JSON describes this file
    assert made["test_accuracy"] >= 0.98 and made["test_data"]["n_test"] == 10000
    assert made["training_data"]["n_train"] + made["training_data"]["n_validation"] == 5000
    assert made["command"].startswith("genlab classifier train")


def test_shipped_classifier_features_and_logits():
    model = load_classifier()
    assert not model.training
    x = torch.rand(5, 1, 28, 28)
    features, predicted = predict(model, x)
    assert features.shape == (5, FEATURE_DIM) and (features >= 0).all()  # ReLU features
    assert predicted.shape == (5,) and predicted.dtype == torch.long
    assert load_classifier() is model  # loaded once per process


def test_shipped_classifier_on_real_test_digits(mnist_dir):
    data = load_dataset("mnist", mnist_dir)
    x, y = data.tensors("test")
    assert len(y) == 10000
    assert accuracy(load_classifier(), x[:1000], y[:1000]) >= 0.97


def test_missing_or_corrupt_weights_give_a_clear_error(tmp_path):
    with pytest.raises(GenlabError, match="missing.*genlab classifier train"):
        load_classifier(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(GenlabError, match="unusable"):
        load_classifier(garbage)
    foreign = tmp_path / "foreign.safetensors"  # a valid file, but not ours (no metadata)
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(GenlabError, match="not a genlab MNIST classifier"):
        load_classifier(foreign)


def test_weights_of_the_wrong_shape_are_refused(tmp_path):
    state = DigitClassifier().state_dict()
    state["head.weight"] = torch.zeros(11, FEATURE_DIM)  # eleven classes
    path = tmp_path / "wrong.safetensors"
    save_tensors(path, state, {"model": "mnist_classifier"})
    with pytest.raises(GenlabError, match="head.weight"):
        load_classifier(path)
    state = DigitClassifier().state_dict()
    state["head.bias"] = torch.full((10,), float("nan"))
    save_tensors(path, state, {"model": "mnist_classifier"})
    with pytest.raises(GenlabError, match="NaN"):
        load_classifier(path)


def test_augment_is_seeded_and_zero_strength_is_the_identity(tiny_bundle):
    x, _ = tiny_bundle.tensors("train")
    x = x[:16]
    still = ClassifierConfig(max_rotation=0.0, max_shift=0.0, max_scale=0.0)
    assert torch.allclose(augment(x, still, make_generator(0)), x, atol=1e-5)
    config = ClassifierConfig()
    a, b = augment(x, config, make_generator(1)), augment(x, config, make_generator(1))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.allclose(a, x) and a.min() >= 0 and a.max() <= 1


def test_training_is_seeded_and_writes_weights_with_provenance(tmp_path, tiny_bundle):
    config = ClassifierConfig(epochs=1, batch_size=64)
    first = train_classifier(config, data=tiny_bundle, out=tmp_path / "a.safetensors", log=lambda _: None)
    second = train_classifier(config, data=tiny_bundle, out=tmp_path / "b.safetensors", log=lambda _: None)
    assert first["weights_sha256"] == second["weights_sha256"]  # same seed, same weights
    written = json.loads((tmp_path / "a.json").read_text())
    assert written["weights_sha256"] == first["weights_sha256"]
    assert written["training_data"]["n_train"] + written["training_data"]["n_validation"] == len(tiny_bundle.train_labels)
    assert 0 <= written["test_accuracy"] <= 1 and written["config"]["epochs"] == 1
    model = load_classifier(tmp_path / "a.safetensors")
    assert isinstance(model, DigitClassifier)
    other = train_classifier(ClassifierConfig(epochs=1, batch_size=64, seed=1), data=tiny_bundle, out=tmp_path / "c.safetensors", log=lambda _: None)
    assert other["weights_sha256"] != first["weights_sha256"]


def test_training_refuses_a_missing_folder(tmp_path, tiny_bundle):
    with pytest.raises(GenlabError, match="does not exist"):
        train_classifier(ClassifierConfig(epochs=1), data=tiny_bundle, out=tmp_path / "no" / "c.safetensors")


def test_cli_classifier_train_and_test(tmp_path, tiny_data_dir, capsys):
    out = tmp_path / "clf.safetensors"
    assert main(["classifier", "train", "--out", str(out), "--epochs", "1", "--data", str(tiny_data_dir), "--quiet"]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert json.loads(out.with_suffix(".json").read_text())["command"] == "genlab classifier train --seed 0 --epochs 1"
    capsys.readouterr()
    assert main(["classifier", "test", "--weights", str(out), "--data", str(tiny_data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and f"on {N_TEST} digits" in printed
    assert main(["classifier", "test", "--weights", str(tmp_path / "none.safetensors"), "--data", str(tiny_data_dir)]) == 2
    assert "missing" in capsys.readouterr().err
