"""Specification of the social family: reach, growth and engagement of a customer's own profiles."""

import numpy as np
import pandas as pd
import pytest

from features.config import FeatureConfig
from features.families.social import FEATURES, social_features
from features.tables import Tables

AS_OF = pd.Timestamp("2024-07-01")
CONFIG = FeatureConfig()
SNAPSHOT_COLUMNS = [
    "profile_id",
    "customer_id",
    "network",
    "snapshot_date",
    "followers",
    "following",
    "posts",
    "engagements",
]


def snapshots(rows, influence_scores=None):
    frame = pd.DataFrame(rows, columns=SNAPSHOT_COLUMNS).astype(
        {
            "profile_id": "str",
            "customer_id": "str",
            "network": "str",
            "snapshot_date": "datetime64[ns]",
            "followers": "float64",
            "following": "float64",
            "posts": "float64",
            "engagements": "float64",
        }
    )
    if influence_scores is not None:
        frame["influence_score"] = np.asarray(influence_scores, dtype="float64")
    return frame


def tables(social_profiles):
    customers = pd.DataFrame(
        {
            "customer_id": pd.Series(["c1", "c2"], dtype="str"),
            "signup_date": pd.to_datetime(["2020-01-01"] * 2).astype("datetime64[ns]"),
        }
    )
    transactions = pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype="str"),
            "timestamp": pd.Series([], dtype="datetime64[ns]"),
            "amount": pd.Series([], dtype="float64"),
        }
    )
    return Tables(customers=customers, transactions=transactions, social_profiles=social_profiles)


def expected(columns: dict, customers):
    return pd.DataFrame(
        {k: np.asarray(v, dtype="float64") for k, v in columns.items()},
        index=pd.Index(customers, dtype="str", name="customer_id"),
    )


def test_latest_snapshot_before_as_of_is_used():
    result = social_features(
        tables(
            snapshots(
                [
                    ("p1", "c1", "x", "2024-01-01", 100, 5, 10, 20),
                    ("p1", "c1", "x", "2024-06-01", 200, 5, 12, 30),
                    ("p1", "c1", "x", "2024-08-01", 999, 5, 99, 99),
                ]
            )
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["followers_log", "posts", "engagement_rate", "days_since_last_snapshot"]],
        expected(
            {
                "followers_log": [np.log1p(200)],
                "posts": [12],
                "engagement_rate": [30 / 300],
                "days_since_last_snapshot": [30],
            },
            ["c1"],
        ),
    )


def test_snapshot_on_as_of_is_ignored():
    result = social_features(
        tables(
            snapshots(
                [
                    ("p1", "c1", "x", "2024-06-01", 200, 5, 12, 30),
                    ("p1", "c1", "x", "2024-07-01", 500, 5, 12, 30),
                    ("p2", "c2", "x", "2024-07-01", 500, 5, 12, 30),
                ]
            )
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["followers_log"]], expected({"followers_log": [np.log1p(200)]}, ["c1"])
    )


def test_profiles_without_customer_are_not_mapped():
    result = social_features(
        tables(
            snapshots(
                [
                    ("p1", "c1", "x", "2024-06-01", 200, 5, 12, 30),
                    ("p9", None, "x", "2024-06-01", 50_000, 5, 12, 30),
                ]
            )
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["followers_log"]], expected({"followers_log": [np.log1p(200)]}, ["c1"])
    )


def test_profile_is_mapped_through_any_earlier_linked_snapshot_and_newest_link_wins():
    result = social_features(
        tables(
            snapshots(
                [
                    ("p1", "c1", "x", "2024-01-01", 10, 0, 1, 0),
                    (
                        "p1",
                        None,
                        "x",
                        "2024-06-01",
                        20,
                        0,
                        1,
                        0,
                    ),  # later snapshot without the link: still c1's
                    ("p2", "c1", "x", "2024-01-01", 30, 0, 1, 0),
                    (
                        "p2",
                        "c2",
                        "x",
                        "2024-03-01",
                        40,
                        0,
                        1,
                        0,
                    ),  # re-linked by identity resolution: now c2's
                    (
                        "p2",
                        "c1",
                        "x",
                        "2024-07-02",
                        40,
                        0,
                        1,
                        0,
                    ),  # a link dated after as_of is not known yet
                ]
            )
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["followers_log"]],
        expected({"followers_log": [np.log1p(20), np.log1p(40)]}, ["c1", "c2"]),
    )


