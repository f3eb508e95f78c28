"""Topical relevance: how much of a customer's social activity is about the business's market.

An audience only matters to the business if it listens on the business's topics: a fitness
retailer gains little from a celebrity chef. The share of on-topic interactions turns raw
engagement into context-aware influence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.profiles import (
    customer_codes,
    empty_features,
    interactions_before,
    latest_profiles,
    market_topic_mask,
    profile_codes,
)
from features.tables import Tables

FAMILY = "topical"
FEATURES = {
    "topical_share": "share of interactions made or received that are on market topics",
    "topical_share_90d": "the same share over the 90 days before as_of",
    "topical_engagement": "latest snapshot engagements x topical_share, summed over profiles",
}
FILL: dict[str, float] = {}
POPULATION_WIDE = True

RECENT_DAYS = 90


def topical_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Per-customer market-topic share of interactions, and engagement weighted by that share.

    Every interaction (all kinds, likes included: a like on a running post still says the audience
    cares about running) counts for both its author and its target; one with the same profile on
    both ends counts once. Interactions without a topic are left out of the denominators. Across
    a customer's profiles the share is interaction-weighted (sum of on-topic / sum of topic-known
    interactions) and topical engagement is summed. NaN where nothing is known; an empty frame when
    no market topics are configured, the interactions carry no topic, or a social table is missing.
    """
    interactions = tables.social_interactions
    if (
        interactions is None
        or tables.social_profiles is None
        or not config.market_topics
        or "topic" not in interactions.columns
    ):
        return empty_features(FEATURES)
    everyone, profile_code = latest_profiles(tables, as_of)
    owned = everyone["customer_id"].notna().to_numpy()
    if not owned.any():
        return empty_features(FEATURES)
    profiles, profile_code = everyone.loc[owned], profile_code[owned]

    inter = interactions_before(tables, as_of)
    n = profile_codes(tables).n
    source, target = inter.source, inter.target
    received = target != source  # a profile interacting with itself counts once

    known = tables.social_interactions["topic"].notna().to_numpy()[inter.rows]
    on_topic = market_topic_mask(tables, config.market_topics)[inter.rows]
    recent = inter.timestamp_ns >= (as_of - pd.Timedelta(days=RECENT_DAYS)).value

    def made_or_received(flag: np.ndarray) -> np.ndarray:
        """Per owned profile, the number of its interactions (made or received) with the flag."""
        # Counting the flagged rows' codes: integer counts, no float copy of every row.
        per_node = np.bincount(source[flag], minlength=n) + np.bincount(target[received & flag], minlength=n)
        return per_node[profile_code]

    known_all, on_topic_all = made_or_received(known), made_or_received(on_topic)
    known_90d, on_topic_90d = made_or_received(known & recent), made_or_received(on_topic & recent)

    codes, customers = customer_codes(profiles["customer_id"])

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=values, minlength=len(customers))

    def share(on: np.ndarray, of: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(of > 0, on / of, np.nan)

    profile_share = share(on_topic_all, known_all)
    topical_engagement = profiles["engagements"].to_numpy("float64") * profile_share
    has_share = total(~np.isnan(profile_share)) > 0
    out = pd.DataFrame(
        {
            "topical_share": share(total(on_topic_all), total(known_all)),
            "topical_share_90d": share(total(on_topic_90d), total(known_90d)),
            "topical_engagement": np.where(
                has_share, total(np.nan_to_num(topical_engagement)), np.nan
            ),
        },
        index=customers,
    )
    return out[list(FEATURES)].astype("float64")
