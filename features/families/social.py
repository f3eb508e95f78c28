"""Social reach and engagement: what each customer's own profiles say about their audience.

Which profiles a customer owns and each profile's latest snapshot come from features.families.profiles,
which every social family shares, so that all of them map profiles the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import empty_features
from features.config import FeatureConfig
from features.encoding import first_appearance_codes
from features.families.profiles import customer_codes, customer_profiles
from features.tables import Tables

FAMILY = "social"
FEATURES = {
    "followers_log": "log1p of followers summed over the customer's profiles (latest snapshots)",
    "follower_growth_90d": "log1p(followers) minus log1p(followers on a snapshot >= 90 days older)",
    "follower_growth_365d": "log1p(followers) minus log1p(followers on a snapshot >= 365d older)",
    "posts": "posts summed over the customer's profiles (latest snapshot each)",
    "engagement_rate": "engagements / (followers + 100), latest snapshots; shrinks tiny accounts",
    "influence_score_max": "vendor influence score (0-100), max over networks; NaN if not supplied",
    "n_networks": "number of distinct networks the customer has a profile on",
    "days_since_last_snapshot": "days from the customer's most recent profile snapshot to as_of",
}
FILL: dict[str, float] = {}
POPULATION_WIDE = False

# Followers added to the denominator of engagement_rate. Without it a 3-follower account with
# 10 likes would look 30x more engaging than a brand; with it, accounts far below ~100 followers
# are pulled towards zero and large accounts keep (almost) their raw rate.
ENGAGEMENT_PSEUDO_FOLLOWERS = 100.0
GROWTH_WINDOWS_DAYS = (90, 365)

_DAY = pd.Timedelta(days=1)


def social_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Per-customer reach, growth and engagement from profile snapshots dated before as_of.

    Across a customer's profiles (one per network, usually): followers, posts and engagements
    are summed (one audience reached through several channels), the vendor score is the max
    (vendors score each network on its own scale of fame), staleness uses the freshest profile.
    """
    profiles = customer_profiles(tables, as_of, GROWTH_WINDOWS_DAYS)
    if profiles.empty:
        return empty_features(FEATURES)

    codes, customers = customer_codes(profiles["customer_id"])
    k = len(customers)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=values, minlength=k)

    followers = profiles["followers"].to_numpy("float64")
    followers_total = total(followers)
    out = pd.DataFrame(index=customers)
    out["followers_log"] = np.log1p(followers_total)
    for d in GROWTH_WINDOWS_DAYS:
        # Growth over the profiles that have history that far back; others neither add nor dilute.
        before = profiles[f"followers_{d}d_before"].to_numpy("float64")
        has_history = ~np.isnan(before)
        growth = np.log1p(total(np.where(has_history, followers, 0.0))) - np.log1p(
            total(np.where(has_history, before, 0.0))
        )
        out[f"follower_growth_{d}d"] = np.where(total(has_history) > 0, growth, np.nan)
    out["posts"] = total(profiles["posts"].to_numpy("float64"))
    out["engagement_rate"] = total(profiles["engagements"].to_numpy("float64")) / (
        followers_total + ENGAGEMENT_PSEUDO_FOLLOWERS
    )
    score_max = np.full(k, np.nan)
    if "influence_score" in profiles.columns:
        np.fmax.at(score_max, codes, profiles["influence_score"].to_numpy("float64"))  # skips NaN
    out["influence_score_max"] = score_max
    network_codes, networks = pd.factorize(profiles["network"])
    # distinct (customer, network) pairs, numbered by first appearance (no sort of the pairs)
    pair_keys = codes * (len(networks) + 1) + network_codes + 1
    pair, n_pairs = first_appearance_codes(pair_keys)
    pairs = np.empty(n_pairs, dtype=pair_keys.dtype)
    pairs[pair] = pair_keys
    out["n_networks"] = np.bincount(pairs // (len(networks) + 1), minlength=k)
    latest = np.full(k, np.iinfo(np.int64).min)
    np.maximum.at(latest, codes, profiles["snapshot_date"].to_numpy("datetime64[ns]").view("int64"))
    out["days_since_last_snapshot"] = (as_of.value - latest) / _DAY.value
    return out[list(FEATURES)].astype("float64")
