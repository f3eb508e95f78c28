"""Social coverage: whether we see the customer on social media at all."""

from __future__ import annotations

import pandas as pd

from features.config import FeatureConfig
from features.tables import Tables

FAMILY = "coverage"
FEATURES = {
    "has_social_profile": "1 if a profile snapshot dated before as_of is linked to the customer, else 0",
}
FILL = {"has_social_profile": 0.0}
POPULATION_WIDE = False


def coverage_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """1.0 for every customer with a linked profile snapshot before as_of (others are filled with 0)."""
    raise NotImplementedError
