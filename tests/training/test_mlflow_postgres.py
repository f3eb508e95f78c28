"""The team set-up: a world in PostgreSQL, trained and tracked on a PostgreSQL-backed `mlflow server`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from features.config import FeatureConfig
from features.ingest.database_load import load_source_to_database
from features.synthetic.world import generate_world
from training.config import ModelParams, TrainConfig

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
STARTUP_S = 120  # a cold server creates its tables (alembic) before answering /health

# Small and quick: few rounds and resamples, one thread (the machine is shared).
SMALL = TrainConfig(
    features=FeatureConfig(market_topics=("outdoor", "hiking")),
    model=ModelParams(max_rounds=30, num_leaves=15, min_child_samples=20, num_threads=1),
    n_windows=3,
    bootstrap_resamples=40,
    shap_sample=300,
    social_ablation=False,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(postgres_server, tmp_path_factory):
    """``mlflow server`` on a free loopback port, its backend store a PostgreSQL database."""
    base = tmp_path_factory.mktemp("mlflow")
    store = postgres_server.create_database("mlflow").replace("postgresql://", "postgresql+psycopg://")
    port = free_port()
    # One worker and no background job runner: the team server can use more, a test cannot.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    url = f"http://127.0.0.1:{port}"
    with open(base / "server.log", "w") as log:
        proc = subprocess.Popen(
            [MLFLOW, "server", "--backend-store-uri", store,
             "--artifacts-destination", str(base / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + STARTUP_S
            while not healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start:\n{(base / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group: uvicorn and its worker
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_a_world_in_postgres_trains_and_is_tracked_on_a_postgres_backed_mlflow_server(
        tmp_path, monkeypatch, postgres_server, mlflow_server):
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from training.train import train

    generate_world(tmp_path / "world", n_customers=600, seed=11, end_date="2025-12-31")
    data = postgres_server.create_database("crm_tracked")
    load_source_to_database(tmp_path / "world", data)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)

    run_id = train(data, experiment="postgres-team", model_name="value-pg", config=SMALL, progress=False)

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "test_norm_gini" in run.data.metrics
    champion = client.get_model_version_by_alias("value-pg", "champion")
    assert champion.run_id == run_id
    # The run lives in the PostgreSQL store, not in a local file or SQLite store.
    with psycopg.connect(postgres_server.url("mlflow")) as conn:
        stored = conn.execute("SELECT run_uuid FROM runs").fetchall()
    assert (run_id,) in stored

    # The database password appears nowhere: params, tags, artifacts (the input fingerprint included).
    secrets = [postgres_server.password, quote(postgres_server.password, safe="")]
    logged = " ".join([*run.data.params.values(), *run.data.tags.values()])
    assert not any(s in logged for s in secrets)
    local = Path(download_artifacts(run_id=run_id, dst_path=str(tmp_path / "artifacts"),
                                    tracking_uri=mlflow_server))
    for path in (p for p in local.rglob("*") if p.is_file()):
        content = path.read_bytes()
        assert not any(s.encode() in content for s in secrets), path
