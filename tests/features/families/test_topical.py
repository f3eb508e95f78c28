"""Specification of the topical family: how much of a customer's social activity is on-market."""

import numpy as np
import pandas as pd
import pytest

from features.config import FeatureConfig
from features.families.topical import FEATURES, topical_features
from features.tables import Tables

AS_OF = pd.Timestamp("2024-07-01")
CONFIG = FeatureConfig(market_topics=("running", "trail"))


def profiles(owners: dict, engagements: dict | None = None, followers: dict | None = None):
    """One snapshot per profile; owners maps profile_id -> customer_id (None: not a customer).

    Engagements default to 0 and followers to 100 for profiles not named.
    """
    engagements = engagements or {}
    followers = followers or {}
    return pd.DataFrame(
        {
            "profile_id": list(owners),
            "customer_id": list(owners.values()),
            "network": "x",
            "snapshot_date": AS_OF - pd.Timedelta(days=10),
            "followers": [float(followers.get(p, 100.0)) for p in owners],
            "following": 1.0,
            "posts": 1.0,
            "engagements": [float(engagements.get(p, 0.0)) for p in owners],
        }
    ).astype(
        {
            "profile_id": "str",
            "customer_id": "str",
            "network": "str",
            "snapshot_date": "datetime64[ns]",
        }
    )


def interactions(rows):
    """rows: (source, target, days before as_of, kind, topic)."""
    frame = pd.DataFrame(
        rows, columns=["source_profile_id", "target_profile_id", "days_ago", "kind", "topic"]
    )
    frame["timestamp"] = AS_OF - pd.to_timedelta(frame.pop("days_ago"), unit="D")
    return frame.astype(
        {
            "source_profile_id": "str",
            "target_profile_id": "str",
            "kind": "str",
            "topic": "str",
            "timestamp": "datetime64[ns]",
        }
    )


def tables(owners, rows, engagements=None, followers=None):
    customers = pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype="str"),
            "signup_date": pd.Series([], dtype="datetime64[ns]"),
        }
    )
    transactions = pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype="str"),
            "timestamp": pd.Series([], dtype="datetime64[ns]"),
            "amount": pd.Series([], dtype="float64"),
        }
    )
    return Tables(
        customers=customers,
        transactions=transactions,
        social_profiles=None if owners is None else profiles(owners, engagements, followers),
        social_interactions=None if rows is None else interactions(rows),
    )


def expected(columns: dict, customers):
    return pd.DataFrame(
        {k: np.asarray(v, dtype="float64") for k, v in columns.items()},
        index=pd.Index(customers, dtype="str", name="customer_id"),
    )


