"""Specification of the network family: PageRank centrality in the mention/share/reply graph."""

import numpy as np
import pandas as pd
import pytest

from features.config import FeatureConfig
from features.families.network import FEATURES, network_features
from features.tables import Tables

AS_OF = pd.Timestamp("2024-07-01")
CONFIG = FeatureConfig(interaction_half_life_days=180.0, pagerank_damping=0.85)


def profiles(owners: dict):
    """One snapshot per profile; owners maps profile_id -> customer_id (None: not a customer)."""
    return pd.DataFrame(
        {
            "profile_id": list(owners),
            "customer_id": list(owners.values()),
            "network": "x",
            "snapshot_date": AS_OF - pd.Timedelta(days=10),
            "followers": 1.0,
            "following": 1.0,
            "posts": 1.0,
            "engagements": 1.0,
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


def tables(owners, rows):
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
        social_profiles=None if owners is None else profiles(owners),
        social_interactions=None if rows is None else interactions(rows),
    )


def expected(columns: dict, customers):
    return pd.DataFrame(
        {k: np.asarray(v, dtype="float64") for k, v in columns.items()},
        index=pd.Index(customers, dtype="str", name="customer_id"),
    )


def test_pagerank_matches_hand_computed_star():
    # Two leaves mention the centre; the dangling centre jumps uniformly. With d = 0.85 and
    # p_leaf = 0.05 + 0.85 * p_centre / 3, p_centre = 1 - 2 p_leaf: p_leaf = 1 / 4.7.
    result = network_features(
        tables(
            {"a": "c_a", "b": "c_b", "hub": "c_hub"},
            [("a", "hub", 180, "mention", None), ("b", "hub", 180, "mention", None)],
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result,
        expected(
            {
                "pagerank": [3 / 4.7, 3 / 4.7, 3 * 2.7 / 4.7],  # scaled by the 3 vertices
                "weighted_in_degree": [0.0, 0.0, 1.0],  # two mentions, each half-life old
                "topic_pagerank": [np.nan] * 3,
            },
            ["c_a", "c_b", "c_hub"],
        ),
    )


def test_three_cycle_scores_everyone_average():
    result = network_features(
        tables(
            {"a": "c1", "b": "c2", "c": "c3"},
            [
                ("a", "b", 1, "reply", None),
                ("b", "c", 1, "share", None),
                ("c", "a", 1, "mention", None),
            ],
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["pagerank"]], expected({"pagerank": [1.0, 1.0, 1.0]}, ["c1", "c2", "c3"])
    )


def test_pagerank_ranks_the_most_mentioned_profile_first():
    result = network_features(
        tables(
            {"p1": "c1", "p2": "c2", "p3": "c3", "p4": "c4"},
            [
                ("p2", "p1", 5, "mention", None),
                ("p3", "p1", 5, "share", None),
                ("p4", "p1", 5, "reply", None),
                ("p3", "p2", 5, "mention", None),
            ],
        ),
        AS_OF,
        CONFIG,
    )
    assert list(result["pagerank"].sort_values(ascending=False).index[:2]) == ["c1", "c2"]


def test_recent_interactions_weigh_more():
    # PageRank splits each source's vote over its edges by weight, so x's recent mention of p1
    # passes on twice what its older mention of p2 does.
    result = network_features(
        tables(
            {"p1": "c1", "p2": "c2", "x": None},
            [("x", "p1", 180, "mention", None), ("x", "p2", 360, "mention", None)],
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(
        result[["weighted_in_degree"]], expected({"weighted_in_degree": [0.5, 0.25]}, ["c1", "c2"])
    )
    assert result.loc["c1", "pagerank"] > result.loc["c2", "pagerank"]


def test_likes_self_mentions_and_future_interactions_confer_nothing():
    result = network_features(
        tables(
            {"p1": "c1", "p2": "c2", "x": None},
            [
                ("x", "p1", 5, "like", None),
                ("p1", "p1", 5, "mention", None),
                ("x", "p1", 0, "mention", None),  # dated exactly at as_of: not yet known
                ("x", "p2", 5, "mention", None),
            ],
        ),
        AS_OF,
        CONFIG,
    )
    assert result.loc["c1", "weighted_in_degree"] == 0.0
    assert result.loc["c1", "pagerank"] < result.loc["c2", "pagerank"]


def test_non_customer_profiles_shape_customer_centrality():
    # c1 and c2 are each mentioned once, but c1 by a hub many others mention.
    result = network_features(
        tables(
            {
                "p1": "c1",
                "p2": "c2",
                "hub": None,
                "f1": None,
                "f2": None,
                "f3": None,
                "nobody": None,
            },
            [
                ("f1", "hub", 5, "mention", None),
                ("f2", "hub", 5, "mention", None),
                ("f3", "hub", 5, "mention", None),
                ("hub", "p1", 5, "mention", None),
                ("nobody", "p2", 5, "mention", None),
            ],
        ),
        AS_OF,
        CONFIG,
    )
    assert list(result.index) == ["c1", "c2"]
    assert result.loc["c1", "weighted_in_degree"] == result.loc["c2", "weighted_in_degree"]
    assert result.loc["c1", "pagerank"] > 1.5 * result.loc["c2", "pagerank"]


def test_customer_with_several_profiles_sums_them():
    result = network_features(
        tables(
            {"p1": "c1", "p2": "c1", "p3": "c2", "x": None},
            [
                ("x", "p1", 5, "mention", None),
                ("x", "p2", 5, "mention", None),
                ("x", "p3", 5, "mention", None),
            ],
        ),
        AS_OF,
        CONFIG,
    )
    assert result.loc["c1", "weighted_in_degree"] == pytest.approx(
        2 * result.loc["c2", "weighted_in_degree"]
    )
    assert result.loc["c1", "pagerank"] == pytest.approx(2 * result.loc["c2", "pagerank"])


CELEBRITY_GRAPH = [
    ("fan1", "celeb", 5, "mention", "football"),
    ("fan2", "celeb", 5, "mention", "football"),
    ("fan3", "celeb", 5, "share", "football"),
    ("fan4", "celeb", 5, "reply", "football"),
    ("runner1", "coach", 5, "mention", "running"),
    ("runner2", "coach", 5, "mention", "Running"),
]
CELEBRITY_OWNERS = {
    "celeb": "c_celeb",
    "coach": "c_coach",
    "fan1": None,
    "fan2": None,
    "fan3": None,
    "fan4": None,
    "runner1": None,
    "runner2": None,
}


def test_topic_pagerank_ignores_off_topic_celebrity():
    config = FeatureConfig(market_topics=("running",))
    result = network_features(tables(CELEBRITY_OWNERS, CELEBRITY_GRAPH), AS_OF, config)
    assert result.loc["c_celeb", "pagerank"] > result.loc["c_coach", "pagerank"]
    assert result.loc["c_coach", "topic_pagerank"] > 1.0 > result.loc["c_celeb", "topic_pagerank"]
    assert result.loc["c_celeb", "topic_pagerank"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("market_topics", [(), ("knitting",)])
def test_no_market_topics_gives_nan(market_topics):
    config = FeatureConfig(market_topics=market_topics)
    result = network_features(tables(CELEBRITY_OWNERS, CELEBRITY_GRAPH), AS_OF, config)
    assert result["topic_pagerank"].isna().all()
    assert result["pagerank"].notna().all()


@pytest.mark.parametrize(
    "owners, rows",
    [
        (None, [("a", "b", 1, "mention", None)]),
        ({"a": "c1"}, None),
        ({"a": None, "b": None}, [("a", "b", 1, "mention", None)]),
    ],
)
def test_missing_social_tables_give_empty_frames(owners, rows):
    result = network_features(tables(owners, rows), AS_OF, CONFIG)
    pd.testing.assert_frame_equal(result, expected({c: [] for c in FEATURES}, []))


def test_same_inputs_in_any_order_give_the_same_scores():
    rows = CELEBRITY_GRAPH + [("coach", "celeb", 40, "mention", "running")]
    config = FeatureConfig(market_topics=("running",))
    first = network_features(tables(CELEBRITY_OWNERS, rows), AS_OF, config)
    again = network_features(tables(CELEBRITY_OWNERS, rows), AS_OF, config)
    reordered = network_features(
        tables(dict(reversed(CELEBRITY_OWNERS.items())), rows[::-1]), AS_OF, config
    )
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    pd.testing.assert_frame_equal(first, reordered)
