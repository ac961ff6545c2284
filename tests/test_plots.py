"""Figures: the right ones for each model, valid PNG files, and `tile` laying images out right."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CAN_ENCODE, CAN_SAMPLE, ITERATIVE
from genlab import MODELS, TrainConfig, load_run
from genlab import plots
from genlab.models.ae import AEConfig
from genlab.models.vae import VAEConfig
from genlab.runs import Run

NAMES = sorted(MODELS)


def expected_figures(model) -> set[str]:
    names = {"losses"}
    if model.name in CAN_ENCODE:
        names |= {"reconstructions", "latent_space", "manifold", "interpolation"}
    if model.name in CAN_SAMPLE:
        names |= {"samples", "interpolation"}
    if model.name in ITERATIVE:
        names |= {"trajectory"}
    return names


def assert_png(path, min_size=(150, 100)) -> np.ndarray:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()  # checks the chunks and their CRCs
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1], image.size
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5, f"{path.name} is blank"
    return pixels


@pytest.mark.parametrize("name", NAMES)
def test_make_figures_writes_valid_pngs(name, tiny_runs, tiny_bundle):
    run = load_run(tiny_runs[name])
    figures = plots.make_figures(run, tiny_bundle, seed=0)
    assert set(figures) == expected_figures(run.model)
    assert {p.name for p in (run.path / "figures").glob("*.png")} >= {f"{n}.png" for n in figures}
    for figure, path in figures.items():
        assert path == run.path / "figures" / f"{figure}.png"
        assert_png(path)


def test_the_three_lab_models_get_their_figures(tiny_runs):
    assert expected_figures(load_run(tiny_runs["ae"]).model) == {"reconstructions", "latent_space", "manifold", "interpolation", "losses"}
    assert expected_figures(load_run(tiny_runs["vae"]).model) == {
        "reconstructions", "latent_space", "manifold", "interpolation", "losses", "samples"
    }
    assert expected_figures(load_run(tiny_runs["gan"]).model) == {"samples", "interpolation", "losses"}


def test_figures_are_reproducible_from_the_seed(tiny_runs, tiny_bundle, tmp_path):
    run = load_run(tiny_runs["vae"])
    first = assert_png(plots.plot_samples(run, tmp_path / "a.png", seed=3))
    again = assert_png(plots.plot_samples(run, tmp_path / "b.png", seed=3))
    other = assert_png(plots.plot_samples(run, tmp_path / "c.png", seed=4))
    np.testing.assert_array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)


def _untrained_run(tmp_path, name: str, config) -> Run:
    torch.manual_seed(0)
    model = MODELS[name](config).eval()
    tmp_path.mkdir(parents=True, exist_ok=True)
    return Run(path=tmp_path, model=model, train_config=TrainConfig(model=name), model_config=config)


@pytest.mark.parametrize("name, config", [("ae", AEConfig(latent_dim=1, hidden_dims=(32,))), ("vae", VAEConfig(latent_dim=8, hidden_dims=(32,)))])
def test_latent_figures_for_other_latent_sizes(name, config, tmp_path, tiny_bundle):
    """1-D codes are drawn on a line, more than 2 dimensions through a PCA projection."""
    run = _untrained_run(tmp_path / name, name, config)
    figures = plots.make_figures(run, tiny_bundle)
    assert "losses" not in figures  # no metrics.jsonl: nothing to draw
    for key in ("latent_space", "manifold"):
        assert_png(figures[key])
    x, _ = tiny_bundle.tensors("test")
    grid = plots.manifold_grid(run, x, n=5)
    assert grid.shape == (25, 1, 28, 28) and grid.min() >= 0 and grid.max() <= 1


def test_manifold_grid_of_a_2d_vae_spans_the_prior(tiny_runs, tiny_bundle):
    run = load_run(tiny_runs["vae"])
    x, _ = tiny_bundle.tensors("test")
    grid = plots.manifold_grid(run, x, n=4)
    assert grid.shape == (16, 1, 28, 28)
    # The grid is decoded row by row: first row at the top of the plane (largest z2).
    from statistics import NormalDist

    axis = [NormalDist().inv_cdf(q) for q in np.linspace(0.05, 0.95, 4)]
    corners = torch.tensor([[axis[0], axis[-1]], [axis[-1], axis[0]]], dtype=torch.float32)
    expected = run.decode(corners).numpy()
    np.testing.assert_allclose(grid[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(grid[-1], expected[1], atol=1e-5)


# --------------------------------------------------------------------------------------------
# tile
# --------------------------------------------------------------------------------------------


def test_tile_places_images_row_by_row():
    images = np.stack([np.full((1, 3, 2), i / 10, dtype=np.float32) for i in range(6)])  # (6, 1, 3, 2)
    grid = plots.tile(images, rows=2, cols=3, pad=1)
    assert grid.shape == (2 * (3 + 1) + 1, 3 * (2 + 1) + 1)
    for i in range(6):
        r, c = divmod(i, 3)
        top, left = 1 + r * 4, 1 + c * 3
        np.testing.assert_allclose(grid[top : top + 3, left : left + 2], i / 10)
    # Padding between and around the images is white (1).
    assert (grid[0] == 1).all() and (grid[:, 0] == 1).all() and (grid[4] == 1).all() and (grid[:, 3] == 1).all()


def test_tile_accepts_3d_input_and_leaves_missing_cells_white():
    images = np.zeros((4, 5, 5), dtype=np.float32)
    grid = plots.tile(images, rows=2, cols=3, pad=0)
    assert grid.shape == (10, 15)
    assert (grid[:5, :15] == 0).all() and (grid[5:, :5] == 0).all()
    assert (grid[5:, 5:] == 1).all()  # cells 4 and 5 have no image


def test_tile_drops_images_beyond_the_grid():
    images = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1) / 10
    grid = plots.tile(images, rows=1, cols=2, pad=0)
    np.testing.assert_allclose(grid, [[0.0, 0.1]])


def test_importing_genlab_leaves_the_matplotlib_backend_alone():
    """A notebook's inline backend must survive `import genlab.plots` (it used to force Agg)."""
    code = (
        "import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot as plt\n"
        "import genlab.plots, genlab.lab, genlab.cli\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert not plt.get_fignums()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_reconstructions_show_digits_from_across_the_test_split(tiny_runs, tmp_path, monkeypatch):
    """With a class-sorted test split (the offline default's), the figure must not be all zeros."""
    run = load_run(tiny_runs["ae"])
    shown = []
    original = run.reconstruct
    monkeypatch.setattr(run, "reconstruct", lambda x: shown.append(x) or original(x))
    x = torch.arange(100, dtype=torch.float32).view(100, 1, 1, 1).expand(100, 1, 28, 28) / 100  # image i = i/100
    plots.plot_reconstructions(run, x, tmp_path / "r.png", n=10)
    firsts = shown[0][:, 0, 0, 0].mul(100).round().long().tolist()
    assert firsts == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_of_each_model_is_written_and_not_empty(name, tiny_runs, tiny_bundle):
    from genlab import plots

    run = load_run(tiny_runs[name])
    figures = plots.make_figures(run, tiny_bundle)
    assert set(figures) == expected_figures(run.model)
    for path in figures.values():
        assert path.is_file() and path.stat().st_size > 1000


def test_the_report_shows_a_figure_it_has_no_title_for(tiny_runs, tmp_path):
    """Adding a figure is one function in plots.py: report.html shows any PNG in figures/."""
    import shutil

    from genlab.report import write_report

    lab = tmp_path / "lab"
    shutil.copytree(tiny_runs["vae"], lab / "vae")
    shutil.copy(lab / "vae" / "figures" / "samples.png", lab / "vae" / "figures" / "a_new_view.png")
    page = write_report(lab).read_text()
    assert "vae: a_new_view" in page and "vae: Samples" in page


def test_the_trajectory_strip_runs_from_the_seeds_noise_to_its_sample(tiny_runs, tmp_path):
    run = load_run(tiny_runs["flow"])
    frames = run.trajectory(4, seed=2, keep=8)
    torch.testing.assert_close(frames[-1], run.sample(4, seed=2))  # the last column is the sample
    assert not torch.equal(frames[0], frames[-1])
    pixels = assert_png(plots.plot_trajectory(run, tmp_path / "t.png", seed=2))
    np.testing.assert_array_equal(pixels, assert_png(plots.plot_trajectory(run, tmp_path / "u.png", seed=2)))


def test_slerp_keeps_noise_on_its_sphere_and_ends_at_both_draws():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 784, generator=gen)
    path = plots.slerp(a, b, torch.linspace(0, 1, 9).unsqueeze(1))
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    norms = path.norm(dim=1)
    assert (norms - 28).abs().max() < 2.5  # |N(0, I_784)| ≈ 28 all the way
    assert ((a + b) / 2).norm() < 22  # the straight line's midpoint falls inside


def test_the_fid_vs_nfe_figure_draws_curves_and_single_points(tmp_path):
    curves = [
        {"name": "flow", "samples": 1000, "solver": "euler", "points": [{"steps": s, "nfe": s, "fid": 200 / s} for s in (1, 2, 4, 8)]},
        {"name": "gan", "samples": 1000, "solver": None, "points": [{"steps": 1, "nfe": 1, "fid": 30.0}]},
        {"name": "broken", "samples": 1000, "solver": None, "points": [{"steps": 1, "nfe": 1, "fid": None}]},
    ]
    path = tmp_path / "fid.png"
    path.write_bytes(plots.fid_vs_nfe_figure(curves))
    assert_png(path, min_size=(400, 250))