def test_topical_share_counts_made_and_received():
    result = topical_features(
        tables(
            {"p1": "c1", "x": None, "y": None},
            [
                ("p1", "x", 5, "mention", "running"),  # made
                ("y", "p1", 5, "reply", "cooking"),  # received, off topic
                ("y", "p1", 5, "like", "trail"),  # received; likes count here
                ("x", "y", 5, "mention", "running"),
            ],  # not c1's
            engagements={"p1": 30},
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result,
        expected(
            {
                "topical_share": [2 / 3],
                "topical_share_90d": [2 / 3],
                "topical_engagement": [30 * 2 / 3],
                "topical_reach_log": [np.log1p(100 * 2 / 3)],
            },
            ["c1"],
        ),
    )


def test_interactions_without_topic_are_left_out_of_the_share():
    result = topical_features(
        tables(
            {"p1": "c1", "p2": "c2", "x": None},
            [
                ("p1", "x", 5, "mention", "running"),
                ("x", "p1", 5, "mention", None),
                ("x", "p2", 5, "mention", None),
            ],
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["topical_share"]], expected({"topical_share": [1.0, np.nan]}, ["c1", "c2"])
    )


def test_topical_share_90d_uses_recent_interactions_only():
    result = topical_features(
        tables(
            {"p1": "c1", "p2": "c2", "x": None},
            [
                ("p1", "x", 200, "mention", "running"),
                ("p1", "x", 10, "mention", "cooking"),
                ("x", "p2", 0, "mention", "cooking"),  # dated exactly at as_of: not yet known
                ("x", "p2", 91, "mention", "trail"),
            ],
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["topical_share", "topical_share_90d"]],
        expected({"topical_share": [0.5, 1.0], "topical_share_90d": [0.0, np.nan]}, ["c1", "c2"]),
    )


def test_share_is_interaction_weighted_and_engagement_summed_across_profiles():
    result = topical_features(
        tables(
            {"p1": "c1", "p2": "c1", "x": None},
            [
                ("p1", "x", 5, "mention", "running"),
                ("p2", "x", 5, "mention", "cooking"),
                ("p2", "x", 5, "share", "cooking"),
                ("x", "p2", 5, "like", "cooking"),
            ],
            engagements={"p1": 10, "p2": 1000},
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result,
        expected(
            {
                "topical_share": [1 / 4],
                "topical_share_90d": [1 / 4],
                "topical_engagement": [10 * 1.0 + 1000 * 0.0],
                "topical_reach_log": [np.log1p(100 * 1.0 + 100 * 0.0)],
            },
            ["c1"],
        ),
    )


def test_reach_counts_only_the_followers_of_an_audience_that_cares_about_the_market():
    # c_on and c_off have the same 5000 followers: all of c_on's interactions are on market topics,
    # all of c_off's are off-topic. c_unknown's interactions carry no topic, so its share (and
    # reach) is unknown. c_two's reach is summed over its two profiles before the log:
    # 3000 x 1/2 + 1000 x 1 = 2500.
    result = topical_features(
        tables(
            {"on": "c_on", "off": "c_off", "unk": "c_unknown", "a": "c_two", "b": "c_two", "x": None},
            [
                ("on", "x", 5, "mention", "running"),
                ("x", "on", 5, "like", "trail"),
                ("off", "x", 5, "mention", "cooking"),
                ("x", "off", 5, "like", "cooking"),
                ("unk", "x", 5, "mention", None),
                ("a", "x", 5, "mention", "running"),
                ("a", "x", 5, "share", "cooking"),
                ("x", "b", 5, "reply", "trail"),
            ],
            followers={"on": 5000, "off": 5000, "unk": 5000, "a": 3000, "b": 1000},
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["topical_reach_log"]],
        expected(
            {"topical_reach_log": [0.0, np.log1p(5000.0), np.log1p(3000 / 2 + 1000), np.nan]},
            ["c_off", "c_on", "c_two", "c_unknown"],
        ),
    )


def test_reach_sums_followers_over_profiles_before_the_log():
    # Not log1p(1000) + log1p(1000): the audiences add up, then the log tempers the total.
    result = topical_features(
        tables(
            {"p1": "c1", "p2": "c1", "x": None},
            [("p1", "x", 5, "mention", "running"), ("p2", "x", 5, "mention", "trail")],
            followers={"p1": 1000, "p2": 1000},
        ),
        AS_OF,
        CONFIG,
    )
    assert result.loc["c1", "topical_reach_log"] == pytest.approx(np.log1p(2000.0))


def test_self_interaction_counts_once_and_topic_case_is_ignored():
    result = topical_features(
        tables(
            {"p1": "c1", "x": None},
            [("p1", "p1", 5, "mention", " Running "), ("x", "p1", 5, "mention", "cooking")],
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["topical_share"]], expected({"topical_share": [1 / 2]}, ["c1"])
    )


def test_customer_without_interactions_is_unknown_not_zero():
    result = topical_features(
        tables(
            {"p1": "c1", "p2": "c2", "x": None},
            [("p1", "x", 5, "mention", "running")],
            engagements={"p2": 50},
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result,
        expected(
            {
                "topical_share": [1.0, np.nan],
                "topical_share_90d": [1.0, np.nan],
                "topical_engagement": [0.0, np.nan],
                "topical_reach_log": [np.log1p(100.0), np.nan],
            },
            ["c1", "c2"],
        ),
    )


def test_no_market_topics_gives_nan():
    result = topical_features(
        tables({"p1": "c1", "x": None}, [("p1", "x", 5, "mention", "running")]),
        AS_OF,
        FeatureConfig(market_topics=()),
    )
    pd.testing.assert_frame_equal(result, expected({c: [] for c in FEATURES}, []))


def test_interactions_without_topic_column_give_nan():
    data = tables({"p1": "c1", "x": None}, [("p1", "x", 5, "mention", "running")])
    data = Tables(
        customers=data.customers,
        transactions=data.transactions,
        social_profiles=data.social_profiles,
        social_interactions=data.social_interactions.drop(columns="topic"),
    )
    result = topical_features(data, AS_OF, CONFIG)
    pd.testing.assert_frame_equal(result, expected({c: [] for c in FEATURES}, []))


@pytest.mark.parametrize(
    "owners, rows",
    [
        (None, [("a", "b", 1, "mention", "running")]),
        ({"a": "c1"}, None),
        ({"a": None, "b": None}, [("a", "b", 1, "mention", "running")]),
    ],
)
def test_missing_social_tables_give_empty_frames(owners, rows):
    result = topical_features(tables(owners, rows), AS_OF, CONFIG)
    pd.testing.assert_frame_equal(result, expected({c: [] for c in FEATURES}, []))
