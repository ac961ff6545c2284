"""Mixed precision (`--precision`, genlab.precision): bf16 autocast on CPU, fp16 refused off CUDA,
recorded and kept on resume, bitwise resume at bf16, the lab's `auto`; CUDA paths skip cleanly."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import genlab.lab as lab_module
import genlab.precision as precision_module
from conftest import fit_killed_after, run_cli, synthetic_digits, tiny_train_config
from genlab import MODELS, TrainConfig, fit
from genlab.precision import forward_context, resolve_precision
from genlab.runs import CHECKPOINT_FILE, CONFIG_FILE, WEIGHTS_FILE, build_model, load_tensors, read_metrics
from genlab.train import resolve_configs

QUIET = dict(progress=False, log=lambda _: None)
CPU = torch.device("cpu")
# One bf16 training step's loss against fp32's: bf16 keeps 8 significant bits, so each product
# is off by ~0.4%; the loss sums are float32, so the loss is within 1% (measured: < 0.02% for
# every model but WGAN-GP's generator loss, which is near 0), plus an absolute 0.005 for such losses.
STEP_RTOL, STEP_ATOL = 1e-2, 5e-3
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def batch(n: int = 64, device=CPU):
    images, labels = synthetic_digits(n)
    return torch.tensor(images, device=device).float().div(255).unsqueeze(1), torch.tensor(labels, device=device).long()


def step_losses(name: str, precision: str, device=CPU) -> tuple[dict[str, float], set[torch.dtype]]:
    """Each phase's loss of one step from the same weights and noise, and the dtypes the model's
    layers computed in."""
    train_config, model_config = resolve_configs(TrainConfig(model=name))
    torch.manual_seed(0)
    model = build_model(train_config, model_config).to(device).train()
    dtypes: set[torch.dtype] = set()
    for layer in model.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            layer.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    x, y = batch(device=device)
    torch.manual_seed(1)
    cache: dict = {}
    losses = {}
    for phase in model.phases:
        with forward_context(precision, device):
            out = model.loss(x, y, phase, cache)
        assert out.loss.dtype == torch.float32, "loss reductions must stay float32"
        losses[phase] = out.loss.item()
    return losses, dtypes


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_step_loss_is_within_tolerance_of_fp32(name):
    fp32, fp32_dtypes = step_losses(name, "fp32")
    bf16, bf16_dtypes = step_losses(name, "bf16")
    assert fp32_dtypes == {torch.float32} and torch.bfloat16 in bf16_dtypes  # autocast really ran
    for phase, value in fp32.items():
        assert bf16[phase] == pytest.approx(value, rel=STEP_RTOL, abs=STEP_ATOL), phase


def test_bf16_run_is_recorded_and_resumes_bitwise(tmp_path, tiny_bundle):
    """A bf16 run stopped mid-epoch resumes (keeping bf16 from config.json, whatever is asked)
    to the uninterrupted bf16 run's weights bit for bit."""
    config = tiny_train_config("vae", epochs=2, checkpoint_every=3, precision="bf16")
    reference = fit(config, None, tmp_path / "ref", data=tiny_bundle, **QUIET)
    fit_killed_after(5, config, None, tmp_path / "run", data=tiny_bundle, **QUIET)
    assert not (tmp_path / "run" / WEIGHTS_FILE).exists()
    fit(TrainConfig(), None, tmp_path / "run", resume=True, data=tiny_bundle, **QUIET)  # asks for fp32: the run's bf16 wins
    saved = json.loads((tmp_path / "run" / CONFIG_FILE).read_text())
    assert saved["train"]["precision"] == "bf16"
    mine, theirs = load_tensors(tmp_path / "run" / WEIGHTS_FILE)[0], load_tensors(reference / WEIGHTS_FILE)[0]
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [1, 2]


