"""Training speed (and quality after a fixed budget) of genlab's models: one JSON line per model.

    python benchmarks/run.py                      # the lab's models + the peer-sized VAE + the peer baseline
    python benchmarks/run.py --models vae,gan --quick
    python benchmarks/run.py --models gan,vae --time-to-quality

Not a test: it prints figures, it asserts nothing. Each model runs in its own subprocess so
`peak_rss_mb` is that model's alone. Throughput is the real training loop's (`genlab.fit`):
the median over epochs after the first (warm-up) of images per second of training, excluding
the per-epoch evaluation and checkpoint. `train_gflops` = FLOPs of one training step (every
phase, forward + backward, counted by torch's FlopCounterMode) per image × images/s;
`frac_of_peak` divides it by a large float32 matmul's GFLOP/s measured in the same process.
Records go in benchmarks/README.md with the date and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# name -> (registry model, model-config overrides, batch size or None for the model's default)
PRESETS: dict[str, tuple[str, dict, int | None]] = {
    # The size of pytorch/examples' VAE (784-400-20, Bernoulli decoder), batch 128.
    "vae-400-20": ("vae", {"hidden_dims": (400,), "latent_dim": 20, "recon_loss": "bce"}, 128),
}
DEFAULT_MODELS = "ae,vae,gan,cgan,vae-400-20,peer-vae"


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best-of GFLOP/s of an n×n matmul in `dtype`: the machine's practical peak for dense math."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def step_flops_per_image(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one training step (all phases, forward + backward) divided by the batch size."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    cache: dict = {}
    with FlopCounterMode(display=False) as counter:
        for phase in model.phases:
            out = model.loss(x, y, phase, cache)
            out.loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def _model_and_config(name: str):
    import genlab

    model_name, overrides, batch = PRESETS.get(name, (name, {}, None))
    cls = genlab.get_model_class(model_name)
    return model_name, cls.config_class(**overrides), batch


def bench_genlab(name: str, epochs: int, evaluate: bool, seed: int, compile_model: bool = False, precision: str = "fp32") -> dict:
    import genlab
    from genlab.runs import build_model
    from genlab.train import resolve_configs

    model_name, model_config, batch = _model_and_config(name)
    data = genlab.load_dataset()
    train_config, model_config = resolve_configs(
        genlab.TrainConfig(model=model_name, epochs=epochs, batch_size=batch, seed=seed, device="cpu", compile=compile_model, precision=precision),
        model_config,
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = genlab.fit(train_config, model_config, Path(tmp) / name, data=data, progress=False, log=lambda s: None)
        rows = genlab.load_run(run_dir).metrics
        img_per_s = statistics.median(r["images_per_s"] for r in rows[1:]) if len(rows) > 1 else rows[0]["images_per_s"]
        model = build_model(train_config, model_config)
        x, y = data.tensors("train")
        flops = step_flops_per_image(model, x[: train_config.batch_size], y[: train_config.batch_size])
        result = {
            "model": name + ("+compile" if compile_model else "") + (f"+{precision}" if precision != "fp32" else ""),
            "params": sum(p.numel() for p in model.parameters()),
            "batch_size": train_config.batch_size,
            "epochs": epochs,
            "img_per_s": round(img_per_s, 1),
            "epoch_s": round(statistics.median(r["seconds"] for r in rows), 3),
            "train_flops_per_img": round(flops),
            "final_test": rows[-1]["test"],
        }
        if evaluate:
            result.update(_evaluate(run_dir, data, seed))
    return result


def _evaluate(run_dir: Path, data, seed: int) -> dict:
    try:
        from genlab.evaluate import evaluate_run
    except ImportError:
        return {}
    import genlab

    results = evaluate_run(genlab.load_run(run_dir), data=data, seed=seed, n_samples=5000, iw_samples=100)
    return {f"metric_{k}": v for k, v in results["metrics"].items() if isinstance(v, (int, float))}


def bench_peer_vae(epochs: int, seed: int) -> dict:
    """The training loop of pytorch/examples' vae/main.py, rewritten here in its style (their
    784-400-20 model, a DataLoader over the same digits, `.item()` each step, plain Adam), so
    genlab's speed can be compared with it in the same run on the same data."""
    import genlab
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    class PeerVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def forward(self, x):
            h = F.relu(self.fc1(x.view(-1, 784)))
            mu, logvar = self.fc21(h), self.fc22(h)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

    torch.manual_seed(seed)
    x, y = genlab.load_dataset().tensors("train")
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True)
    model = PeerVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    for _ in range(epochs):
        t = time.perf_counter()
        train_loss = 0.0
        for data, _ in loader:
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            bce = F.binary_cross_entropy(recon, data.view(-1, 784), reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = bce + kld
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        rates.append(len(x) / (time.perf_counter() - t))
    model.zero_grad(set_to_none=True)
    flops = step_flops_per_image(_PeerAdapter(model), x[:128], y[:128])
    return {
        "model": "peer-vae",
        "params": sum(p.numel() for p in model.parameters()),
        "batch_size": 128,
        "epochs": epochs,
        "img_per_s": round(statistics.median(rates[1:] or rates), 1),
        "epoch_s": round(len(x) / statistics.median(rates[1:] or rates), 3),
        "train_flops_per_img": round(flops),
    }


class _PeerAdapter(torch.nn.Module):
    """Lets step_flops_per_image count the peer model's step like a genlab model's."""

    phases = ("model",)

    def __init__(self, model):
        super().__init__()
        self.model = model

    def loss(self, x, y, phase, cache):
        import torch.nn.functional as F
        from genlab.models import LossOutput

        recon, mu, logvar = self.model(x)
        loss = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum") - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return LossOutput(loss=loss)


def time_to_quality(name: str, threshold: float, metric: str, max_epochs: int, seed: int) -> dict:
    """Training seconds (evaluation excluded) until `metric` first drops below `threshold`,
    checking after every epoch by continuing the same run one epoch at a time."""
    import genlab
    from genlab.evaluate import evaluate_run

    model_name, model_config, batch = _model_and_config(name)
    data = genlab.load_dataset()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / name
        for epoch in range(1, max_epochs + 1):
            config = genlab.TrainConfig(model=model_name, epochs=epoch, batch_size=batch, seed=seed, device="cpu")
            genlab.fit(config, model_config, run_dir, resume=epoch > 1, data=data, progress=False, log=lambda s: None)
            run = genlab.load_run(run_dir)
            metrics = evaluate_run(run, data=data, seed=seed, n_samples=5000, iw_samples=100)["metrics"]
            value = -metrics["iwae_log_px_nats"] if metric == "nll" else metrics[metric]
            if value < threshold:
                seconds = sum(r["seconds"] for r in run.metrics)
                return {"model": name, "ttq_metric": metric, "ttq_threshold": threshold, "ttq_epochs": epoch, "ttq_train_s": round(seconds, 2), "ttq_value": value}
    return {"model": name, "ttq_metric": metric, "ttq_threshold": threshold, "ttq_epochs": None, "ttq_value": value}


def child(args) -> None:
    torch.manual_seed(args.seed)
    peak = matmul_peak_gflops()
    if args.child == "peer-vae":
        result = bench_peer_vae(args.epochs, args.seed)
    else:
        result = bench_genlab(args.child, args.epochs, not args.no_metrics, args.seed, args.compile, args.precision)
    result["matmul_peak_gflops"] = round(peak, 1)
    result["train_gflops"] = round(result["train_flops_per_img"] * result["img_per_s"] / 1e9, 2)
    result["frac_of_peak"] = round(result["train_gflops"] / peak, 3)
    if args.time_to_quality and args.child in TTQ:
        metric, threshold, max_epochs = TTQ[args.child]
        result.update(time_to_quality(args.child, threshold, metric, max_epochs, args.seed))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["threads"] = torch.get_num_threads()
    result["torch"] = torch.__version__
    result["machine"] = f"{platform.machine()} {os.cpu_count()} cpus"
    print(json.dumps(result), flush=True)


# model -> (metric, threshold, max epochs) for --time-to-quality
# (nll = −IWAE log p(x), nats per image, K=100; each check of a VAE costs an IWAE pass over
# the test split, ~25 s on 10k digits here, so its threshold is checked at most 20 times)
TTQ = {"gan": ("fid", 250.0, 60), "cgan": ("fid", 50.0, 40), "dcgan": ("fid", 150.0, 40), "vae": ("nll", 165.0, 20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default: {DEFAULT_MODELS}); presets: {', '.join(PRESETS)}")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per model (default 6, --quick 3)")
    parser.add_argument("--quick", action="store_true", help="fewer epochs, no metrics")
    parser.add_argument("--no-metrics", action="store_true", help="skip evaluation after training")
    parser.add_argument("--time-to-quality", action="store_true", help=f"also time until {TTQ}")
    parser.add_argument("--compile", action="store_true", help="train with torch.compile (TrainConfig.compile); the first epoch, which compiles, is not counted")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="genlab's TrainConfig.precision (peer-vae stays float32, as its example is)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.epochs = args.epochs or (3 if args.quick else 6)
    args.no_metrics = args.no_metrics or args.quick
    if args.child:
        child(args)
        return
    os.environ.setdefault("GENLAB_OFFLINE", "1")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        cmd = [sys.executable, __file__, "--child", name, "--epochs", str(args.epochs), "--seed", str(args.seed)]
        cmd += ["--no-metrics"] * args.no_metrics + ["--time-to-quality"] * args.time_to_quality + ["--compile"] * args.compile
        cmd += ["--precision", args.precision]
        completed = subprocess.run(cmd, capture_output=True, text=True)
        if completed.returncode != 0:
            print(json.dumps({"model": name, "error": completed.stderr.strip().splitlines()[-1:]}), flush=True)
        else:
            print(completed.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
