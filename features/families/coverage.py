"""Social coverage: whether we see the customer on social media at all."""

from __future__ import annotations

import pandas as pd

from features.catalog import empty_features
from features.config import FeatureConfig
from features.families.profiles import customer_profiles
from features.tables import Tables

FAMILY = "coverage"
FEATURES = {
    "has_social_profile": "1 if a profile snapshot before as_of links to the customer, else 0",
}
# Absence of a linked profile is itself known (we looked and found none), so it is 0, not NaN. It
# lets the model tell "no social data" apart from "small social presence".
FILL = {"has_social_profile": 0.0}
POPULATION_WIDE = False


def coverage_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """1.0 for every customer owning a profile with a snapshot before as_of (others get FILL 0).

    Ownership is decided as in features.families.profiles.profile_snapshots (newest link wins), so a customer
    has a row here exactly when the social family has one.
    """
    profiles = customer_profiles(tables, as_of)
    if profiles.empty:
        return empty_features(FEATURES)
    customers = pd.Index(
        profiles["customer_id"].unique(), dtype="str", name="customer_id"
    ).sort_values()
    return pd.DataFrame({"has_social_profile": 1.0}, index=customers)