def test_profiles_are_summed_across_networks_and_vendor_score_is_the_max():
    result = social_features(
        tables(
            snapshots(
                [
                    ("p1", "c1", "instagram", "2024-06-01", 300, 5, 12, 30),
                    ("p2", "c1", "tiktok", "2024-05-01", 700, 5, 8, 70),
                    ("p3", "c2", "tiktok", "2024-06-20", 10, 5, 1, 0),
                ],
                influence_scores=[40, 55, np.nan],
            )
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result,
        expected(
            {
                "followers_log": [np.log1p(1000), np.log1p(10)],
                "follower_growth_90d": [np.nan, np.nan],
                "follower_growth_365d": [np.nan, np.nan],
                "posts": [20, 1],
                "engagement_rate": [100 / 1100, 0 / 110],
                "influence_score_max": [55, np.nan],
                "n_networks": [2, 1],
                "days_since_last_snapshot": [30, 11],
            },
            ["c1", "c2"],
        ),
    )


def test_influence_score_is_nan_when_vendor_column_absent():
    result = social_features(
        tables(
            snapshots(
                [
                    ("p1", "c1", "x", "2024-06-01", 200, 5, 12, 30),
                ]
            )
        ),
        AS_OF,
        CONFIG,
    )
    assert result["influence_score_max"].isna().all()


def test_follower_growth_uses_older_snapshot():
    result = social_features(
        tables(
            snapshots(
                [
                    ("p1", "c1", "x", "2023-06-01", 50, 0, 1, 0),
                    ("p1", "c1", "x", "2024-01-01", 100, 0, 1, 0),
                    (
                        "p1",
                        "c1",
                        "x",
                        "2024-03-15",
                        150,
                        0,
                        1,
                        0,
                    ),  # only 78 days before the latest: too recent
                    ("p1", "c1", "x", "2024-06-01", 200, 0, 1, 0),
                ]
            )
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["follower_growth_90d", "follower_growth_365d"]],
        expected(
            {
                "follower_growth_90d": [np.log1p(200) - np.log1p(100)],
                "follower_growth_365d": [np.log1p(200) - np.log1p(50)],
            },
            ["c1"],
        ),
    )


def test_follower_growth_ignores_profiles_without_enough_history():
    result = social_features(
        tables(
            snapshots(
                [
                    ("p1", "c1", "x", "2024-01-01", 100, 0, 1, 0),
                    ("p1", "c1", "x", "2024-06-01", 300, 0, 1, 0),
                    (
                        "p2",
                        "c1",
                        "y",
                        "2024-06-01",
                        5000,
                        0,
                        1,
                        0,
                    ),  # new profile: neither grows nor dilutes
                ]
            )
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["follower_growth_90d", "follower_growth_365d"]],
        expected(
            {
                "follower_growth_90d": [np.log1p(300) - np.log1p(100)],
                "follower_growth_365d": [np.nan],
            },
            ["c1"],
        ),
    )


def test_engagement_rate_shrinks_tiny_accounts():
    result = social_features(
        tables(
            snapshots(
                [
                    ("p1", "c1", "x", "2024-06-01", 3, 0, 1, 10),  # raw rate 3.3
                    ("p2", "c2", "x", "2024-06-01", 10_000, 0, 1, 500),  # raw rate 0.05
                ]
            )
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["engagement_rate"]],
        expected({"engagement_rate": [10 / 103, 500 / 10_100]}, ["c1", "c2"]),
    )


@pytest.mark.parametrize(
    "social_profiles", [None, snapshots([("p9", None, "x", "2024-06-01", 1, 0, 1, 0)])]
)
def test_missing_social_tables_give_empty_frames(social_profiles):
    result = social_features(tables(social_profiles), AS_OF, CONFIG)
    pd.testing.assert_frame_equal(result, expected({c: [] for c in FEATURES}, []))


def test_same_inputs_give_identical_outputs():
    profiles = snapshots(
        [
            ("p1", "c1", "x", "2023-01-01", 100, 0, 1, 3),
            ("p1", "c1", "x", "2024-06-01", 200, 0, 1, 4),
            ("p2", "c2", "y", "2024-06-01", 7, 0, 1, 5),
        ]
    )
    first = social_features(tables(profiles), AS_OF, CONFIG)
    shuffled = social_features(tables(profiles.iloc[::-1].reset_index(drop=True)), AS_OF, CONFIG)
    pd.testing.assert_frame_equal(first, shuffled)
