"""Specification of the profile derivations the social families share, and of their memo."""

import numpy as np
import pandas as pd
import pandas.testing as tm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.build import build_features
from features.config import FeatureConfig
from features.families.profiles import (
    _latest_rows,
    customer_codes,
    customer_profiles,
    interactions_before,
    profile_codes,
    profile_snapshots,
)
from features.ingest.source import load_source
from features.synthetic.world import generate_world
from features.tables import TABLE_NAMES, Tables

CONFIG = FeatureConfig(market_topics=("outdoor", "hiking"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_world(out, n_customers=300, seed=5, end_date="2025-12-31")
    return out


@pytest.fixture
def tables(world) -> Tables:
    """Freshly loaded tables (each test gets its own memo)."""
    return load_source(world).tables


def snapshots(rows):
    """rows: (profile_id, customer_id or None, snapshot day, followers)."""
    frame = pd.DataFrame(rows, columns=["profile_id", "customer_id", "snapshot_date", "followers"])
    for column in ("network",):
        frame[column] = "x"
    for column in ("following", "posts", "engagements"):
        frame[column] = 1.0
    return frame.astype(
        {"profile_id": "str", "customer_id": "str", "snapshot_date": "datetime64[ns]",
         "followers": "float64"}
    )


def test_snapshots_and_interactions_share_one_code_per_profile(tables):
    codes = profile_codes(tables)
    ids = pd.concat(
        [
            tables.social_profiles["profile_id"],
            tables.social_interactions["source_profile_id"],
            tables.social_interactions["target_profile_id"],
        ],
        ignore_index=True,
    )
    all_codes = np.concatenate([codes.snapshot, codes.source, codes.target])
    # Same id <=> same code, over both tables.
    pairs = pd.DataFrame({"id": ids.to_numpy(), "code": all_codes}).drop_duplicates()
    assert pairs["id"].is_unique and pairs["code"].is_unique
    assert codes.n == ids.nunique()


def test_latest_snapshot_and_newest_owner_link_win():
    frame = snapshots(
        [
            ("p1", "c1", "2024-01-01", 10.0),
            ("p1", "c2", "2024-03-01", 20.0),  # re-linked to c2
            ("p1", None, "2024-05-01", 30.0),  # latest snapshot, no link: owner stays c2
            ("p1", "c3", "2024-08-01", 40.0),  # after as_of: invisible
            ("p2", None, "2024-02-01", 5.0),
        ]
    )
    out = profile_snapshots(frame, pd.Timestamp("2024-07-01"), lookback_days=(90,))
    assert list(out.index) == ["p1", "p2"]
    assert out.loc["p1", "customer_id"] == "c2"
    assert out.loc["p1", "followers"] == 30.0
    assert out.loc["p1", "followers_90d_before"] == 10.0  # 2024-03-01 is only 61 days older
    assert pd.isna(out.loc["p2", "customer_id"])
    assert pd.isna(out.loc["p2", "followers_90d_before"])


def test_interactions_before_keep_only_earlier_rows_with_both_ends(tables):
    as_of = pd.Timestamp("2025-06-01")
    inter = interactions_before(tables, as_of)
    frame = tables.social_interactions
    expected = np.flatnonzero(
        (frame["timestamp"] < as_of).to_numpy()
        & frame["source_profile_id"].notna().to_numpy()
        & frame["target_profile_id"].notna().to_numpy()
    )
    np.testing.assert_array_equal(inter.rows, expected)


def test_interactions_before_a_cutoff_after_all_of_them_are_the_table_itself_not_a_copy(tables):
    # The scorer's case: it keeps only earlier interactions, so nothing is selected or copied.
    frame = tables.social_interactions
    complete = Tables(**{**dict(tables.items()), "social_interactions": frame.dropna(
        subset=["source_profile_id", "target_profile_id"]).reset_index(drop=True)})
    inter = interactions_before(complete, frame["timestamp"].max() + pd.Timedelta(days=1))
    assert inter.rows == slice(None)
    assert inter.source is profile_codes(complete).source


def test_memo_follows_the_cutoff(tables):
    """Features from one Tables object visited at several cutoffs equal those of fresh objects."""
    for as_of in map(pd.Timestamp, ("2024-06-01", "2025-06-01", "2024-06-01")):
        reused = build_features(tables, as_of, CONFIG)
        fresh = build_features(Tables(**dict(tables.items())), as_of, CONFIG)
        tm.assert_frame_equal(reused, fresh)


def test_only_the_latest_cutoff_is_kept(tables):
    customer_profiles(tables, pd.Timestamp("2024-06-01"))
    first = interactions_before(tables, pd.Timestamp("2024-06-01"))
    interactions_before(tables, pd.Timestamp("2025-06-01"))
    assert interactions_before(tables, pd.Timestamp("2024-06-01")) is not first
    cutoff_keys = [k for k in tables._derived if isinstance(k, tuple) and k[0] == "__at__"]
    assert cutoff_keys == [("__at__", "interactions_before")]  # 2025-06-01 dropped the rest


def test_the_memo_is_not_a_table(tables):
    profile_codes(tables)
    assert [name for name, _ in tables.items()] == [n for n in TABLE_NAMES
                                                    if getattr(tables, n) is not None]


def test_categorical_ids_give_the_same_features_as_text(tables):
    """A source may hold ids as categoricals (the scorer does, for the interaction graph)."""
    as_of = pd.Timestamp("2025-06-01")
    expected = build_features(tables, as_of, CONFIG)
    inter = tables.social_interactions
    categorical = inter.assign(**{c: inter[c].astype("category") for c in
                                  ("source_profile_id", "target_profile_id", "kind", "topic")})
    snaps = tables.social_profiles.assign(profile_id=tables.social_profiles["profile_id"].astype("category"))
    for social_profiles in (tables.social_profiles, snaps):
        other = Tables(tables.customers, tables.transactions, social_profiles, categorical, tables.referrals)
        tm.assert_frame_equal(build_features(other, as_of, CONFIG), expected, rtol=1e-12)


def test_ids_of_one_categorical_type_everywhere_are_coded_by_their_categories(tables):
    """The scorer's tables: the categories are the vocabulary, their codes used without a copy."""
    as_of = pd.Timestamp("2025-06-01")
    expected = build_features(tables, as_of, CONFIG)
    snaps, inter = tables.social_profiles, tables.social_interactions
    ends = ("source_profile_id", "target_profile_id")
    # Unused categories too: the vocabulary may be larger than the ids present. Over 32,767 of
    # them, so that pandas holds the codes as int32 (the profile codes' type) as at scale.
    unused = pd.Series([f"nobody-{i}" for i in range(40_000)])
    every_id = pd.concat([snaps["profile_id"], *(inter[c] for c in ends), unused])
    ids = pd.CategoricalDtype(pd.Index(every_id.dropna().unique(), dtype="str"))
    shared = Tables(tables.customers, tables.transactions, snaps.assign(profile_id=snaps["profile_id"].astype(ids)),
                    inter.assign(**{c: inter[c].astype(ids) for c in ends}), tables.referrals)
    codes = profile_codes(shared)
    assert codes.n == len(ids.categories)
    assert np.shares_memory(codes.source, shared.social_interactions["source_profile_id"].array.codes)
    np.testing.assert_array_equal(codes.snapshot, shared.social_profiles["profile_id"].array.codes)
    tm.assert_frame_equal(build_features(shared, as_of, CONFIG), expected, rtol=1e-12)


def scatter_latest_rows(codes, dates, eligible, n_groups):
    """The two scatter-max passes _latest_rows made before it was compiled (the reference)."""
    latest_date = np.full(n_groups, np.iinfo(np.int64).min)
    np.maximum.at(latest_date, codes[eligible], dates[eligible])
    is_latest = eligible & (dates == latest_date[np.maximum(codes, 0)])
    rows = np.full(n_groups, -1, dtype=np.int64)
    np.maximum.at(rows, codes[is_latest], np.flatnonzero(is_latest))
    return rows


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.tuples(st.integers(-1, n - 1), st.integers(0, 5), st.booleans()), max_size=40),
    st.lists(st.integers(0, 6), min_size=n, max_size=n))))
