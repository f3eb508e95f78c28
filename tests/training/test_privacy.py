"""Personal data stays out of the tracking store: a run on customers with e-mail and phone columns
leaves none of their values, and no customer id, anywhere under the MLflow store (docs/privacy.md)."""

import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from tests.training.small import SMALL

MODEL = "clv-privacy"
QUICK = replace(SMALL, social_ablation=False, bootstrap_resamples=10)


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    """The tiny world whose customers also carry a unique e-mail address and a phone number."""
    out = tmp_path_factory.mktemp("world-with-contacts")
    for path in Path(tiny_world).iterdir():
        if path.is_file():
            shutil.copy(path, out / path.name)
    customers = pd.read_parquet(out / "customers.parquet")
    n = len(customers)
    customers["email"] = [f"person{i:05d}.x@mail{i % 7}.example" for i in range(n)]
    customers["phone"] = [f"+1 555 {i:07d}" for i in range(n)]
    customers.to_parquet(out / "customers.parquet", index=False)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_mlflow_store):
    folder = tmp_path_factory.mktemp("mlflow-privacy")
    uri = new_mlflow_store(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mp.chdir(folder)  # the artifacts land beside the database
        yield folder


@pytest.fixture(scope="module")
def run(world, store):
    from training.train import train_run

    return train_run(world, config=QUICK, model_name=MODEL, experiment="privacy", promote="always",
                     progress=False)


@pytest.fixture(scope="module")
def customers(world):
    return pd.read_parquet(world / "customers.parquet")


def stored_text(folder: Path) -> list[tuple[Path, bytes]]:
    """Every file under the store as bytes, plus the decoded contents of Parquet files and the
    database's rows (compression could split a value in the raw bytes)."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        out.append((path, path.read_bytes()))
        if path.suffix == ".parquet":
            out.append((path, pd.read_parquet(path).astype("str").to_csv().encode()))
    with sqlite3.connect(folder / "mlflow.db") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            rows = db.execute(f'select * from "{table}"').fetchall()
            out.append((folder / f"mlflow.db:{table}", repr(rows).encode()))
    return out


def found(values, contents) -> list[str]:
    hits = []
    for value in values:
        needle = str(value).encode()
        hits += [f"{value} in {path}" for path, data in contents if needle in data]
    return hits


def test_the_run_names_the_excluded_columns_and_uses_the_others(run, store):
    import mlflow

    client = mlflow.MlflowClient()
    tags = client.get_run(run.run_id).data.tags
    params = client.get_run(run.run_id).data.params
    assert tags["attributes_excluded"] == "email, phone"
    assert "email" not in params["features.attributes"] and "region" in params["features.attributes"]


def test_no_email_phone_or_customer_id_reaches_the_tracking_store(run, store, customers):
    contents = stored_text(store)
    assert any(path.name == "value_model.json" for path, _ in contents)  # the walk sees the model
    assert any(path.name == "shap_sample.parquet" for path, _ in contents)
    assert found(customers["email"], contents) == []
    assert found(customers["phone"], contents) == []
    assert found(customers["customer_id"], contents) == []


def test_the_report_inputs_carry_pseudonyms_joined_across_both_files(run):
    from training.report_inputs import load_report_inputs

    predictions, shap_sample = load_report_inputs(run.run_id)
    assert predictions["customer_id"].str.fullmatch(r"customer-\d+").all()
    assert set(shap_sample["customer_id"]) <= set(predictions["customer_id"])
