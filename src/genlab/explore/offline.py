"""The explorer inside report.html: the same page script, with decodings precomputed.

For a model with a 2-D code the map is decoded once on a GRID × GRID lattice (per digit for a
conditional model) and the page shows the decoding at the lattice point nearest the pointer.
Why a lattice rather than the decoder itself in JavaScript: it works for every architecture
(MLP or conv, any activation) with no second implementation of torch's layers to keep in step,
it is exact at the lattice points, a lookup is instant, and the decodings pack into one PNG
sprite (dark-on-light digits compress well) of a few hundred kB; the default MLP decoder's
weights alone would be about 1 MB even as float16. The sizes: benchmarks/README.md,
"report.html's explorer size".
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data import DataBundle
from ..models.sampling import SamplerOptions
from ..plots import tile
from ..runs import Run, load_run
from .server import page_asset
from .session import Explorer

GRID = 40  # lattice points per axis: neighbouring decodings differ little at this spacing
GRID_CONDITIONAL = 20  # per digit: ten lattices of 20 × 20 hold as many cells as 2.5 of 40 × 40
SPRITE_COLUMNS = 40
BATCH = 500


FLOW_SEEDS = 12  # an iterative model's seeds integrated in advance ...
FLOW_STEPS = (1, 2, 4, 8, 16, 32)  # ... with each of these step counts: about 0.3 MB of page, a few CPU-seconds


def applies(run: Run) -> bool:
    """The report explores models whose codes are 2-D (there the map is the whole latent space)
    and iterative models (a few seeds, each integrated with a few step counts)."""
    return (run.model.can_encode and run.model_config.latent_dim == 2) or run.model.iterative


def sprite_png(images: torch.Tensor) -> str:
    """Images (N, 1, 28, 28) in [0, 1] -> a data: URI of one grey PNG of their ink (0 = blank),
    image k at column k % SPRITE_COLUMNS, row k // SPRITE_COLUMNS: what the page's GridSource reads."""
    grid = tile(images.numpy(), -(-len(images) // SPRITE_COLUMNS), SPRITE_COLUMNS, pad=0)
    buffer = io.BytesIO()
    Image.fromarray(np.round(grid * 255).astype(np.uint8), "L").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def grid_data(explorer: Explorer) -> dict:
    """Everything the page's GridSource needs, JSON-ready: lattice decodings, readings, info."""
    conditional = explorer.model.conditional
    grid = GRID_CONDITIONAL if conditional else GRID
    (x0, x1), (y0, y1) = explorer.ranges[:2]
    # cell (digit, row j, column i) is at z = (x_i, y_j); row 0 is the lowest y
    xs, ys = np.linspace(x0, x1, grid), np.linspace(y0, y1, grid)
    plane = torch.tensor([[x, y] for y in ys for x in xs], dtype=torch.float32)  # (grid², 2)
    digits = range(10) if conditional else [None]
    images = []
    for digit in digits:
        for start in range(0, len(plane), BATCH):
            z = plane[start : start + BATCH]
            labels = None if digit is None else torch.full((len(z),), digit, dtype=torch.long)
            images.append(explorer.run.decode(z, labels=labels))
    images = torch.cat(images)
    return {
        "info": explorer.info(),
        "grid": grid,
        "ranges": [list(r) for r in explorer.ranges[:2]],
        "sprite": sprite_png(images),
        **_readings(explorer, images),
    }


def flow_data(explorer: Explorer) -> dict:
    """Everything the page's FlowGridSource needs: FLOW_SEEDS seeds' noises integrated with each of
    FLOW_STEPS step counts (the model's default solver; a conditional flow draws digit seed % 10
    at its default guidance), each picture's reading and its states along t."""
    finals, frames, spans, times = [], [], [], []
    seeds = list(range(FLOW_SEEDS))
    digits = [seed % 10 for seed in seeds] if explorer.model.conditional else None
    with torch.inference_mode():
        for seed in seeds:
            labels = None if digits is None else torch.tensor([digits[seed]])
            for steps in FLOW_STEPS:
                states, t = explorer.trajectory(seed, steps, labels, None)
                spans.append([len(frames), len(states)])
                frames.extend(states)
                finals.append(states[-1])
                times.append(t)
    finals_t = torch.stack(finals)
    cells = _readings(explorer, finals_t)
    return {
        "info": explorer.info(),
        "seeds": seeds,
        "digits": digits,
        "steps": list(FLOW_STEPS),
        "nfe": [explorer.model.nfe(SamplerOptions(steps=s)) for s in FLOW_STEPS],
        "sprite": sprite_png(finals_t),
        "frames_sprite": sprite_png(torch.stack(frames)),
        "frames": spans,
        "times": times,
        **cells,
    }


def _readings(explorer: Explorer, images: torch.Tensor) -> dict:
    """The classifier's reading and the nearest training digit of each image, packed as the page's
    GridSource reads them: integers per cell, and only the training digits some cell is nearest to."""
    parts = [explorer.measure(images[start : start + BATCH]) for start in range(0, len(images), BATCH)]  # bounded memory
    read, confidence, index, distance = (None if part[0] is None else torch.cat(part) for part in zip(*parts))
    n = len(images)
    unique, position = np.unique(index.numpy(), return_inverse=True)
    return {
        "nearest_sprite": sprite_png(torch.stack([explorer.training_image(int(j)) for j in unique])),
        "nearest_labels": [explorer.training_label(int(j)) for j in unique],
        # per cell, integers to keep the page small: confidence in %, distance in hundredths
        "cells": {
            "digit": [-1] * n if read is None else read.tolist(),
            "confidence": [0] * n if confidence is None else (confidence * 100).round().int().tolist(),
            "nearest": position.tolist(),
            "distance": (distance * 100).round().int().tolist(),
        },
    }


def explorer_block(run_dir: Path, data: DataBundle | None = None) -> str:
    """The HTML of report.html's explorer for the run in `run_dir` (style, data and script
    inlined), or "" when its code is not 2-D."""
    run = load_run(run_dir, device="cpu")
    if not applies(run):
        return ""
    explorer = Explorer(run, data)
    payload = flow_data(explorer) if run.model.iterative else grid_data(explorer)
    element_id = "gx-data-" + re.sub(r"[^a-z0-9_-]", "-", run.path.name.lower())
    # "</" would end the <script> element early; JSON allows the escaped form
    json_text = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    live = f"<code>genlab explore {html.escape(str(run.path))}</code>"
    if run.model.iterative:
        title = f"Explore how {html.escape(run.name)} turns noise into a digit"
        note = (
            f"Pick a seed (its noise x₀) and move the steps slider: the sample after that many solver steps, computed in advance "
            f"for {FLOW_SEEDS} seeds and {', '.join(map(str, FLOW_STEPS))} steps; for any seed and step count, guidance and "
            f"interpolation between seeds, {live}."
        )
    else:
        grid = payload["grid"]
        lattice = f"a {grid} × {grid} lattice" + (" per digit" if explorer.model.conditional else "")
        title = f"Explore {html.escape(run.name)}'s latent space"
        note = (
            "Move the pointer over the map: the digit under it is decoded (precomputed on "
            f"{lattice} over the map, so the nearest lattice point is shown; for every point, "
            f"{live}). Drag to see the interpolation between two points."
        )
    return "\n".join(
        [
            f"<h3>{title}</h3>",
            f"<p class='note'>{note}</p>",
            f"<style>{page_asset('explore.css').decode()}</style>",
            f"<div class='gx' data-gx-grid='{element_id}'>Loading the explorer… (it needs JavaScript)</div>",
            f"<script type='application/json' id='{element_id}'>{json_text}</script>",
            f"<script>{page_asset('explore.js').decode()}</script>",
        ]
    )
