"""The Dask engine on a real LocalCluster (2 worker processes) gives what the pandas engine gives.

The source is a generated world made awkward on purpose: customers as CSV with an attribute that is
mostly digits (whole-table kind: text), transactions as a directory of Parquet parts, rows the
contract rejects in three tables, and a social profile re-linked from one customer to another.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.build import build_features
from features.config import FeatureConfig
from features.ingest.contract import ContractError
from features.ingest.partition import bucket_of
from features.ingest.source import load_source
from tests.training.small import MARKET_TOPICS, SMALL

pytestmark = pytest.mark.slow

AS_OF = pd.Timestamp("2025-03-01")
CONFIG = FeatureConfig(market_topics=MARKET_TOPICS)
BUCKETS = 5


def awkward_source(world: Path, out: Path) -> Path:
    """A copy of a generated world that exercises what partitioning could get wrong."""
    out.mkdir(parents=True)
    for name in ("social_interactions", "referrals"):
        shutil.copy(world / f"{name}.parquet", out / f"{name}.parquet")

    customers = pd.read_parquet(world / "customers.parquet")
    ids = customers["customer_id"]
    # Digits everywhere but in two rows: the whole column is text, yet most buckets see only digits.
    postcode = pd.Series([f"{i % 97:05d}" for i in range(len(customers))], dtype="str")
    postcode.iloc[[3, 1500]] = ["SW1A", "EC2"]
    customers = customers.assign(
        postcode=postcode, signup_date=customers["signup_date"].astype("str")
    )
    customers.loc[7, "signup_date"] = (
        "not a date"  # rejected; its transactions become unknown-customer rejects
    )
    customers.to_csv(out / "customers.csv", index=False)

    tx = pd.read_parquet(world / "transactions.parquet")
    tx.loc[[10, 20], "customer_id"] = "C-NOBODY"
    tx.loc[30, "amount"] = np.nan
    tx.loc[31, "amount"] = 1e30  # rejected: implausible amount
    tx.loc[32, "timestamp"] = pd.Timestamp("2099-01-01")  # rejected: in the future
    # An exact copy of row 40 in the last file: rejected as a duplicate wherever it is read.
    tx = pd.concat([tx, tx.iloc[[40]]], ignore_index=True)
    (out / "transactions").mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(tx)), 3)):
        tx.iloc[part].to_parquet(out / "transactions" / f"part-{i:05d}.parquet", index=False)

    snaps = pd.read_parquet(world / "social_profiles.parquet")
    owned = snaps.loc[snaps["customer_id"].notna()]
    profile = owned["profile_id"].value_counts().index[0]  # a profile with a long history
    rows = snaps.index[snaps["profile_id"] == profile]
    late = rows[len(rows) // 2 :]
    old_owner = snaps.loc[rows[0], "customer_id"]
    # The new owner lives in another bucket: only routing the whole history to both gets it right.
    bucket = dict(zip(ids, bucket_of(ids, BUCKETS)))
    new_owner = next(c for c in ids if bucket[c] != bucket[old_owner] and c != ids[7])
    snaps.loc[late, "customer_id"] = new_owner  # identity resolution re-linked it half-way
    snaps.loc[late[-1], "customer_id"] = None  # and lost the link on the latest snapshot
    snaps.loc[5, "followers"] = -3.0  # rejected: negative
    # Several row groups, read as several partitions (see small_parquet_partitions): row numbers
    # must run on across them.
    snaps.to_parquet(out / "social_profiles.parquet", index=False, row_group_size=5_000)
    return out


@pytest.fixture(scope="module", autouse=True)
def small_parquet_partitions():
    """Row groups joined into partitions of at most 64 KiB, so a 2,000-customer world's Parquet
    files become several partitions as a large base's do."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("features.dask_engine.read.PARQUET_BLOCK_BYTES", 64 << 10)
        yield


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from features.synthetic.world import generate_world

    world = tmp_path_factory.mktemp("dask-world")
    generate_world(world, n_customers=2000, seed=11, end_date="2025-12-31")
    return awkward_source(world, tmp_path_factory.mktemp("dask-source") / "source")


