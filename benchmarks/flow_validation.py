"""The flow's validation search (benchmarks/README.md, "Flow matching"): train `genlab`'s flow
model on 4,500 of the 5,000 training digits for a number of steps in one thread, then score
samples of a moving average of its weights against the 500 held-out digits (FID, recall, class
entropy on genlab's classifier features). Not the library's loop: its EMA (genlab.ema) and warmup +
cosine schedule (train.learning_rate) are written out here the same way.

    GENLAB_DATA=../shared/data/mnist python benchmarks/flow_validation.py --steps 2000 --channels 16,32,32
Prints one JSON line: the settings, CPU seconds of training and of sampling, and the scores.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np
import torch

from genlab.classifier import load_classifier, predict
from genlab.data import load_dataset
from genlab.evaluate import class_histogram, fid_from_features, normalised_entropy, precision_recall
from genlab.models import MODELS
from genlab.models.sampling import SamplerOptions

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=2000)
p.add_argument("--channels", default="16,32,32")
p.add_argument("--blocks", type=int, default=1)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--time", default="logit_normal")
p.add_argument("--logit-mean", type=float, default=0.0)
p.add_argument("--logit-std", type=float, default=1.0)
p.add_argument("--coupling", default="independent", help="how a batch pairs noises with digits: independent or minibatch_ot")
p.add_argument("--ema", default="0.995", help="decays of the weights' moving averages kept side by side, each scored")
p.add_argument("--schedule", default="cosine")
p.add_argument("--warmup", type=int, default=100)
p.add_argument("--sample-steps", default="8")
p.add_argument("--solver", default="heun")
p.add_argument("--precision", default="bf16")
p.add_argument("--channels-last", type=int, default=0)
p.add_argument("--n-samples", type=int, default=2000)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--save", default="")
p.add_argument("--keep", default="", help="write the trained average's weights here (torch.save)")
p.add_argument("--load", default="", help="skip training: score the average's weights kept by --keep")
p.add_argument("--shift", default="1", help="time shifts of the solver's grid to score (models.sampling.time_grid); 1 = equal steps")
a = p.parse_args()
torch.set_num_threads(1)
torch.manual_seed(a.seed)

data = load_dataset("mnist")
x_all, _ = data.tensors("train")
perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(1234))
x_val, x_train = x_all[perm[:500]], x_all[perm[500:]]

cls = MODELS["flow"]
config = cls.config_class(channels=tuple(int(c) for c in a.channels.split(",")), blocks=a.blocks, time_sampling=a.time, logit_mean=a.logit_mean, logit_std=a.logit_std, coupling=a.coupling)
model = cls(config)
fmt = torch.channels_last if a.channels_last else torch.contiguous_format
model.to(memory_format=fmt)
decays = [float(d) for d in a.ema.split(",")]
emas = [copy.deepcopy(model).eval() for _ in decays]
opt = torch.optim.Adam(model.parameters(), lr=a.lr, fused=True)
autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16")  # noqa: E731


def lr_at(step: int) -> float:
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    if a.schedule == "const":
        return a.lr
    progress = (step - a.warmup) / max(1, a.steps - a.warmup)
    return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))  # to a tenth, as train.learning_rate


t0 = time.process_time()
step = 0
losses = [float("nan")]
if a.load:
    for ema, state in zip(emas, torch.load(a.load)):
        ema.load_state_dict(state)
    step = a.steps
while step < a.steps:
    order = torch.randperm(len(x_train))
    for i in range(0, len(order) - a.batch + 1, a.batch):
        if step >= a.steps:
            break
        xb = x_train[order[i : i + a.batch]].contiguous(memory_format=fmt)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with autocast():
            out = model.loss(xb, None, "model", {})
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        with torch.no_grad():
            for ema, decay in zip(emas, decays):
                for pe, pm in zip(ema.parameters(), model.parameters()):  # as genlab.ema: no warm start
                    pe.lerp_(pm, 1 - decay)
        losses.append(float(out.loss))
        step += 1
train_cpu = time.process_time() - t0
if a.keep:
    torch.save([ema.state_dict() for ema in emas], a.keep)


clf = load_classifier()
real_feats, _ = predict(clf, x_val)
results = []
settings = [(sv, int(st), float(sh)) for sv in a.solver.split(",") for st in a.sample_steps.split(",") for sh in a.shift.split(",")]
for (decay, ema), (solver, steps, shift) in [(e, s) for e in zip(decays, emas) for s in settings]:
    t1 = time.process_time()
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode(), autocast():
        sampler = SamplerOptions(steps=steps, solver=solver, shift=shift)
        imgs = torch.cat([ema.sample(500, generator=gen, sampler=sampler).float() for _ in range(a.n_samples // 500)])
    sample_cpu = time.process_time() - t1
    feats, pred = predict(clf, imgs)
    prec, rec = precision_recall(real_feats, feats)
    results.append({
        "ema": decay, "solver": solver, "sample_steps": steps, "shift": shift, "nfe": ema.nfe(SamplerOptions(steps=steps, solver=solver)), "sample_cpu_s": round(sample_cpu, 1),
        "fid_val": round(fid_from_features(feats.double().numpy(), real_feats.double().numpy()), 2),
        "precision": round(prec, 3), "recall": round(rec, 3), "class_entropy": round(normalised_entropy(class_histogram(pred.numpy())), 4),
    })
if a.save:
    from genlab.plots import grid_png
    open(a.save, "wb").write(grid_png(imgs[:64].squeeze(1).numpy()))
print(json.dumps({**vars(a), "params": sum(p.numel() for p in model.parameters()), "train_cpu_s": round(train_cpu, 1),
                  "final_loss": round(float(np.mean(losses[-100:])), 4), "results": results}))
