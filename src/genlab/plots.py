"""Figures of what a model learned, as PNG files in the run folder's `figures/`.

Every figure is a pure function of the run (weights + config), the test split and a seed, so
`genlab plot RUN_DIR` rewrites the same pictures. Which figures a model gets depends on what it
can do: encode (reconstructions, latent space, interpolation), decode (manifold), sample.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from statistics import NormalDist

import matplotlib
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import torch  # noqa: E402

from .data import DataBundle, load_dataset  # noqa: E402
from .errors import RunFolderError  # noqa: E402
from .models.sampling import SamplerOptions  # noqa: E402
from .runs import FIGURES_DIR, Run  # noqa: E402
from .utils import atomic_write_bytes, make_generator  # noqa: E402

# Figures are built as matplotlib.figure.Figure objects, never through pyplot: no global backend
# is set or changed (importing genlab keeps a notebook's inline plots working) and nothing
# is left open. savefig renders PNG with Agg whatever the session's backend.
DIGIT_COLOURS = matplotlib.colormaps["tab10"]


def tile(images, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    """Images (N, 1, H, W) or (N, H, W) in [0, 1] -> one (rows·(H+pad), cols·(W+pad)) array."""
    images = np.asarray(images, dtype=np.float32).reshape(-1, *np.shape(images)[-2:])
    h, w = images.shape[-2:]
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = img
    return grid


def grid_png(images) -> bytes:
    """Images (N, 1, H, W) or (N, H, W) in [0, 1] -> PNG bytes of one near-square grid, one pixel
    per pixel (no resampling), dark digits on a light ground like the figures."""
    from PIL import Image

    n = len(images)
    cols = math.ceil(math.sqrt(n))
    grid = tile(images, math.ceil(n / cols), cols)
    buffer = io.BytesIO()
    Image.fromarray(np.round((1.0 - grid) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _save(fig, path: Path) -> Path:
    atomic_write_bytes(path, png_bytes(fig))
    return path


def _image_figure(grid: np.ndarray, title: str, path: Path, row_labels: list[str] | None = None, cell: int = 30) -> Path:
    scale = 0.012
    fig = Figure(figsize=(max(3.0, grid.shape[1] * scale * 2.2), max(2.0, grid.shape[0] * scale * 2.2)))
    ax = fig.subplots()
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    if row_labels:
        ax.set_yticks([2 + cell * i + cell / 2 - 2 for i in range(len(row_labels))], row_labels, fontsize=8)
        ax.tick_params(length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _save(fig, path)


def plot_reconstructions(run: Run, x: torch.Tensor, path: Path, n: int = 10) -> Path:
    """Two rows per block: originals above, reconstructions below."""
    # Evenly spaced, not the first n: a split sorted by class (the embedded digits' held-out
    # test split is) would otherwise show n zeros.
    originals = x[torch.linspace(0, len(x) - 1, min(n, len(x))).long()]
    recon = run.reconstruct(originals)
    grid = tile(torch.cat([originals.cpu(), recon]).numpy(), 2, n)
    return _image_figure(grid, f"{run.name}: test digits (top) and reconstructions (bottom)", path, ["original", "reconstruction"])


def _project_2d(z: np.ndarray) -> tuple[np.ndarray, str, np.ndarray | None, np.ndarray]:
    """z (N, D) -> (N, 2); PCA when D > 2. Returns (points, axis label, components, mean)."""
    mean = z.mean(0)
    if z.shape[1] == 2:
        return z, "z", None, mean
    if z.shape[1] == 1:
        return np.concatenate([z, np.zeros_like(z)], 1), "z", None, mean
    _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
    components = vt[:2]  # (2, D): the plane of largest variance
    return (z - mean) @ components.T, "PCA of z", components, mean


def plot_latent_space(run: Run, x: torch.Tensor, y: torch.Tensor, path: Path, class_names=None) -> Path:
    z = run.encode(x).numpy()
    points, label, _, _ = _project_2d(z)
    labels = y.cpu().numpy()
    fig = Figure(figsize=(6, 5.2))
    ax = fig.subplots()
    for digit in range(10):
        keep = labels == digit
        name = class_names[digit] if class_names else str(digit)
        ax.scatter(points[keep, 0], points[keep, 1], s=4, alpha=0.7, color=DIGIT_COLOURS(digit), label=name)
    ax.legend(markerscale=4, fontsize=8, loc="best", ncol=2, title="digit")
    ax.set_xlabel(f"{label} 1")
    ax.set_ylabel(f"{label} 2")
    ax.set_title(f"{run.name}: test set in latent space ({z.shape[1]}-D{', projected' if z.shape[1] > 2 else ''})")
    return _save(fig, path)


def manifold_grid(run: Run, x: torch.Tensor, n: int = 15) -> np.ndarray:
    """Decode a regular n×n grid over the latent plane -> (n·n, 1, 28, 28).

    For a VAE the grid spans the prior's central 90% (Gaussian quantiles, as in Kingma &
    Welling's figure 4); for an AE, which has no prior, the range its test codes occupy. With
    more than two latent dimensions the plane is the test codes' first two principal axes.
    """
    z = run.encode(x).numpy()
    points, _, components, mean = _project_2d(z)
    if run.model.can_sample:
        axis = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)])
        axes = (axis, axis)
    else:
        low, high = np.percentile(points, 2, axis=0), np.percentile(points, 98, axis=0)
        axes = (np.linspace(low[0], high[0], n), np.linspace(low[1], high[1], n))
    # rows go top to bottom = decreasing second coordinate, like a plot's y axis
    grid = np.array([[a, b] for b in axes[1][::-1] for a in axes[0]], dtype=np.float32)
    if components is not None:
        if run.model.can_sample:
            grid_z = grid @ components  # VAE: a plane through the prior's mean 0
        else:
            grid_z = mean + grid @ components
    elif z.shape[1] == 1:
        grid_z = grid[:, :1]
    else:
        grid_z = grid
    return run.decode(torch.from_numpy(grid_z.astype(np.float32))).numpy()


def plot_manifold(run: Run, x: torch.Tensor, path: Path, n: int = 15) -> Path:
    images = manifold_grid(run, x, n)
    return _image_figure(tile(images, n, n, pad=0), f"{run.name}: decoded latent manifold ({n}×{n} grid)", path)


def plot_samples(run: Run, path: Path, seed: int = 0, n_rows: int = 8, n_cols: int = 8, class_names=None, prior=None) -> Path:
    if run.model.conditional:  # one row per class
        labels = torch.arange(10).repeat_interleave(n_cols)
        images = run.sample(len(labels), seed=seed, labels=labels)
        names = list(class_names) if class_names else [str(d) for d in range(10)]
        return _image_figure(tile(images.numpy(), 10, n_cols), f"{run.name}: samples, one row per class", path, names)
    images = run.sample(n_rows * n_cols, seed=seed, prior=prior)
    source = "" if prior is None else ", fitted prior"
    return _image_figure(tile(images.numpy(), n_rows, n_cols), f"{run.name}: random samples (seed {seed}{source})", path)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between noise vectors a, b (D,) at t (T, 1) -> (T, D). Draws of
    N(0, I) in many dimensions all lie near the sphere of radius √D; the straight line between two
    passes well inside it (|midpoint| ≈ √(D/2)), where the model never saw its noise."""
    a, b = a.flatten().double(), b.flatten().double()
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1, 1))
    if omega < 1e-4:  # (nearly) parallel: the straight line is the arc
        return ((1 - t) * a + t * b).float()
    t = t.double()
    return ((torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)).float()


