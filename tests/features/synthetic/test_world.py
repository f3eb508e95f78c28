"""Specification of the world's files (features/synthetic/world.py and files.py): determinism,
the data contract, world.json, files that appear only whole, and generate_world's arguments."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.synthetic import world as synthetic
from features.synthetic.world import WorldKnobs, generate_world
from tests.features.synthetic.conftest import ALL_FILES, END, MARKET, TRUTH_START

STR, TS, F64 = "str", "datetime64[ns]", "float64"
CONTRACT_DTYPES = {
    "customers": {
        "customer_id": STR,
        "signup_date": TS,
        "region": "category",
        "acquisition_channel": "category",
        "age": F64,
    },
    "transactions": {
        "customer_id": STR,
        "timestamp": TS,
        "amount": F64,
        "order_id": STR,
        "quantity": F64,
        "category": STR,
        "channel": STR,
        "margin": F64,
    },
    "social_profiles": {
        "profile_id": STR,
        "customer_id": STR,
        "network": STR,
        "snapshot_date": TS,
        "followers": F64,
        "following": F64,
        "posts": F64,
        "engagements": F64,
        "influence_score": F64,
    },
    "social_interactions": {
        "source_profile_id": STR,
        "target_profile_id": STR,
        "timestamp": TS,
        "kind": STR,
        "topic": STR,
    },
    "referrals": {"referrer_id": STR, "referred_id": STR, "timestamp": TS},
}


# --- files, determinism, contract -----------------------------------------------------------------


def file_digests(path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def test_same_seed_writes_byte_identical_files_and_another_seed_does_not(tmp_path):
    generate_world(tmp_path / "a", n_customers=2_000, seed=7)
    generate_world(tmp_path / "b", n_customers=2_000, seed=7)
    generate_world(tmp_path / "c", n_customers=2_000, seed=8)
    a, b, c = (file_digests(tmp_path / x) for x in "abc")
    assert sorted(a) == sorted(f"{n}.parquet" for n in ALL_FILES) + ["world.json"]
    assert a == b
    assert all(a[name] != c[name] for name in a if name.endswith(".parquet"))


def test_multi_chunk_worlds_are_deterministic_with_one_row_group_per_chunk(tmp_path, monkeypatch):
    # Smaller chunks exercise the chunked path (RNG stream per chunk, background encoding order).
    monkeypatch.setattr(synthetic, "CHUNK_SIZE", 700)
    monkeypatch.setattr(synthetic, "PROFILE_CHUNK_SIZE", 900)
    generate_world(tmp_path / "a", n_customers=2_000, seed=5)
    generate_world(tmp_path / "b", n_customers=2_000, seed=5)
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")
    assert pq.ParquetFile(tmp_path / "a" / "transactions.parquet").num_row_groups == 3
    assert pq.ParquetFile(tmp_path / "a" / "social_interactions.parquet").num_row_groups > 1
    customers = pd.read_parquet(tmp_path / "a" / "customers.parquet")
    assert customers.customer_id.is_unique and len(customers) == 2_000
    orders = pd.read_parquet(tmp_path / "a" / "transactions.parquet").query("amount > 0")
    assert orders.order_id.is_unique


def test_every_contract_column_is_present_with_the_contract_dtype(world):
    for table, dtypes in CONTRACT_DTYPES.items():
        frame = world[table]
        assert list(frame.columns) == list(dtypes), table
        assert {c: str(frame[c].dtype) for c in frame} == dtypes, table


def test_ids_are_zero_padded_and_keys_resolve(world):
    customers, tx = world["customers"], world["transactions"]
    assert customers.customer_id.iloc[0] == "C0000001" and customers.customer_id.is_unique
    assert world["social_profiles"].profile_id.str.fullmatch(r"P\d{7}").all()
    assert tx.customer_id.isin(customers.customer_id).all()
    ref = world["referrals"]
    assert ref.referrer_id.isin(customers.customer_id).all() and ref.referred_id.is_unique
    sp, si = world["social_profiles"], world["social_interactions"]
    assert sp.customer_id.dropna().isin(customers.customer_id).all()
    profiles = (
        sp.profile_id.unique()
    )  # isin on pyarrow strings is slow with a large, repetitive lookup set
    assert si.source_profile_id.isin(profiles).all() and si.target_profile_id.isin(profiles).all()
    assert (si.source_profile_id != si.target_profile_id).all()


def test_numbers_are_finite_and_social_counts_non_negative(world):
    assert np.isfinite(world["transactions"].amount).all()
    sp = world["social_profiles"]
    for col in ("followers", "following", "posts", "engagements"):
        assert (sp[col] >= 0).all(), col
    assert sp.influence_score.between(0, 100).all()


def test_nothing_in_the_contract_tables_is_dated_after_end_date(world):
    dated = {
        "customers": "signup_date",
        "transactions": "timestamp",
        "social_profiles": "snapshot_date",
        "social_interactions": "timestamp",
        "referrals": "timestamp",
    }
    for table, column in dated.items():
        assert world[table][column].max() < TRUTH_START, (
            table
        )  # on or before end_date (any time that day)
    assert world["social_profiles"].snapshot_date.max() == END
    assert world["customers"].signup_date.min() >= pd.Timestamp("2021-01-01")


def test_world_json_and_summary_describe_the_files(world_dir, world):
    out, summary = world_dir
    meta = json.loads((out / "world.json").read_text())
    assert meta["seed"] == 42 and meta["n_customers"] == 20_000 and meta["end_date"] == "2025-12-31"
    assert meta["market_topics"] == list(MARKET) and meta["knobs"]["influence_on_purchases"] == 0.2
    assert meta["truth_window"] == ["2026-01-01", "2027-01-01"]
    assert meta["rows"] == summary["rows"] == {name: len(world[name]) for name in ALL_FILES}
    assert summary["out_dir"] == str(out) and summary["seconds"] > 0
    assert not [f for f in out.iterdir() if f.name.startswith(".")]  # temp files were renamed away


def test_a_failed_run_leaves_the_previous_files_whole_and_no_temporaries(tmp_path, monkeypatch):
    generate_world(tmp_path, n_customers=500, seed=1)
    before = file_digests(tmp_path)

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure")

    # Fails in the last phase: all seven files are open as temporaries, four of them written.
    monkeypatch.setattr(synthetic, "simulate_chunk", fail)
    with pytest.raises(RuntimeError, match="simulated failure"):
        generate_world(tmp_path, n_customers=500, seed=2)
    assert file_digests(tmp_path) == before  # nothing replaced, nothing half-written left behind


def test_the_next_run_removes_temporaries_left_by_a_killed_run(tmp_path):
    stale = tmp_path / ".transactions.parquet.999999999-0badcafe.part.tmp"  # no such process
    stale.write_bytes(b"half a file")
    generate_world(tmp_path, n_customers=500, seed=1)
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]


# --- arguments ------------------------------------------------------------------------------------


def test_custom_market_topics_and_end_date_shape_the_world(tmp_path):
    knobs = WorldKnobs(market_topics=("climbing", "tech"))
    generate_world(
        tmp_path,
        n_customers=1_500,
        seed=1,
        end_date="2024-06-30",
        years=3,
        knobs=knobs,
        progress=True,
    )
    tx = pd.read_parquet(tmp_path / "transactions.parquet")
    si = pd.read_parquet(tmp_path / "social_interactions.parquet")
    customers = pd.read_parquet(tmp_path / "customers.parquet")
    assert tx.timestamp.max() < pd.Timestamp("2024-07-01")
    assert customers.signup_date.min() >= pd.Timestamp("2021-07-01")
    assert {"climbing", "tech"} < set(si.topic.dropna())
    assert json.loads((tmp_path / "world.json").read_text())["market_topics"] == [
        "climbing",
        "tech",
    ]
