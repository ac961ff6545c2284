"""notebooks/lab.ipynb runs top to bottom (with a 1-epoch budget) and shows its figures, so the
lab notebook cannot rot while the library changes under it."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "lab.ipynb"
KERNEL = "genlab-test-python"


@pytest.fixture
def kernel_for_this_python(tmp_path, monkeypatch) -> str:
    """A kernelspec that runs this very interpreter (the venv with genlab), found first on
    JUPYTER_PATH, so no globally installed 'python3' kernel is picked by mistake."""
    pytest.importorskip("ipykernel")
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "genlab tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def test_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells and all(not c.outputs and c.execution_count is None for c in code_cells)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch, kernel_for_this_python):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    out = tmp_path / "out"
    monkeypatch.setenv("GENLAB_NOTEBOOK_EPOCHS", "1")
    monkeypatch.setenv("GENLAB_NOTEBOOK_OUT", str(out))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel_for_this_python, timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 12, f"only {len(images)} figures shown inline"
    text = "".join(o.get("text", "") for o in outputs)
    assert "1 epochs (GAN 3)" in text  # the budget came from the environment
    assert "Traceback" not in text
    for model in ("ae", "vae", "gan", "flow"):
        assert (out / model / "model.safetensors").is_file()
        assert len(list((out / model / "figures").glob("*.png"))) >= 3
    assert (out / "vae-beta4" / "model.safetensors").is_file()
    assert (out / "report.html").is_file()