@pytest.fixture(scope="module")
def dask_client():
    from features.dask_engine.cluster import cluster

    with cluster(None, n_workers=2, threads_per_worker=1) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        yield client


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_mlflow_store):
    """MLFLOW_TRACKING_URI at a fresh SQLite file (workers are told it by the scorer)."""
    folder = tmp_path_factory.mktemp("dask-mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", new_mlflow_store(folder))
        mp.chdir(folder)
        yield folder


def test_a_large_parquet_file_is_read_in_partitions_of_row_groups_numbered_in_file_order(source):
    from features.dask_engine.read import read_raw
    from features.ingest.partition import ROW
    from features.ingest.source import read_table

    frame, rows = read_raw(source / "social_profiles.parquet")
    whole = read_table(source / "social_profiles.parquet")
    assert frame.npartitions > 5
    assert rows == len(whole)
    read = frame.compute()
    assert read[ROW].tolist() == list(range(len(whole)))
    pd.testing.assert_frame_equal(
        read.drop(columns=[ROW]).reset_index(drop=True), whole, check_dtype=False
    )


def test_features_equal_the_pandas_engine(source, dask_client):
    from features.dask_engine.features import build_features_dask

    expected = build_features(load_source(source).tables, AS_OF, CONFIG)
    got = build_features_dask(source, AS_OF, CONFIG, scheduler=dask_client, buckets=BUCKETS)
    assert isinstance(got["attr_postcode"].dtype, pd.CategoricalDtype)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=1e-12)


def test_a_feature_dataset_with_labels_equals_the_pandas_engine(source, dask_client, tmp_path):
    from features.dask_engine.features import write_features_dask
    from features.labels import label_values

    cutoff = pd.Timestamp("2024-06-01")
    tables = load_source(source).tables
    expected = build_features(tables, cutoff, CONFIG)
    expected = expected.assign(label=label_values(tables, cutoff, CONFIG))
    out = tmp_path / "features.parquet"
    summary = write_features_dask(
        source, cutoff, CONFIG, out, scheduler=dask_client, buckets=BUCKETS, labels=True
    )
    got = pd.read_parquet(out).sort_index()
    assert summary["rows"] == len(expected) and len(list(out.glob("part-*.parquet"))) == BUCKETS
    assert (tmp_path / "features.manifest.json").exists()
    assert sorted(p.name for p in (tmp_path / "rejects").iterdir()) == [
        "customers.csv",
        "social_profiles.csv",
        "transactions.csv",
    ]
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=1e-12)


def test_rejects_and_counts_equal_the_pandas_loader(source, dask_client):
    from features.dask_engine.source import load_source_dask

    expected = load_source(source)
    got = load_source_dask(source, dask_client, buckets=BUCKETS, with_fingerprint=False)
    pd.testing.assert_frame_equal(got.summary, expected.summary)
    assert set(got.rejects) == {"customers", "transactions", "social_profiles"}
    reasons = " | ".join(got.rejects["transactions"]["reason"])
    for reason in ("duplicate row", "implausible amount", "timestamp in the future", "unknown customer"):
        assert reason in reasons, reason
    for table, frame in expected.rejects.items():
        pd.testing.assert_frame_equal(got.rejects[table], frame.reset_index(drop=True))
    assert got.n_customers == len(expected.tables.customers)
    assert got.notes == expected.notes and expected.notes[0].startswith("largest amounts kept: ")


