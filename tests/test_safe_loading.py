"""Safe loading: nothing genlab reads from a run folder can run code.

Weights and optimizer state are read with safetensors only, configs and logs as validated
JSON. A crafted pickle — the classic attack on `.pt`/`.pkl` checkpoints — placed where genlab
expects its weights is refused with one clear line, and its payload never runs.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import QUIET, REPO_ROOT, run_cli, tiny_train_config
from genlab import MODELS, fit, load_run
from genlab.errors import RunFolderError
from genlab.runs import CHECKPOINT_FILE, CONFIG_FILE, WEIGHTS_FILE, load_tensors



class Payload:
    """Unpickling this runs `exec`: it writes the marker file. A stand-in for any attack."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def crafted_pickle(marker: Path) -> bytes:
    return pickle.dumps({"state_dict": Payload(marker)})


def crafted_torch_file(marker: Path) -> bytes:
    """A torch.save zip archive (what `.pt` files are) whose pickle holds the payload."""
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "extra": Payload(marker)}, buffer)
    return buffer.getvalue()


CRAFTED = {"pickle": crafted_pickle, "torch.save": crafted_torch_file}


@pytest.fixture(scope="module")
def finished_vae(tmp_path_factory) -> Path:
    from conftest import write_idx_folder

    data_dir = write_idx_folder(tmp_path_factory.mktemp("safe-idx"))
    cfg = tiny_train_config("vae", data_dir)
    return fit(cfg, MODELS["vae"].config_class(hidden_dims=(32,)), tmp_path_factory.mktemp("safe") / "vae", **QUIET)


@pytest.fixture
def someones_run(finished_vae, tmp_path) -> Path:
    """A run folder received from someone else: a copy, in another place."""
    return Path(shutil.copytree(finished_vae, tmp_path / "received" / "vae"))


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_the_payloads_are_live(kind, tmp_path):
    """Unpickled the unsafe way, each payload runs: so the tests below can fail."""
    marker = tmp_path / "marker"
    data = CRAFTED[kind](marker)
    if kind == "pickle":
        pickle.loads(data)
    else:
        torch.load(io.BytesIO(data), weights_only=False)
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("kind", list(CRAFTED))
@pytest.mark.parametrize("target", [WEIGHTS_FILE, CHECKPOINT_FILE])
def test_crafted_pickle_as_weights_is_refused_not_run(kind, target, someones_run, tmp_path):
    marker = tmp_path / "marker"
    (someones_run / target).write_bytes(CRAFTED[kind](marker))
    if target == CHECKPOINT_FILE:
        (someones_run / WEIGHTS_FILE).unlink()  # an unfinished run: loading falls back to the checkpoint

    with pytest.raises(RunFolderError, match=f"{target}: not a readable safetensors file"):
        load_run(someones_run)
    commands = [
        ["sample", someones_run, "-n", "4", "-o", tmp_path / "s.npy"],
        ["encode", someones_run, "-o", tmp_path / "z.npz"],
        ["plot", someones_run],
        ["eval", someones_run, "--n-samples", "20"],
    ]
    if target == CHECKPOINT_FILE:  # resuming reads the checkpoint (and never model.safetensors)
        commands.append(["resume", someones_run, "--epochs", "2"])
    for args in commands:
        code, _, err = run_cli(*args)
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and target in lines[0], (args, err)
    assert not marker.exists(), "the crafted file was unpickled"
    assert not (tmp_path / "s.npy").exists() and not (tmp_path / "z.npz").exists()


def test_received_run_folder_is_sampled_and_checked_safely(someones_run, tmp_path):
    """A genuine run from elsewhere works; its files are validated, not trusted."""
    code, _, err = run_cli("sample", someones_run, "-n", "8", "-o", tmp_path / "s.npy")
    assert code == 0, err
    # the config is data, validated field by field: no surprise keys, no code
    info = json.loads((someones_run / CONFIG_FILE).read_text())
    info["train"]["__reduce__"] = "os.system"
    (someones_run / CONFIG_FILE).write_text(json.dumps(info))
    code, _, err = run_cli("sample", someones_run, "-o", tmp_path / "t.npy")
    assert code == 2 and "unknown field(s) __reduce__" in err


def test_safetensors_with_hostile_metadata_or_names_is_refused(someones_run):
    from safetensors.torch import save

    good, _ = load_tensors(someones_run / WEIGHTS_FILE)
    cases = {
        "metadata not an object": (good, {"genlab": "[1, 2]"}, "metadata is not a JSON object"),
        "metadata not JSON": (good, {"genlab": "{oops"}, "not a readable safetensors file"),
        "another model's tensors": ({"evil.weight": torch.zeros(3)}, {"genlab": '{"model": "vae"}'}, "do not fit this model"),
    }
    for name, (tensors, metadata, message) in cases.items():
        (someones_run / WEIGHTS_FILE).write_bytes(save(tensors, metadata=metadata))
        with pytest.raises(RunFolderError, match=re.escape(message)):
            load_run(someones_run)
    # a header that claims far more bytes than the file holds
    data = bytearray((someones_run / CHECKPOINT_FILE).read_bytes())
    data[:8] = (2**40).to_bytes(8, "little")
    (someones_run / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(RunFolderError, match="not a readable safetensors file"):
        load_run(someones_run)


def test_non_finite_weights_are_refused(someones_run):
    from safetensors.torch import save

    tensors, _ = load_tensors(someones_run / WEIGHTS_FILE)
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    (someones_run / WEIGHTS_FILE).write_bytes(save(tensors, metadata={"genlab": '{"model": "vae"}'}))
    with pytest.raises(RunFolderError, match="NaN or infinite"):
        load_run(someones_run)


def test_source_never_unpickles():
    """No pickle, no unrestricted torch.load, no allow_pickle anywhere in the package."""
    offenders = []
    for path in sorted((REPO_ROOT / "src" / "genlab").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\bimport pickle\b|\bpickle\.|\bdill\b|\bjoblib\b|allow_pickle\s*=\s*True|weights_only\s*=\s*False", code):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
            if "torch.load(" in code and "weights_only=True" not in code:
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "unsafe loading in the package:\n" + "\n".join(offenders)
