"""A roofline per lab entry: how close each training step runs to the machine's matmul peak.

    python benchmarks/roofline.py                          # every default lab entry, fp32 and bf16, 1 thread
    python benchmarks/roofline.py --entries gan,vae --precisions bf16 --threads 2
    python benchmarks/roofline.py --entries gan,dcgan --precisions fp32 --profile 12   # and the top ops (stderr)

For each entry and precision it runs the real training step (`genlab.train._train_step`, on a
`Training` built by the loop's own `_prepare`) and prints one JSON line:
- `img_per_s`: images per second of training steps (median of `--rounds` timed rounds);
- `gflops_per_img`: FLOPs of one step (every phase, forward + backward, counted by torch's
  FlopCounterMode) per image; `achieved_gflops` = that × img_per_s;
- `peak_gflops`: a large square matmul's GFLOP/s in the same dtype and thread count, measured in
  the same process; `frac_of_peak` = achieved / peak (1.0 would be every step a perfect matmul);
- `split`: the step's wall time divided into forward (the model's loss under autocast),
  backward (zero_grad + backward), optimizer (Adam's step) and other (the loop's own work:
  requires_grad switches, logging sums, the EMA or end_step hook), measured by wrapping the
  loop's pieces, so the figures follow whatever the loop does.
Not a test: it prints figures and asserts nothing. Timings are disturbed by anything else
running; compare figures from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from run import matmul_peak_gflops  # benchmarks/run.py, beside this script


class StepTimer:
    """Wraps the loop's pieces of one Training `t` with clocks: its loss function (forward), the
    module-level `_backward_step` (backward + optimizer) and each optimizer's step (hooks)."""

    def __init__(self, t, train_module):
        self.seconds = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
        self._train = train_module
        self._original_backward = train_module._backward_step
        loss_fn = t.loss_fn

        def timed_loss(*args):
            start = time.perf_counter()
            out = loss_fn(*args)
            self.seconds["forward"] += time.perf_counter() - start
            return out

        def timed_backward(*args):
            start = time.perf_counter()
            self._original_backward(*args)
            self.seconds["backward"] += time.perf_counter() - start

        t.loss_fn = timed_loss
        train_module._backward_step = timed_backward
        self._opt_start = 0.0
        for optimizer in t.optimizers.values():
            optimizer.register_step_pre_hook(self._pre)
            optimizer.register_step_post_hook(self._post)

    def _pre(self, *_):
        self._opt_start = time.perf_counter()

    def _post(self, *_):
        elapsed = time.perf_counter() - self._opt_start
        self.seconds["optimizer"] += elapsed
        self.seconds["backward"] -= elapsed  # the step runs inside _backward_step

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)

    def restore(self) -> None:
        self._train._backward_step = self._original_backward


def bench_entry(name: str, precision: str, steps: int, rounds: int, seed: int, profile_rows: int = 0) -> dict:
    import genlab
    from genlab import train
    from genlab.lab import entry_configs, lab_entry
    from torch.utils.flop_counter import FlopCounterMode

    entry = lab_entry(name)
    data = genlab.load_dataset()
    train_config, model_config = entry_configs(entry, None, seed, None, "cpu", precision)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / name
        with train.RunFolderLock(run_dir) as lock:
            t = train._prepare(train_config, model_config, run_dir, False, False, data, lambda s: None, lock)
        batch = t.cfg.batch_size
        order = torch.randperm(len(t.x_train), generator=torch.Generator().manual_seed(seed))
        batches = [order[i * batch : (i + 1) * batch] for i in range(len(t.x_train) // batch)]

        def run_steps(n: int, offset: int = 0) -> float:
            start = time.perf_counter()
            for i in range(n):
                rows = batches[(offset + i) % len(batches)]
                train._train_step(t, t.x_train[rows], t.y_train[rows], len(rows))
            return time.perf_counter() - start

        run_steps(10)  # warm-up: kernel selection, allocator
        with FlopCounterMode(display=False) as counter:
            run_steps(1)
        flops_per_img = counter.get_total_flops() / batch
        timer = StepTimer(t, train)
        try:
            totals, splits = [], []
            for r in range(rounds):
                timer.reset()
                totals.append(run_steps(steps, offset=r * steps))
                splits.append(dict(timer.seconds))
        finally:
            timer.restore()
        if profile_rows:  # where the step's time goes, op by op (after the timing, so it does not disturb it)
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run_steps(steps)
            print(f"{name} {precision}: torch.profiler over {steps} steps", file=sys.stderr)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=profile_rows), file=sys.stderr)
    median = statistics.median(totals)
    middle = splits[totals.index(median)] if median in totals else splits[0]
    split = {k: v / median for k, v in middle.items()}
    split["other"] = 1.0 - sum(split.values())
    img_per_s = steps * batch / median
    peak = matmul_peak_gflops(repeats=8, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
    achieved = flops_per_img * img_per_s / 1e9
    return {
        "entry": name,
        "model": entry.model,
        "precision": precision,
        "batch_size": batch,
        "img_per_s": round(img_per_s, 1),
        "gflops_per_img": round(flops_per_img / 1e9, 4),
        "achieved_gflops": round(achieved, 2),
        "peak_gflops": round(peak, 1),
        "frac_of_peak": round(achieved / peak, 3),
        "split": {k: round(v, 3) for k, v in split.items()},
        "threads": torch.get_num_threads(),
        "machine": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    from genlab.lab import DEFAULT_MODELS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", default=",".join(DEFAULT_MODELS), help="lab entries or registry models (default: the default lab)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS", help="also print torch.profiler's top ROWS ops of each step to stderr")
    args = parser.parse_args()
    os.environ.setdefault("GENLAB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    for name in [e.strip() for e in args.entries.split(",") if e.strip()]:
        for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
            print(json.dumps(bench_entry(name, precision, args.steps, args.rounds, args.seed, args.profile)), flush=True)


if __name__ == "__main__":
    main()