def test_a_duplicated_customer_id_stops_the_run_as_in_the_pandas_loader(
    source, dask_client, tmp_path
):
    from features.dask_engine.source import load_source_dask

    copy = tmp_path / "dup"
    shutil.copytree(source, copy)
    customers = pd.read_csv(copy / "customers.csv", dtype="str")
    customers.loc[1900, "customer_id"] = customers.loc[12, "customer_id"]  # far apart in the file
    customers.to_csv(copy / "customers.csv", index=False)
    with pytest.raises(ContractError, match="duplicated") as pandas_error:
        load_source(copy)
    with pytest.raises(ContractError, match="duplicated") as dask_error:
        load_source_dask(copy, dask_client, buckets=BUCKETS, with_fingerprint=False)
    assert str(dask_error.value) == str(pandas_error.value)  # same rows named, in source numbering


def test_an_export_written_as_text_is_read_and_refused_as_the_pandas_loader_does(source, dask_client, tmp_path):
    """'$1,380.19' amounts parse the same in every bucket; a style mixed across buckets and ids written
    differently per table stop the run with the same message."""
    from features.dask_engine.source import load_source_dask

    copy = tmp_path / "text"
    shutil.copytree(source, copy)
    tx = pd.concat([pd.read_parquet(p) for p in sorted((copy / "transactions").glob("*.parquet"))],
                   ignore_index=True)
    shutil.rmtree(copy / "transactions")
    tx["amount"] = [f"${a:,.2f}" if pd.notna(a) else "" for a in tx["amount"]]
    tx.to_csv(copy / "transactions.csv", index=False)
    expected = load_source(copy)
    got = load_source_dask(copy, dask_client, buckets=BUCKETS, with_fingerprint=False)
    pd.testing.assert_frame_equal(got.summary, expected.summary)
    assert expected.tables.transactions["amount"].max() > 1000

    mixed = tx.copy()
    mixed.loc[mixed.index[-1], "amount"] = "1.380,19"
    mixed.to_csv(copy / "transactions.csv", index=False)
    with pytest.raises(ContractError, match="transactions: column 'amount' mixes number styles"):
        load_source(copy)
    with pytest.raises(ContractError, match="transactions: column 'amount' mixes number styles"):
        load_source_dask(copy, dask_client, buckets=BUCKETS, with_fingerprint=False)

    customers = pd.read_csv(copy / "customers.csv", dtype="str")
    padded = {old: f"{i + 1:07d}" for i, old in enumerate(customers["customer_id"])}
    customers["customer_id"] = customers["customer_id"].map(padded)  # '0000001' ...
    customers.to_csv(copy / "customers.csv", index=False)
    tx["customer_id"] = tx["customer_id"].map(lambda c: padded.get(c, c).lstrip("0"))  # ... but '1' here
    tx.to_csv(copy / "transactions.csv", index=False)
    hint = "of them match a customer id once leading zeros, a trailing .0 and blanks are removed"
    with pytest.raises(ContractError, match=hint):
        load_source(copy)
    with pytest.raises(ContractError, match=hint):
        load_source_dask(copy, dask_client, buckets=BUCKETS, with_fingerprint=False)


