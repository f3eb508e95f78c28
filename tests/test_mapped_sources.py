"""An export that names its files and columns its own way, read through a mapping by every engine.

What is specified here: the chunked scorer, the Dask loader, features and scorer, and both training
engines read the export as they read its contract-named copy (the scorer test world of
tests/serving/scoring/test_chunked.py), from Parquet, CSV and a folder of Parquet parts alike: same
scores, counts, rejects and features; what they record names the files actually read; a mapping that
does not fit the files writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.build import build_features
from features.ingest.contract import ContractError
from features.ingest.source import load_source
from serving.cli import app
from serving.scoring.chunked import score_customers
from tests.serving.scoring.test_chunked import (  # noqa: F401 (world, registry and scored are fixtures)
    AS_OF,
    CONFIG,
    registry,
    scored,
    without_scored_at,
    world,
)

MAPPING = {
    "tables": {"customers": "clients", "transactions": "orders", "social_profiles": "accounts",
               "social_interactions": "activity", "referrals": "invites"},
    "columns": {
        "customers": {"customer_id": "client_no", "signup_date": "joined", "postcode": "zip"},
        "transactions": {"customer_id": "client_no", "timestamp": "placed_at", "amount": "total"},
        "social_profiles": {"profile_id": "handle", "customer_id": "client_no"},
        "social_interactions": {"source_profile_id": "from_handle", "target_profile_id": "to_handle"},
        "referrals": {"referrer_id": "sponsor", "referred_id": "newcomer"},
    },
}
ORDER_PARTS = ["orders/part-0.parquet", "orders/part-1.parquet", "orders/part-2.parquet"]
BUCKETS = 3


def renamed(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    return frame.rename(columns=MAPPING["columns"][table])


def as_renamed_export(source: Path, target: Path) -> Path:
    """A contract-named source as an export under its own names: customers and interactions in Parquet, profiles and
    referrals in CSV, transactions as a folder of three Parquet parts."""
    target.mkdir(parents=True)
    stems = MAPPING["tables"]
    for table in ("customers", "social_interactions"):
        renamed(pd.read_parquet(source / f"{table}.parquet"), table).to_parquet(
            target / f"{stems[table]}.parquet", index=False)
    for table in ("social_profiles", "referrals"):
        renamed(pd.read_parquet(source / f"{table}.parquet"), table).to_csv(target / f"{stems[table]}.csv", index=False)
    transactions = renamed(pd.read_parquet(source / "transactions.parquet"), "transactions")
    (target / "orders").mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(transactions)), 3)):
        transactions.iloc[rows].to_parquet(target / "orders" / f"part-{i}.parquet", index=False)
    return target


@pytest.fixture(scope="module")
def export(world, tmp_path_factory) -> Path:  # noqa: F811 (the fixture imported above)
    return as_renamed_export(world, tmp_path_factory.mktemp("export") / "export")


@pytest.fixture(scope="module")
def dask_client():
    from features.dask_engine.cluster import cluster

    with cluster(None, n_workers=2, threads_per_worker=1) as client:
        yield client


# ---------------------------------------------------------------------------------------------
# The chunked scorer


def test_an_export_under_its_own_names_scores_like_the_contract_named_source(
        export, registry, scored, tmp_path):  # noqa: F811
    expected_summary, expected = scored
    out = tmp_path / "scores.parquet"
    summary = score_customers(export, out=out, chunk_size=50, progress=False, mapping=MAPPING)
    assert summary["chunks"] == expected_summary["chunks"]
    pd.testing.assert_frame_equal(without_scored_at(pd.read_parquet(out)), without_scored_at(expected))
    assert summary["tables"] == expected_summary["tables"]
    assert summary["inputs"]["transactions"]["files"] == ORDER_PARTS
    assert summary["inputs"]["social_profiles"]["files"] == ["accounts.csv"]
    assert summary["inputs"]["customers"]["columns"] == MAPPING["columns"]["customers"]


def test_clv_score_reads_the_mapping_file(export, registry, scored, tmp_path):  # noqa: F811
    _, expected = scored
    mapping_file = tmp_path / "mapping.toml"
    mapping_file.write_text(
        "[tables]\n" + "".join(f'{t} = "{s}"\n' for t, s in MAPPING["tables"].items())
        + "".join(f"\n[columns.{t}]\n" + "".join(f'{c} = "{s}"\n' for c, s in cols.items())
                  for t, cols in MAPPING["columns"].items()))
    out = tmp_path / "scores.parquet"
    result = CliRunner().invoke(app, ["score", "--data", str(export), "--out", str(out), "--chunk-size", "100",
                                      "--mapping", str(mapping_file)])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(without_scored_at(pd.read_parquet(out)), without_scored_at(expected))


def test_a_mapping_that_does_not_fit_the_files_writes_nothing(export, registry, tmp_path):  # noqa: F811
    wrong = {**MAPPING, "columns": {**MAPPING["columns"], "transactions": {"amount": "amount_eur"}}}
    out = tmp_path / "scores.parquet"
    with pytest.raises(ContractError, match=r"^transactions: mapped column 'amount' -> 'amount_eur' not found "
                                            r"in orders \(columns present: client_no, placed_at, total"):
        score_customers(export, out=out, chunk_size=50, progress=False, mapping=wrong)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Dask: loading, features and scores


@pytest.mark.slow
def test_dask_loads_the_export_as_the_pandas_loader_loads_the_contract_named_source(
        world, export, dask_client):  # noqa: F811
    from features.dask_engine.source import load_source_dask

    expected = load_source(world)
    got = load_source_dask(export, dask_client, buckets=BUCKETS, mapping=MAPPING)
    pd.testing.assert_frame_equal(got.summary, expected.summary)
    assert set(got.rejects) == set(expected.rejects)
    for table, frame in expected.rejects.items():
        pd.testing.assert_frame_equal(got.rejects[table], frame.reset_index(drop=True))
    assert got.fingerprint["transactions"]["files"] == ORDER_PARTS
    assert got.fingerprint["referrals"]["files"] == ["invites.csv"]


@pytest.mark.slow
def test_dask_features_of_the_export_equal_the_pandas_engine(world, export, dask_client):  # noqa: F811
    from features.dask_engine.features import build_features_dask

    expected = build_features(load_source(world).tables, AS_OF, CONFIG)
    got = build_features_dask(export, AS_OF, CONFIG, scheduler=dask_client, buckets=BUCKETS, mapping=MAPPING)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_dask_scores_of_the_export_equal_the_chunked_scores(export, registry, scored, dask_client,  # noqa: F811
                                                           tmp_path):
    from serving.scoring.dask_engine import score_customers_dask

    expected_summary, expected = scored
    summary = score_customers_dask(export, out=tmp_path / "scores.parquet", chunk_size=50, scheduler=dask_client,
                                   mapping=MAPPING)
    got = pd.read_parquet(tmp_path / "scores.parquet").set_index("customer_id").sort_index()
    pd.testing.assert_frame_equal(got.drop(columns="scored_at"),
                                  expected.set_index("customer_id").sort_index().drop(columns="scored_at"))
    assert summary["tables"] == expected_summary["tables"]
    assert summary["inputs"]["transactions"]["files"] == ORDER_PARTS


# ---------------------------------------------------------------------------------------------
# Training: what each engine loads


@pytest.mark.slow
def test_both_training_engines_load_the_export_through_the_mapping(world, export, dask_client):  # noqa: F811
    from tests.training.small import SMALL
    from training.dask_engine import DaskEngine
    from training.pandas_engine import PandasEngine
    from training.progress import Steps

    def loaded(engine, data, mapping=None):
        """(latest transaction, rejected rows, files read per table) as the engine loads the source."""
        with engine.load(data, SMALL, until=None, steps=Steps(enabled=False), mapping=mapping) as run:
            files = {table: entry["files"] for table, entry in run.fingerprint.items() if table != "source"}
            return run.latest_transaction, run.rejected, files

    expected_latest, expected_rejected, _ = loaded(PandasEngine(), world)
    for engine in (PandasEngine(), DaskEngine(scheduler=dask_client)):
        latest, rejected, files = loaded(engine, export, MAPPING)
        assert (latest, rejected) == (expected_latest, expected_rejected), engine.name
        assert files["transactions"] == ORDER_PARTS and files["customers"] == ["clients.parquet"], engine.name