def test_latest_rows_are_the_scatter_max_rows_with_and_without_a_cutoff(case):
    n, rows, cutoff = case
    codes = np.array([r[0] for r in rows], dtype=np.int32)
    dates = np.array([r[1] for r in rows], dtype=np.int64)  # few dates: ties are common
    eligible = np.array([r[2] for r in rows], dtype=bool) & (codes >= 0)
    cutoff = np.array(cutoff, dtype=np.int64)
    np.testing.assert_array_equal(_latest_rows(codes, dates, eligible, n),
                                  scatter_latest_rows(codes, dates, eligible, n))
    before = eligible & (dates <= cutoff[np.maximum(codes, 0)])
    np.testing.assert_array_equal(_latest_rows(codes, dates, eligible, n, cutoff),
                                  scatter_latest_rows(codes, dates, before, n))


@pytest.mark.parametrize("ids", [
    ["C0000012", "C0000003", "C0000012", "C0009000", "C0000003"],  # one prefix, fixed digits
    ["bob", "alice", "bob", "C01", "carol"],  # anything else
    ["C12", "C3", "C12"],  # digits of different widths: "C12" sorts before "C3"
])
def test_customer_codes_number_ids_in_sorted_order_as_pandas_factorize_does(ids):
    series = pd.Series(ids, dtype="str")
    codes, customers = customer_codes(series)
    expected_codes, expected = pd.factorize(series, sort=True)
    np.testing.assert_array_equal(codes, expected_codes)
    tm.assert_index_equal(customers, pd.Index(expected, dtype="str", name="customer_id"))
