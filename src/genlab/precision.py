"""Mixed precision: which dtype the forward passes run in, and whether the hardware makes it pay.

`TrainConfig.precision` is "fp32" (plain float32), "bf16" or "fp16". The two low-precision
choices run each phase's forward pass under `torch.autocast`, so matmuls and convolutions use
the faster dtype while the weights, the optimizer state and the loss reductions stay float32
(models/losses.py casts before every sum: the VAE's sums over 784 pixels must not round away).
fp16's narrow range needs a gradient scaler, which torch provides for CUDA only; bf16 has
float32's range and needs none. Evaluation never runs under autocast, so the metrics of a bf16
run are computed exactly as those of an fp32 run.

bf16 is only a gain where the hardware multiplies in it fast: x86 CPUs with avx512_bf16 or AMX,
CUDA GPUs from Ampere on. Having the instructions is not enough (on some CPUs with avx512_bf16 but
no AMX, oneDNN's bf16 matmul is slower than float32: benchmarks/README.md, "bf16 mixed precision"),
so `auto` (the lab's default) first asks for the units, then times a typical product in both
dtypes (`bf16_is_fast`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path

import torch

from .errors import GenlabError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 multiply units
PROBE_SHAPE = (256, 784, 512)  # (batch, pixels, hidden): the size of the MLPs' first product
# bf16 must be this much faster on the probe to be chosen: below it, the casts autocast adds
# around every layer eat the gain (the VAE step gains less than its matmul alone).
FAST_BF16_SPEEDUP = 1.5


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse, in one line, a precision the device cannot train in."""
    if precision == "fp16" and device.type != "cuda":
        raise GenlabError(f"--precision fp16 needs a CUDA GPU (its gradient scaler is CUDA-only); on {device.type} use --precision bf16 or fp32")


def forward_context(precision: str, device: torch.device):
    """The context a training forward pass runs in: autocast to bf16/fp16, or nothing for fp32
    (so fp32 runs keep exactly the arithmetic they had before mixed precision existed)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 only: scales the loss so small gradients do not flush to zero (one per optimizer)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 pays on this device (detected, not assumed): it has bf16 multiply units and
    the probe product runs at least FAST_BF16_SPEEDUP times faster in bf16 than in float32."""
    if device.type == "cuda":
        has_units = torch.cuda.is_bf16_supported(including_emulation=False)
    else:
        has_units = device.type == "cpu" and bool(set(CPU_BF16_FLAGS) & _cpu_flags())
    return has_units and bf16_speedup(str(device)) >= FAST_BF16_SPEEDUP


@functools.lru_cache(maxsize=None)
def bf16_speedup(device: str, repeats: int = 5) -> float:
    """float32 seconds / bf16 seconds of the PROBE_SHAPE matmul on `device`, best of `repeats`
    each, alternated so that a busy machine slows both alike (a fraction of a second on a CPU)."""
    m, k, n = PROBE_SHAPE
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    for _ in range(repeats):
        for dtype in best:
            x, w = a.to(dtype), b.to(dtype)
            x @ w  # warm-up: kernel selection
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(5):
                x @ w
            _synchronize(device)
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell here, so assume no bf16 units
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def resolve_precision(precision: str, device: torch.device) -> str:
    """A concrete precision for "auto": bf16 where the device is fast at it, else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_is_fast(device) else "fp32"
