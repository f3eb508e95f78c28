"""Shared fixtures of the synthetic-world tests: one small generated world, read back whole."""

from __future__ import annotations

import pandas as pd
import pytest

from features.synthetic.world import generate_world

END = pd.Timestamp("2025-12-31")
TRUTH_START = END + pd.Timedelta(days=1)
MARKET = ("outdoor", "hiking")
CONTRACT_FILES = (
    "customers",
    "transactions",
    "social_profiles",
    "social_interactions",
    "referrals",
)
ALL_FILES = CONTRACT_FILES + ("ground_truth", "ground_truth_profiles")


def read_world(path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(path / f"{name}.parquet") for name in ALL_FILES}


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    summary = generate_world(out, n_customers=20_000, seed=42)
    return out, summary


@pytest.fixture(scope="session")
def world(world_dir):
    return read_world(world_dir[0])


@pytest.fixture(scope="session")
def last_snapshot(world):
    sp = world["social_profiles"]
    last = sp[sp.snapshot_date == sp.snapshot_date.max()]
    return last.merge(
        world["ground_truth_profiles"].drop(columns=["customer_id", "network"]), on="profile_id"
    )
