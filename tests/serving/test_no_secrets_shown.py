"""No password reaches a terminal, an output file or the tracking store, whatever form the URL takes.

A real PostgreSQL server (tests/conftest.py) holds a world; every command a nightly job or an analyst
runs against it goes through ``clv`` in a process of its own (tests/clv_process.py), and its output,
every file it wrote and the MLflow store are searched for the password, raw and URL-quoted.
"""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest

from features.ingest.masking import mask_url
from features.synthetic.world import generate_world
from tests.clv_process import run_clv

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("shown", "masked"), [
    ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql+psycopg2://u:s3cret@h/db", "postgresql+psycopg2://u:***@h/db"),
    ("postgres://u:s3cret@h/db?sslpassword=k3y&sslmode=require", "postgres://u:***@h/db?sslpassword=***&sslmode=require"),
    ("postgresql://u@h/db?password=s3cret", "postgresql://u@h/db?password=***"),
    ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),  # an unencoded @ in the password
    ("host=h user=u password=s3cret dbname=db", "host=h user=u password=*** dbname=db"),
    ("host=h password='a b\\' c' dbname=db", "host=h password=*** dbname=db"),
    ("http://u:s3cret@mlflow:5000/api", "http://u:***@mlflow:5000/api"),
    ("cannot connect to postgresql://u:s3cret@h/db: Name or service not known",
     "cannot connect to postgresql://u:***@h/db: Name or service not known"),
    ("/data/exports/2026-12", "/data/exports/2026-12"),
    ("http://mlflow:5000", "http://mlflow:5000"),
    ("see https://user@example.com/a@b", "see https://user@example.com/a@b"),
], ids=lambda v: v[:28])
def test_every_url_and_dsn_form_loses_its_secret_and_nothing_else(shown, masked):
    assert mask_url(shown) == masked


def test_no_command_shows_or_stores_the_database_password(postgres_server, postgres_url, tmp_path,
                                                          new_mlflow_store):
    world = tmp_path / "world"
    generate_world(world, n_customers=300, seed=5)
    password = postgres_server.password
    secrets = [password, quote(password, safe="")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": new_mlflow_store(tmp_path), "COLUMNS": "200"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    wrong_db = postgres_url.rsplit("/", 1)[0] + "/no_such_db"
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    dsn = f"host=127.0.0.1 port={postgres_server.port} user=clv password='{escaped}' dbname=crm"
    commands = [
        (["load", "--data", str(world), "--to", postgres_url], 0),
        (["validate", "--data", postgres_url, "--rejects", str(tmp_path / "rejects")], 0),
        (["train", "--data", postgres_url, "--n-windows", "3"], 0),
        (["score", "--data", postgres_url, "--out", str(tmp_path / "scores.parquet")], 0),
        (["validate", "--data", wrong_db], 2),
        (["validate", "--data", wrong_db.replace("postgresql://", "postgresql+psycopg2://")], 2),
        (["validate", "--data", dsn], 2),  # a libpq DSN where a URL or folder was expected
        (["score", "--data", wrong_db, "--out", str(tmp_path / "never.parquet")], 2),
    ]
    shown = []
    for args, expected in commands:
        done = run_clv(args, env=env, cwd=tmp_path)
        assert done.returncode == expected, (args[0], done.stdout[-2000:], done.stderr[-2000:])
        shown.append(done.stdout + done.stderr)
    assert "***" in " ".join(shown)  # the URLs are shown, masked
    for text in shown:
        assert not any(s in text for s in secrets), text
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(world)]
    assert any(p.name == "scores.manifest.json" for p in written) and any(p.name == "mlflow.db" for p in written)
    for path in written:  # outputs, manifests, rejects, the MLflow store and its artifacts
        content = path.read_bytes()
        assert not any(s.encode() in content for s in secrets), path