def test_too_many_rejects_in_the_whole_table_stop_the_run(source, dask_client, tmp_path):
    from features.dask_engine.source import load_source_dask

    copy = tmp_path / "bad"
    shutil.copytree(source, copy)
    snaps = pd.read_parquet(copy / "social_profiles.parquet")
    snaps.loc[
        snaps.index[: len(snaps) // 50], "posts"
    ] = -1.0  # 2% of rows, spread over every bucket
    snaps.to_parquet(copy / "social_profiles.parquet", index=False)
    with pytest.raises(ContractError, match="social_profiles: .* more than the reject threshold"):
        load_source_dask(copy, dask_client, buckets=BUCKETS, with_fingerprint=False)


@pytest.fixture(scope="module")
def pandas_model(source, store):
    """A model trained and registered by the single-machine pipeline."""
    from training.train import train_run

    config = replace(SMALL, social_ablation=False)
    return train_run(
        source,
        model_name="clv-pandas",
        experiment="dask",
        promote="always",
        config=config,
        progress=False,
    )


def test_scores_equal_the_pandas_scorer_and_every_customer_is_accounted_for(
    source, dask_client, pandas_model, store
):
    from serving.scoring.chunked import score_customers
    from serving.scoring.dask_engine import score_customers_dask
    from serving.scoring.publish import verify_scores

    uri = "models:/clv-pandas@champion"
    single = score_customers(
        source, out=store / "single.parquet", model_uri=uri, chunk_size=700, progress=False
    )
    summary = score_customers_dask(
        source, out=store / "dask.parquet", model_uri=uri, chunk_size=700, scheduler=dask_client
    )

    dataset = store / "dask.parquet"
    assert dataset.is_dir() and len(list(dataset.glob("part-*.parquet"))) == summary["chunks"] >= 2
    assert not list(store.glob(".dask.parquet.*"))  # the temporary directory was renamed away
    assert not (store / ".clv-work").exists()  # and the run's work directory removed
    assert verify_scores(dataset)["output_sha256"] == summary["output_sha256"]  # the folder and its manifest
    expected = pd.read_parquet(store / "single.parquet").set_index("customer_id").sort_index()
    got = pd.read_parquet(dataset).set_index("customer_id").sort_index()
    pd.testing.assert_frame_equal(got.drop(columns="scored_at"), expected.drop(columns="scored_at"))

    manifest = json.loads((store / "dask.manifest.json").read_text())
    assert manifest["scored"] == len(got)
    assert (
        manifest["scored"] + manifest["not_yet_customers"] + manifest["rejected_customers"]
        == manifest["customers_in"]
        == 2000
    )
    for key in (
        "customers_in",
        "scored",
        "rejected_customers",
        "not_yet_customers",
        "tables",
        "tiers",
        "as_of",
        "feature_manifest_hash",
        "unseen_category_levels",
    ):
        assert manifest[key] == single[key], key
    for key in ("per_customer", "for", "rows"):
        assert manifest["reasons"][key] == single["reasons"][key], key
    for table in ("customers", "transactions", "social_profiles"):
        pd.testing.assert_frame_equal(
            pd.read_csv(store / "dask.rejects" / f"{table}.csv", dtype="str"),
            pd.read_csv(store / "single.rejects" / f"{table}.csv", dtype="str"),
        )


def test_training_on_dask_registers_a_model_like_the_single_machine_one(
    source, dask_client, pandas_model, store
):
    import mlflow

    from serving.scoring.model import load_scoring_model
    from training.dask_engine import DaskEngine
    from training.model import CustomerValueModel
    from training.train import train_run

    config = replace(SMALL, social_ablation=False)
    summary = train_run(
        source,
        as_of=pd.Timestamp("2026-01-01"),  # the pandas run's default (the day after the last transaction)
        model_name="clv-dask",
        experiment="dask",
        promote="always",
        config=config,
        progress=False,
        engine=DaskEngine(scheduler=dask_client),
    )
    client = mlflow.MlflowClient()
    dask_run, pandas_run = (
        client.get_run(summary.run_id).data,
        client.get_run(pandas_model.run_id).data,
    )
    assert set(dask_run.metrics) == set(pandas_run.metrics)
    assert dask_run.tags["feature_manifest_hash"] == pandas_run.tags["feature_manifest_hash"]
    assert dask_run.tags["windows"] == pandas_run.tags["windows"]
    assert summary.rows == pandas_model.rows
    assert (
        dask_run.metrics["test_norm_gini"]
        > dask_run.metrics["baseline_last_h_test_norm_gini"] - 0.05
    )

    model = load_scoring_model("models:/clv-dask@champion")
    assert isinstance(model.python_model, CustomerValueModel)
    assert model.python_model.interval_table["calibration_rows"] == summary.rows["validation"] + summary.rows["test"]
    artifacts = sorted(a.path for a in client.list_artifacts(summary.run_id))
    assert artifacts == sorted(a.path for a in client.list_artifacts(pandas_model.run_id))
