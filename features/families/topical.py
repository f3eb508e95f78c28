"""Topical relevance: how much of a customer's social activity is about the business's market.

An audience only matters to the business if it listens on the business's topics: a fitness
retailer gains little from a celebrity chef. The share of on-topic interactions turns raw
engagement into context-aware influence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import empty_features
from features.config import FeatureConfig
from features.families.interaction_sums import RECENT_DAYS, interaction_sums
from features.families.profiles import customer_codes, latest_profiles
from features.tables import Tables

FAMILY = "topical"
FEATURES = {
    "topical_share": "share of interactions made or received that are on market topics",
    "topical_share_90d": f"the same share over the {RECENT_DAYS} days before as_of",
    "topical_engagement": "latest snapshot engagements x topical_share, summed over profiles",
    "topical_reach_log": "log1p of latest-snapshot followers x the profile's market-topic share, summed "
    "over profiles: audience that cares about the market",
}
FILL: dict[str, float] = {}
POPULATION_WIDE = True


def topical_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Per-customer market-topic share of interactions, and engagement and reach weighted by that share.

    Every interaction (all kinds, likes included: a like on a running post still says the audience
    cares about running) counts for both its author and its target; one with the same profile on
    both ends counts once (features.families.interaction_sums counts them). Interactions without a topic
    are left out of the denominators. NaN where nothing is known; an empty frame when no market
    topics are configured, the interactions carry no topic, or a social table is missing.
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
    counts = interaction_sums(tables, as_of, config).counts
    codes = profile_code[owned]
    profiles = everyone.loc[owned]
    return topical_by_customer(profiles["customer_id"], profiles["engagements"].to_numpy("float64"),
                               profiles["followers"].to_numpy("float64"),
                               {name: values[codes] for name, values in counts.items()})


def topical_by_customer(owners: pd.Series, engagements: np.ndarray, followers: np.ndarray,
                        counts: dict[str, np.ndarray]) -> pd.DataFrame:
    """Each customer's topical features from their profiles' rows: owner, latest engagements and
    followers, and the InteractionSums.counts of the profile.

    Across a customer's profiles the share is interaction-weighted (sum of on-topic / sum of
    topic-known interactions); topical engagement and topical reach (followers x the profile's
    share) are summed, the reach then log1p-ed. Both are NaN where no profile has a known share.
    """
    codes, customers = customer_codes(owners)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=values, minlength=len(customers))

    def share(on: np.ndarray, of: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(of > 0, on / of, np.nan)

    profile_share = share(counts["on_topic"], counts["known"])
    topical_engagement = engagements * profile_share
    topical_reach = followers * profile_share
    has_share = total(~np.isnan(profile_share)) > 0
    out = pd.DataFrame(
        {
            "topical_share": share(total(counts["on_topic"]), total(counts["known"])),
            "topical_share_90d": share(total(counts["on_topic_90d"]), total(counts["known_90d"])),
            "topical_engagement": np.where(
                has_share, total(np.nan_to_num(topical_engagement)), np.nan
            ),
            "topical_reach_log": np.where(
                has_share, np.log1p(total(np.nan_to_num(topical_reach))), np.nan
            ),
        },
        index=customers,
    )
    return out[list(FEATURES)].astype("float64")
