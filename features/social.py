"""Social reach and engagement: what each customer's own profiles say about their audience."""

from __future__ import annotations

import pandas as pd

from features.config import FeatureConfig
from features.tables import Tables

FAMILY = "social"
FEATURES = {
    "followers_log": "log1p of followers summed over the customer's profiles (latest snapshot each)",
    "follower_growth_90d": "log1p(followers now) - log1p(followers >= 90 days earlier), profiles with history",
    "follower_growth_365d": "log1p(followers now) - log1p(followers >= 365 days earlier), profiles with history",
    "posts": "posts summed over the customer's profiles (latest snapshot each)",
    "engagement_rate": "engagements / (followers + 100) over the latest snapshots; shrinks tiny accounts",
    "influence_score_max": "vendor influence score (0-100), max over networks; NaN if not supplied",
    "n_networks": "number of distinct networks the customer has a profile on",
    "days_since_last_snapshot": "days from the customer's most recent profile snapshot to as_of",
}
FILL: dict[str, float] = {}
POPULATION_WIDE = False


def social_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Per-customer reach, growth and engagement from profile snapshots dated before as_of."""
    raise NotImplementedError