def test_bf16_trains_differently_from_fp32_but_fp32_is_the_default(tmp_path, tiny_bundle):
    fp32 = fit(tiny_train_config("ae"), None, tmp_path / "fp32", data=tiny_bundle, **QUIET)
    bf16 = fit(tiny_train_config("ae", precision="bf16"), None, tmp_path / "bf16", data=tiny_bundle, **QUIET)
    assert json.loads((fp32 / CONFIG_FILE).read_text())["train"]["precision"] == "fp32"
    a, b = load_tensors(fp32 / WEIGHTS_FILE)[0], load_tensors(bf16 / WEIGHTS_FILE)[0]
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA fp16 is allowed")
def test_fp16_without_cuda_is_refused_in_one_line(tmp_path, tiny_data_dir):
    code, out, err = run_cli("train", "vae", "--data", tiny_data_dir, "--epochs", "1", "--precision", "fp16", "--device", "cpu", "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1 and "fp16 needs a CUDA GPU" in err
    assert not (tmp_path / "run").exists()


def test_unknown_precision_is_a_usage_error(tmp_path):
    code, _, err = run_cli("train", "vae", "--precision", "fp8", "--out", tmp_path / "run")
    assert code == 2 and "invalid choice: 'fp8'" in err


def test_auto_is_bf16_only_where_the_hardware_has_and_rewards_it(monkeypatch):
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr(precision_module, "bf16_speedup", lambda device: pytest.fail("probed a CPU without bf16 units"))
    assert resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: {"avx512_bf16"})
    for speedup, expected in ((0.6, "fp32"), (1.2, "fp32"), (3.6, "bf16")):
        monkeypatch.setattr(precision_module, "bf16_speedup", lambda device, s=speedup: s)
        assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"


def test_the_probe_measures_a_ratio():
    assert 0 < precision_module.bf16_speedup("cpu", repeats=1) < 100


def test_the_lab_resolves_auto_once_per_model_to_what_each_run_records(tmp_path, monkeypatch):
    seen = []

    def fake_fit(train_config, *args, **kwargs):
        seen.append(train_config.precision)
        raise SystemExit  # the configs are all this test needs

    monkeypatch.setattr(lab_module, "resolve_precision", lambda precision, device: "bf16" if precision == "auto" else precision)
    monkeypatch.setattr(lab_module, "fit", fake_fit)
    monkeypatch.setattr(lab_module, "load_dataset", lambda *a, **k: type("D", (), {"source": "x", "notes": []})())
    with pytest.raises(SystemExit):
        lab_module.run_lab(tmp_path / "lab", models=("ae",), log=lambda _: None)
    assert seen == ["bf16"]
    # the GANs keep fp32 under auto (bf16 moved their FID), and take what they are told
    assert lab_module.lab_precision("gan", "auto", CPU) == "fp32" and lab_module.lab_precision("cgan", "bf16", CPU) == "bf16"
    assert lab_module.lab_precision("vae", "auto", CPU) == "bf16" and lab_module.lab_precision("flow", "auto", CPU) == "bf16"


# --------------------------------------------------------------------------------------------
# CUDA: skipped without a GPU
# --------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("name", ["vae", "gan"])
def test_cuda_bf16_step_loss_is_within_tolerance_of_fp32(name):
    device = torch.device("cuda")
    fp32, _ = step_losses(name, "fp32", device)
    bf16, dtypes = step_losses(name, "bf16", device)
    assert torch.bfloat16 in dtypes
    for phase, value in fp32.items():
        assert bf16[phase] == pytest.approx(value, rel=STEP_RTOL, abs=STEP_ATOL), phase


@needs_cuda
@pytest.mark.parametrize("name", ["vae", "gan"])
def test_cuda_fp16_trains_with_a_scaler_that_is_checkpointed_and_resumed(name, tmp_path, tiny_bundle):
    config = tiny_train_config(name, device="cuda", epochs=2, checkpoint_every=3, precision="fp16")
    fit_killed_after(5, config, None, tmp_path / "run", data=tiny_bundle, **QUIET)
    meta = load_tensors(tmp_path / "run" / CHECKPOINT_FILE)[1]
    assert set(meta["scalers"]) == set(MODELS[name].phases) and all(s["scale"] > 0 for s in meta["scalers"].values())
    fit(config, None, tmp_path / "run", resume=True, data=tiny_bundle, **QUIET)
    rows = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2] and all(torch.isfinite(torch.tensor(list(r["test"].values()))).all() for r in rows)
    info = json.loads((tmp_path / "run" / CONFIG_FILE).read_text())
    assert info["device"].startswith("cuda") and info["train"]["precision"] == "fp16"


@needs_cuda
def test_cuda_bf16_run_keeps_data_and_generators_on_the_gpu(tmp_path, tiny_bundle):
    from genlab import load_run

    run_dir = fit(tiny_train_config("gan", device="cuda", precision="bf16"), None, tmp_path / "run", data=tiny_bundle, **QUIET)
    run = load_run(run_dir, device="cuda")
    assert run.model.device.type == "cuda" and run.sample(4, seed=0).shape == (4, 1, 28, 28)
