"""`mlflow run . -e main --env-manager local` runs the whole job offline, through the same clv commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


def test_every_entry_point_calls_the_clv_command_line():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    entry_points = project["entry_points"]
    assert set(entry_points) == {"main", "generate", "features", "train", "score", "report"}
    for name, entry in entry_points.items():
        assert entry["command"].lstrip().startswith("clv "), name
        for param in entry.get("parameters", {}).values():
            assert param["type"] in {"string", "float", "path", "uri"}


@pytest.mark.slow
def test_mlflow_run_main_completes_offline(tmp_path, new_mlflow_store):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": new_mlflow_store(tmp_path)}
    env.pop("MLFLOW_RUN_ID", None)
    # --storage-dir: else `mlflow run` makes a (here empty) download folder in the system's temp dir
    # that nobody removes.
    proc = subprocess.run(
        [str(BIN / "mlflow"), "run", str(ROOT), "-e", "main", "--env-manager", "local",
         "--storage-dir", str(tmp_path / "mlflow-storage"),
         "-P", f"workdir={tmp_path / 'job'}", "-P", "customers=2000", "-P", "seed=3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    predictions = pd.read_parquet(tmp_path / "job" / "predictions.parquet")
    assert len(predictions) == 2000 and predictions["customer_id"].is_unique
    assert (tmp_path / "job" / "report" / "report.html").stat().st_size > 10_000
