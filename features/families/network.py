"""Network centrality: how much attention a customer's profiles draw in the interaction graph.

The graph spans every profile we see (customers or not): a customer mentioned by influential
non-customers is influential, so non-customers must shape the scores even though they get none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import empty_features
from features.config import FeatureConfig
from features.families.interaction_sums import interaction_sums
from features.families.profiles import customer_codes, latest_profiles
from features.tables import Tables

FAMILY = "network"
FEATURES = {
    "pagerank": "weighted PageRank x number of graph profiles (1 = average), summed over profiles",
    "weighted_in_degree": "recency-decayed mentions/shares/replies received, summed over profiles",
    "topic_pagerank": "PageRank jumping to market-topic-active profiles, same scale; NaN if none",
}
FILL: dict[str, float] = {}
POPULATION_WIDE = True

def network_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Per-customer centrality in the mention/share/reply graph of interactions before as_of.

    Edge source -> target, weight = sum of recency-decayed interactions (interaction_sums.interaction_weights);
    self-interactions are dropped (self-promotion confers no influence). Vertices are all profiles
    in interactions or snapshots, so a profile without interactions still gets baseline PageRank.
    topic_pagerank (after TwitterRank) jumps to profiles in proportion to their decayed market-topic
    graph interactions (likes excluded here too) made or received; NaN when no market topics are
    configured or none is active. The sums over the interactions are features.families.interaction_sums'.
    A customer's value is the sum over their profiles (their share of the network's attention).
    """
    if tables.social_interactions is None or tables.social_profiles is None:
        return empty_features(FEATURES)
    profiles, profile_code = latest_profiles(tables, as_of)
    owned = profiles["customer_id"].notna().to_numpy()
    if not owned.any():
        return empty_features(FEATURES)
    per_profile = interaction_sums(tables, as_of, config).centrality(config.pagerank_damping)
    codes = profile_code[owned]
    return network_by_customer(profiles["customer_id"].loc[owned],
                               {name: values[codes] for name, values in per_profile.items()})


def network_by_customer(owners: pd.Series, per_profile: dict[str, np.ndarray]) -> pd.DataFrame:
    """Each customer's centrality: the sum over their profiles (one row per owned profile, with
    the values of InteractionSums.centrality), i.e. their share of the network's attention."""
    codes, customers = customer_codes(owners)
    out = pd.DataFrame(
        {name: np.bincount(codes, weights=per_profile[name], minlength=len(customers)) for name in FEATURES},
        index=customers,
    )
    return out.astype("float64")