def plot_interpolation(run: Run, x: torch.Tensor, y: torch.Tensor, path: Path, seed: int = 0, steps: int = 10, rows: int = 4) -> Path:
    """Straight lines in latent space between pairs of test digits of different classes (AE,
    VAE); for a model without an encoder, between pairs of noise vectors."""
    t = torch.linspace(0, 1, steps).unsqueeze(1)  # (steps, 1)
    lines = []
    if run.model.can_encode:
        labels = y.cpu().numpy()
        gen = np.random.default_rng(seed)
        pairs = []
        for _ in range(rows):
            a, b = gen.choice(10, size=2, replace=False)
            pairs.append((int(gen.choice(np.flatnonzero(labels == a))), int(gen.choice(np.flatnonzero(labels == b)))))
        z = run.encode(x[[i for pair in pairs for i in pair]])
        for r in range(rows):
            za, zb = z[2 * r], z[2 * r + 1]
            lines.append(run.decode((1 - t) * za + t * zb))
        title = f"{run.name}: interpolation between test digits in latent space"
    else:
        gen = make_generator(seed)
        for _ in range(rows):
            za, zb = torch.randn(2, run.model.config.latent_dim, generator=gen)
            lines.append(run.decode(slerp(za, zb, t).to(run.device)))
        title = f"{run.name}: interpolation between two noise vectors (along the sphere)"
    grid = tile(torch.cat(lines).numpy(), rows, steps)
    return _image_figure(grid, title, path)


@torch.inference_mode()
def plot_trajectory(run: Run, path: Path, seed: int = 0, rows: int = 4, keep: int = 8) -> Path:
    """An iterative model's samples along t, one row per sample: the noise x₀ on the left, the
    state after each stretch of the ODE solve, the digit on the right (the default solver and
    steps, in equal steps: a shifted grid's states crowd near the noise, and the strip would
    show noise until its last frame)."""
    equal = SamplerOptions(shift=1.0)
    frames = run.trajectory(rows, seed=seed, keep=keep, shift=equal.shift)  # (keep, rows, 1, 28, 28), the same noise as run.sample(rows, seed)
    frames = frames.clamp(0, 1).transpose(0, 1)  # (rows, keep, 1, 28, 28): a row per sample
    grid = tile(frames.reshape(-1, 28, 28).numpy(), rows, frames.shape[1])
    nfe = run.model.nfe(equal)
    return _image_figure(grid, f"{run.name}: noise (t = 0, left) becoming a digit (t = 1, right), {nfe} network evaluations in equal steps", path)


