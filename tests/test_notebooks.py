"""The notebooks are living documents: committed without outputs, executed headlessly on a small world."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_three_numbered_notebooks():
    assert [p.name for p in NOTEBOOKS] == [
        "01-explore-data.ipynb", "02-train-and-compare.ipynb", "03-importance-review.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, path.name


@pytest.mark.slow
def test_notebooks_run_in_order_on_a_small_world(tmp_path, monkeypatch, new_mlflow_store):
    from features.synthetic.world import generate_world

    world = tmp_path / "world"
    generate_world(world, n_customers=3000, seed=11)
    monkeypatch.setenv("CLV_DATA", str(world))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_mlflow_store(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for path in NOTEBOOKS:  # 02 registers the champion that 03 reviews
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: {errors}"
