"""Topical relevance: how much of a customer's social activity is about the business's market."""

from __future__ import annotations

import pandas as pd

from features.config import FeatureConfig
from features.tables import Tables

FAMILY = "topical"
FEATURES = {
    "topical_share": "share of interactions made or received that are on market topics (before as_of)",
    "topical_share_90d": "the same share over the 90 days before as_of",
    "topical_engagement": "latest snapshot engagements x topical_share, summed over profiles",
}
FILL: dict[str, float] = {}
POPULATION_WIDE = True


def topical_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Per-customer market-topic share of interactions, and engagement weighted by that share."""
    raise NotImplementedError