def fid_vs_nfe_figure(curves: list[dict]) -> bytes:
    """PNG of FID against network evaluations per sample, from eval.json's "fid_vs_nfe" sections:
    curves = [{"name", "samples", "solver", "points": [{"nfe", "fid"}]}]. A model with several
    points (an iterative sampler) is a line; a one-step model one marker at NFE = 1."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    counts = sorted({int(c["samples"]) for c in curves})
    for i, curve in enumerate(curves):
        points = [(p["nfe"], p["fid"]) for p in curve["points"] if p.get("fid") is not None]
        if not points:
            continue
        nfe, fid = zip(*points)
        label = curve["name"] + (f" ({curve['solver']})" if len(points) > 1 and curve.get("solver") else "")
        if len(counts) > 1:  # say which count each series used, when they differ
            label += f", {int(curve['samples']):,} samples"
        if len(points) > 1:
            ax.plot(nfe, fid, "o-", color=f"C{i}", label=label)
        else:
            ax.plot(nfe, fid, "*", markersize=14, color=f"C{i}", label=label + " (one evaluation)")
        for x, y in points:
            ax.annotate(f"{y:.0f}" if y >= 100 else f"{y:.3g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=f"C{i}")
    ax.set_xscale("log", base=2)
    ticks = sorted({p["nfe"] for c in curves for p in c["points"]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per sample (NFE)")
    ax.set_ylabel("FID (classifier features, lower is better)")
    counted = f"{counts[0]:,} samples per point" if len(counts) == 1 else "samples per point as in the legend"
    ax.set_title(f"Sample quality against sampling cost ({counted}, test set)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def plot_losses(run: Run, path: Path) -> Path:
    """Train (solid) and test (dashed) curves of every logged figure, one panel per quantity."""
    rows = run.metrics
    epochs = [r["epoch"] for r in rows]
    keys = sorted({k for r in rows for k in r.get("train", {})} | {k for r in rows for k in r.get("test", {})})
    groups: list[tuple[str, list[str]]] = []
    if {"d_loss", "g_loss"} <= set(keys):
        groups.append(("GAN losses (D and G)", ["d_loss", "g_loss"]))
        groups.append(("D(x) and D(G(z))", [k for k in ("d_real", "d_fake") if k in keys]))
        keys = [k for k in keys if k not in ("d_loss", "g_loss", "d_real", "d_fake")]
    groups += [(k, [k]) for k in keys]
    fig = Figure(figsize=(4.2 * len(groups), 3.3))
    axes = fig.subplots(1, len(groups), squeeze=False)
    for ax, (title, names) in zip(axes[0], groups):
        for i, name in enumerate(names):
            colour = f"C{i}"
            for split, style in (("train", "-"), ("test", "--")):
                values = [r.get(split, {}).get(name) for r in rows]
                if any(v is not None for v in values):
                    ax.plot(epochs, [np.nan if v is None else v for v in values], style, color=colour, label=f"{split} {name}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run.name}: training curves", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def make_figures(run: Run, data: DataBundle | None = None, seed: int = 0, n_points: int = 5000, prior=None) -> dict[str, Path]:
    """Write every figure that applies to `run` into `run.path/figures/`; returns name -> path.
    `prior`: a fitted `prior.MixturePrior` the samples are drawn from instead of N(0, I)."""
    if data is None:
        data = load_dataset(run.train_config.dataset, run.train_config.data_dir)
    x, y = data.tensors("test")
    x, y = x[:n_points], y[:n_points]
    out = run.path / FIGURES_DIR
    if out.is_symlink():  # a received run's figures/ linked to a folder of yours: never write through it
        raise RunFolderError(f"{out} is a link to {os.readlink(out)}: genlab writes figures only into a folder of the run's own")
    out.mkdir(exist_ok=True)
    figures: dict[str, Path] = {}
    model = run.model
    if model.can_encode:
        figures["reconstructions"] = plot_reconstructions(run, x, out / "reconstructions.png")
        figures["latent_space"] = plot_latent_space(run, x, y, out / "latent_space.png", data.class_names)
        figures["manifold"] = plot_manifold(run, x, out / "manifold.png")
    if model.can_sample:
        figures["samples"] = plot_samples(run, out / "samples.png", seed=seed, class_names=data.class_names, prior=prior)
    if model.can_encode or model.can_sample:
        figures["interpolation"] = plot_interpolation(run, x, y, out / "interpolation.png", seed=seed)
    if model.iterative:
        figures["trajectory"] = plot_trajectory(run, out / "trajectory.png", seed=seed)
    if run.metrics:
        figures["losses"] = plot_losses(run, out / "losses.png")
    return figures

