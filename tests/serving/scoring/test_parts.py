"""The scorer's parts: ranking and tiers, reason text, temp files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.ingest.id_sets import IdSet
from features.ingest.partition import bucket_of
from serving.scoring.buckets import known_customers
from serving.scoring.core import manifest_path, rejects_path, remove_stale_temporaries
from serving.scoring.reasons import top_reasons
from serving.scoring.tiers import ranked_order, tier_sizes, value_ranks

# ---------------------------------------------------------------- ranks and tiers


def test_the_most_valuable_customer_ranks_first_and_tied_customers_share_rank_and_tier():
    ranked = value_ranks(["c", "b", "a", "d"], [5.0, 9.0, 5.0, 0.0])
    pd.testing.assert_frame_equal(ranked, pd.DataFrame({
        # a and c are tied: both are third (the number of customers valued at least as high).
        "value_rank": [3, 1, 3, 4],
        "value_percentile": [50.0, 100.0, 50.0, 25.0],
        # Of 4 customers the top 1% and the top 10% are both the first one, the top 50% two: the
        # tie straddles that boundary, so neither a nor c is in it (never decided by id).
        "value_tier": pd.array(["rest", "top_1pct", "rest", "rest"], dtype="str"),
    }))
    assert ranked_order(["c", "b", "a", "d"], ranked["value_rank"]).tolist() == [1, 2, 0, 3]


def test_a_constant_model_puts_nobody_in_a_top_tier():
    ranked = value_ranks([f"c{i}" for i in range(50)], np.full(50, 7.0))
    assert set(ranked["value_rank"]) == {50}
    assert set(ranked["value_tier"]) == {"rest"}


def test_tiers_do_not_depend_on_customer_ids():
    values = np.repeat([9.0, 5.0, 1.0], [3, 40, 57])
    ids = [f"c{i:03d}" for i in range(100)]
    shuffled = [f"x{i:03d}" for i in np.random.default_rng(0).permutation(100)]
    assert value_ranks(ids, values).equals(value_ranks(shuffled, values))


def test_tier_sizes_are_exact_ceilings_of_the_shares():
    # 700 x 0.01 is 7.000000000000001 in floating point: the top 1% is still 7 customers.
    assert tier_sizes(700) == {"top_1pct": 7, "top_10pct": 70, "top_50pct": 350}
    assert tier_sizes(1) == {"top_1pct": 1, "top_10pct": 1, "top_50pct": 1}
    ranked = value_ranks([f"c{i:03d}" for i in range(700)], np.arange(700.0))
    counts = ranked["value_tier"].value_counts()
    assert counts.to_dict() == {"rest": 350, "top_50pct": 280, "top_10pct": 63, "top_1pct": 7}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from([0.0, -0.0, 1.5, 7.0]), st.floats(-1e6, 1e6)), max_size=60))
def test_value_rank_is_pandas_max_rank_from_the_top(values):
    """value_rank is rank(method="max", ascending=False): ties (0.0 and -0.0 among them) share it."""
    expected = pd.Series(values, dtype="float64").rank(method="max", ascending=False).astype("int64")
    ranked = value_ranks([f"c{i}" for i in range(len(values))], values)
    assert ranked["value_rank"].tolist() == expected.tolist()
    sizes = tier_sizes(len(values))
    assert ranked["value_tier"].tolist() == [
        next((name for name, size in sizes.items() if r <= size), "rest") for r in expected]


def test_a_prediction_that_is_not_a_number_stops_the_ranking():
    with pytest.raises(ValueError, match="1 predicted values are not finite"):
        value_ranks(["a", "b"], [1.0, np.nan])


# ---------------------------------------------------------------- reasons


def test_reasons_are_the_largest_effects_in_currency_with_the_feature_value():
    contributions = pd.DataFrame({
        "spend_365d": [123.456, 0.001], "attr_region": [-250.1, 0.0], "followers_log": [4.0, 0.0],
        "baseline": [10.0, 10.0],
    }, index=["a", "b"])
    features = pd.DataFrame({
        "spend_365d": [1234.5678, np.nan],
        "attr_region": pd.array(["north", None], dtype="str"),
        "followers_log": [7.123456789, 0.0],
    }, index=["a", "b"])
    out = top_reasons(contributions, features, 3)
    assert out.loc["a"].tolist() == [
        "attr_region=north: -250.10", "spend_365d=1234.57: +123.46", "followers_log=7.12346: +4.00",
    ]
    # Effects that round to 0.00 are not reasons.
    assert out.loc["b"].isna().all()


def test_reasons_show_missing_values_and_large_numbers_plainly():
    contributions = pd.DataFrame({"days_since_last_order": [-30.0], "gross_spend_total": [500.0]})
    features = pd.DataFrame({"days_since_last_order": [np.nan], "gross_spend_total": [12345678.9]})
    out = top_reasons(contributions, features, 2)
    assert out.iloc[0].tolist() == ["gross_spend_total=12345700: +500.00",
                                    "days_since_last_order=missing: -30.00"]


def test_asking_for_more_reasons_than_features_leaves_the_rest_empty():
    out = top_reasons(pd.DataFrame({"x": [2.0]}), pd.DataFrame({"x": [1.0]}), 3)
    assert out.iloc[0].tolist()[0] == "x=1: +2.00"
    assert out.iloc[0].iloc[1:].isna().all()


# ---------------------------------------------------------------- files of a run


def test_temporaries_of_dead_runs_are_removed_and_a_live_runs_are_kept(tmp_path):
    out = tmp_path / "scores.parquet"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale_file = tmp_path / f".scores.parquet.{dead}-abcd.parquet.tmp"
    stale_dir = tmp_path / f".scores.parquet.{dead}-abce.work.tmp"
    live = tmp_path / f".scores.parquet.{os.getppid()}-abcf.parquet.tmp"
    other = tmp_path / ".other.parquet.1-abcd.parquet.tmp"
    stale_manifest = tmp_path / f".scores.manifest.json.{dead}-abcd.tmp"
    stale_rejects = tmp_path / "scores.rejects" / f".customers.csv.{dead}-abcd.tmp"
    stale_rejects.parent.mkdir()
    for path in (stale_file, live, other, stale_manifest, stale_rejects):
        path.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "bucket.arrow").write_text("x")
    removed = remove_stale_temporaries(out)
    assert sorted(p.name for p in removed) == sorted(
        [stale_file.name, stale_dir.name, stale_manifest.name, stale_rejects.name])
    assert live.exists() and other.exists()


def test_manifest_and_rejects_sit_beside_the_output(tmp_path):
    out = tmp_path / "2026-01-01.parquet"
    assert manifest_path(out) == tmp_path / "2026-01-01.manifest.json"
    assert rejects_path(out) == tmp_path / "2026-01-01.rejects"


# ---------------------------------------------------------------- the source against the model


def test_a_source_without_a_table_the_model_was_trained_with_is_refused_unless_allowed():
    from types import SimpleNamespace

    from features.ingest.contract import ContractError
    from serving.scoring.core import check_model_tables

    model = SimpleNamespace(manifest=SimpleNamespace(families={
        "spend_365d": "history", "followers_log": "social", "pagerank": "network", "referrals_made": "referral"}))
    crm_only = {"customers", "transactions"}
    with pytest.raises(ContractError, match=r"trained with referrals, social_interactions, social_profiles, "
                                            r"which this source lacks.*--allow-missing referrals"):
        check_model_tables(model, crm_only)
    with pytest.raises(ContractError, match="trained with social_interactions"):
        check_model_tables(model, crm_only | {"social_profiles", "referrals"})
    allowed = ("referrals", "social_interactions", "social_profiles")
    assert check_model_tables(model, crm_only, allowed) == list(allowed)
    assert check_model_tables(model, crm_only | set(allowed)) == []
    # A model trained on CRM history alone needs nothing optional.
    crm_model = SimpleNamespace(manifest=SimpleNamespace(families={"spend_365d": "history"}))
    assert check_model_tables(crm_model, crm_only) == []
    with pytest.raises(ContractError, match="--allow-missing takes optional tables"):
        check_model_tables(model, crm_only, ("socials",))


# ---------------------------------------------------------------- inputs the model was trained with


def test_a_source_lacking_an_optional_column_the_model_was_trained_with_is_refused_unless_allowed():
    from types import SimpleNamespace

    from features.ingest.contract import ContractError
    from serving.scoring.core import check_model_columns

    model = SimpleNamespace(python_model=SimpleNamespace(
        source_columns={"transactions": ["category", "margin"], "social_interactions": ["topic"]}))
    present = {"transactions": ["customer_id", "timestamp", "amount", "category"], "customers": ["customer_id"]}
    with pytest.raises(ContractError, match=r"trained with column transactions\.margin, which this source lacks.*"
                                            r"--allow-missing transactions\.margin"):
        check_model_columns(model, present)
    assert check_model_columns(model, present, ("transactions.margin",)) == ["transactions.margin"]
    assert check_model_columns(model, present, ("transactions",)) == ["transactions.margin"]
    # A table the source lacks altogether is check_model_tables' business; an old model recorded nothing.
    assert check_model_columns(SimpleNamespace(python_model=SimpleNamespace()), present) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=5), max_size=40, unique=True), st.integers(1, 6),
       st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=60))
def test_known_customers_bucket_by_bucket_are_those_of_the_whole_customer_set(valid, buckets, named):
    """Each named id is looked up in its own bucket only: the same distinct members, in the same
    order, as the whole base's IdSet gives."""
    where = bucket_of(pd.Series(valid, dtype="str"), buckets) if valid else np.array([], dtype=np.int64)
    parts = [pa.array([v for v, b in zip(valid, where, strict=True) if b == k], pa.string())
             for k in range(buckets)]
    asked = pd.Series(named + valid[::2], dtype="str")
    expected = IdSet(parts).known(asked)
    assert known_customers(lambda b: parts[b], buckets, asked).tolist() == expected.tolist()
