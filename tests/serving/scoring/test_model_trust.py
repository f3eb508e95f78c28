"""Models load only from the MLflow store: a model folder elsewhere is refused before its pickle runs.

The folder built here is an MLflow pyfunc whose ``python_model.pkl`` writes a marker file when it is
unpickled, as a hostile model would run its own code. ``clv score --model FOLDER`` must refuse it in
one line with exit code 2, and the marker must never appear; only ``--trust-model-from`` loads it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.cli import app
from serving.scoring.chunked import score_customers
from tests.clv_process import run_clv
from training.model_source import UntrustedModelError

REPOSITORY = Path(__file__).resolve().parents[3]


class _WritesMarker:
    """Unpickling this runs ``exec``: it writes ``marker``. Stands for any code a pickle can carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('the pickle ran')",)


@pytest.fixture
def hostile_model(tmp_path) -> tuple[Path, Path]:
    """(model folder, marker path): an MLflow pyfunc folder whose pickle writes the marker when loaded."""
    import mlflow.pyfunc

    folder = tmp_path / "downloads" / "model"
    folder.parent.mkdir()
    marker = tmp_path / "marker.txt"
    # Any PythonModel makes save_model write the folder; its pickle is then replaced.
    mlflow.pyfunc.save_model(str(folder), python_model=mlflow.pyfunc.PythonModel(), pip_requirements=[])
    (folder / "python_model.pkl").write_bytes(pickle.dumps(_WritesMarker(marker)))
    assert (folder / "MLmodel").exists()
    return folder, marker


@pytest.fixture
def store(tmp_path, monkeypatch, new_mlflow_store) -> str:
    """MLFLOW_TRACKING_URI -> an empty SQLite store under tmp_path (nothing is written elsewhere)."""
    uri = new_mlflow_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    return uri


def test_clv_score_refuses_a_model_folder_in_one_line_and_its_pickle_never_runs(hostile_model, tmp_path, store):
    folder, marker = hostile_model
    proc = run_clv(["score", "--data", str(tmp_path / "world"), "--out", str(tmp_path / "scores.parquet"),
                    "--model", str(folder)], env={**os.environ, "COLUMNS": "200"}, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert str(folder) in lines[0] and "--trust-model-from" in lines[0]
    assert not marker.exists()
    assert not (tmp_path / "scores.parquet").exists()


@pytest.mark.parametrize("scheme", ["file", "https", "s3"])
def test_a_model_url_outside_the_store_is_refused_before_anything_is_fetched(scheme, hostile_model, tmp_path, store):
    folder, marker = hostile_model
    uri = folder.as_uri() if scheme == "file" else f"{scheme}://models.example.com/clv/model"
    with pytest.raises(UntrustedModelError, match="models load only from the MLflow store"):
        score_customers(tmp_path / "world", out=tmp_path / "scores.parquet", model_uri=uri, progress=False)
    assert not marker.exists()


def test_a_folder_outside_the_trusted_one_is_refused_too(hostile_model, tmp_path, store):
    folder, marker = hostile_model
    (tmp_path / "trusted").mkdir()
    result = CliRunner().invoke(app, ["score", "--data", str(tmp_path / "world"), "--out",
                                      str(tmp_path / "scores.parquet"), "--model", str(folder),
                                      "--trust-model-from", str(tmp_path / "trusted")])
    assert result.exit_code == 2
    assert "not under the trusted folder" in result.output
    assert not marker.exists()


def test_trusting_the_folder_loads_it_with_a_warning(hostile_model, tmp_path, store):
    """The other side: the marker is live, and --trust-model-from is what lets the pickle run."""
    folder, marker = hostile_model
    result = CliRunner().invoke(app, ["score", "--data", str(tmp_path / "world"), "--out",
                                      str(tmp_path / "scores.parquet"), "--model", str(folder),
                                      "--trust-model-from", str(folder.parent)])
    assert "outside the MLflow store (--trust-model-from)" in result.output
    assert marker.read_text() == "the pickle ran"
    assert result.exit_code == 2  # the marker's pickle is no model: refused once loaded
    assert not (tmp_path / "scores.parquet").exists()


def test_a_registered_version_pointing_at_a_folder_outside_the_store_is_refused(hostile_model, tmp_path, store):
    """A version is a pointer (create_model_version(source=PATH)): models:/ alone does not make it safe."""
    import mlflow

    folder, marker = hostile_model
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    client.create_registered_model("customer-value")
    version = client.create_model_version("customer-value", source=str(folder))
    client.set_registered_model_alias("customer-value", "champion", version.version)
    result = CliRunner().invoke(app, ["score", "--data", str(tmp_path / "world"), "--out",
                                      str(tmp_path / "scores.parquet")])
    assert result.exit_code == 2
    assert f"keeps its files at {folder}" in result.output.replace("\n", "")
    assert not marker.exists()
