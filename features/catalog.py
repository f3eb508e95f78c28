"""The feature families: what each computes, how it is documented, and what missing means.

Every family module (features/families/history.py, social.py, ...) declares ``FAMILY``,
``FEATURES`` (name -> one-line description, in output order) and ``FILL`` (value for customers the
family has no row for; anything not listed stays NaN, because unknown must never silently become
zero), plus one pure function ``<family>_features(tables, as_of, config) -> DataFrame`` indexed by
customer_id that uses only rows dated strictly before ``as_of``. A family whose source table is
absent returns ``unknown_features``: then every customer's value is NaN, whatever the FILL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pandas as pd

from features.config import FeatureConfig
from features.tables import Tables

# Families that exist only because the business sees customers on social media; the training
# ablation drops exactly these to measure what social data adds.
SOCIAL_FAMILIES = ("social", "network", "topical", "coverage")


@dataclass(frozen=True)
class FeatureFamily:
    name: str
    features: dict[str, str]
    compute: Callable[[Tables, pd.Timestamp, FeatureConfig], pd.DataFrame]
    fill: dict[str, float] = field(default_factory=dict)
    # True when a customer's values depend on other customers' rows (graph centrality, revenue of
    # referred customers): the batch scorer computes these once over the whole population and joins
    # them to each chunk instead of recomputing them per chunk.
    population_wide: bool = False
    # Set for families whose columns depend on the source (one per static customer attribute):
    # every column they return starts with this prefix, and ``features`` documents the pattern
    # (e.g. ``attr_<column>``) instead of listing names. The manifest records the actual names.
    dynamic_prefix: str | None = None

    @property
    def is_social(self) -> bool:
        return self.name in SOCIAL_FAMILIES


# attrs key of a family frame that says "nothing is known for anyone" (the source lacks the table).
UNKNOWN = "unknown"


def empty_features(columns: Iterable[str]) -> pd.DataFrame:
    """A zero-row feature frame with the family's float64 columns and a str customer_id index."""
    index = pd.Index([], dtype="str", name="customer_id")
    return pd.DataFrame({c: pd.Series([], dtype="float64", index=index) for c in columns})


def unknown_features(columns: Iterable[str]) -> pd.DataFrame:
    """empty_features marked so that build_features gives every customer NaN instead of the FILL:
    without the source table a count of referrals is unknown, not zero."""
    frame = empty_features(columns)
    frame.attrs[UNKNOWN] = True
    return frame
