"""Network centrality: how much attention a customer's profiles draw in the interaction graph."""

from __future__ import annotations

import pandas as pd

from features.config import FeatureConfig
from features.tables import Tables

FAMILY = "network"
FEATURES = {
    "pagerank": "weighted PageRank x number of profiles in the graph (1 = average), summed over profiles",
    "weighted_in_degree": "recency-decayed mentions/shares/replies received, summed over profiles",
    "topic_pagerank": "PageRank with jumps to market-topic-active profiles, same scale; NaN if none",
}
FILL: dict[str, float] = {}
POPULATION_WIDE = True


def network_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Per-customer centrality in the mention/share/reply graph built from interactions before as_of."""
    raise NotImplementedError
