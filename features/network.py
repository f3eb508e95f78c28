"""Network centrality: how much attention a customer's profiles draw in the interaction graph.

The graph spans every profile we see (customers or not): a customer mentioned by influential
non-customers is influential, so non-customers must shape the scores even though they get none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.pagerank import stationary_distribution, transition_matrix
from features.profiles import (
    customer_codes,
    empty_features,
    interactions_before,
    latest_profiles,
    market_topic_mask,
    profile_codes,
)
from features.tables import Tables

FAMILY = "network"
FEATURES = {
    "pagerank": "weighted PageRank x number of graph profiles (1 = average), summed over profiles",
    "weighted_in_degree": "recency-decayed mentions/shares/replies received, summed over profiles",
    "topic_pagerank": "PageRank jumping to market-topic-active profiles, same scale; NaN if none",
}
FILL: dict[str, float] = {}
POPULATION_WIDE = True

# Being mentioned, shared or replied to costs the author effort and signals attention. Likes are
# left out: they are one click, cheap to buy and to automate, and would swamp the other kinds.
GRAPH_KINDS = ("mention", "share", "reply")

_DAY = pd.Timedelta(days=1)


def interaction_weights(
    timestamp_ns: np.ndarray, as_of: pd.Timestamp, half_life_days: float
) -> np.ndarray:
    """0.5 ** (age in days / half-life): a recent interaction counts more than an old one."""
    age_days = (as_of.value - timestamp_ns) / _DAY.value
    return np.power(0.5, age_days / half_life_days)


def scaled_pagerank(transition, damping: float, reset: np.ndarray | None = None) -> np.ndarray:
    """(Personalised) PageRank x vertex count, so 1 is the average whatever the graph's size."""
    return stationary_distribution(transition, damping, reset) * transition.shape[0]


def network_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Per-customer centrality in the mention/share/reply graph of interactions before as_of.

    Edge source -> target, weight = sum of recency-decayed interactions (see interaction_weights);
    self-interactions are dropped (self-promotion confers no influence). Vertices are all profiles
    in interactions or snapshots, so a profile without interactions still gets baseline PageRank.
    topic_pagerank (after TwitterRank) jumps to profiles in proportion to their decayed market-topic
    graph interactions (likes excluded here too) made or received; NaN when no market topics are
    configured or none is active.
    A customer's value is the sum over their profiles (their share of the network's attention).
    """
    if tables.social_interactions is None or tables.social_profiles is None:
        return empty_features(FEATURES)
    profiles, profile_code = latest_profiles(tables, as_of)
    owned = profiles["customer_id"].notna().to_numpy()
    if not owned.any():
        return empty_features(FEATURES)

    inter = interactions_before(tables, as_of)
    in_graph = tables.social_interactions["kind"].isin(GRAPH_KINDS).to_numpy()[inter.rows]
    # Self-mentions are self-promotion, not influence.
    keep = in_graph & (inter.source != inter.target)
    weight = interaction_weights(inter.timestamp_ns[keep], as_of, config.interaction_half_life_days)
    topic_weight = None
    if config.market_topics and "topic" in tables.social_interactions.columns:
        topic_weight = weight * market_topic_mask(tables, config.market_topics)[inter.rows][keep]

    # Vertices: profiles with a snapshot or a graph interaction (self ones included) before as_of,
    # renumbered 0..n-1 in order of profile code.
    is_vertex = np.zeros(profile_codes(tables).n, dtype=bool)
    is_vertex[profile_code] = True
    is_vertex[inter.source[in_graph]] = True
    is_vertex[inter.target[in_graph]] = True
    vertex_of = (np.cumsum(is_vertex) - 1).astype(np.int32)
    n = int(is_vertex.sum())
    del is_vertex, in_graph
    source, target = vertex_of[inter.source[keep]], vertex_of[inter.target[keep]]
    del keep

    per_node = {
        "weighted_in_degree": np.bincount(target, weights=weight, minlength=n),
        "topic_pagerank": np.full(n, np.nan),
    }
    reset = None
    if topic_weight is not None:
        activity = np.bincount(source, weights=topic_weight, minlength=n) + np.bincount(
            target, weights=topic_weight, minlength=n
        )
        reset = activity / activity.sum() if activity.sum() > 0 else None
        del topic_weight

    # Parallel interactions add up into one edge of the transition matrix, built once for both.
    transition = transition_matrix(n, source, target, weight)
    del source, target, weight
    per_node["pagerank"] = scaled_pagerank(transition, config.pagerank_damping)
    if reset is not None:
        # Dangling profiles (who interact with nobody) also jump by the reset vector.
        per_node["topic_pagerank"] = scaled_pagerank(transition, config.pagerank_damping, reset)
    del transition

    # A customer's centrality is the sum over their profiles: their share of the attention.
    codes, customers = customer_codes(profiles["customer_id"].loc[owned])
    owned_vertices = vertex_of[profile_code[owned]]
    out = pd.DataFrame(
        {
            name: np.bincount(codes, weights=values[owned_vertices], minlength=len(customers))
            for name, values in per_node.items()
        },
        index=customers,
    )
    return out[list(FEATURES)].astype("float64")
