"""The feature families: what each computes, how it is documented, and what missing means.

Every family module (history.py, social.py, ...) declares ``FAMILY``, ``FEATURES`` (name ->
one-line description, in output order) and ``FILL`` (value for customers the family has no row
for; anything not listed stays NaN, because unknown must never silently become zero), plus one
pure function ``<family>_features(tables, as_of, config) -> DataFrame`` indexed by customer_id
that uses only rows dated strictly before ``as_of``.
"""

from __future__ import annotations

from collections.abc import Callable
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
