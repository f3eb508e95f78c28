"""Network centrality: how much attention a customer's profiles draw in the interaction graph.

The graph spans every profile we see (customers or not): a customer mentioned by influential
non-customers is influential, so non-customers must shape the scores even though they get none.
"""

from __future__ import annotations

import igraph
import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.social import customer_codes, empty_features, profile_snapshots
from features.tables import Tables
from features.topical import on_market_topic

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
    timestamps: pd.Series, as_of: pd.Timestamp, half_life_days: float
) -> np.ndarray:
    """0.5 ** (age in days / half-life): a recent interaction counts more than an old one."""
    age_days = ((as_of - timestamps) / _DAY).to_numpy("float64")
    return np.power(0.5, age_days / half_life_days)


def scaled_pagerank(
    graph: igraph.Graph, weights: list[float], damping: float, reset: np.ndarray | None = None
) -> np.ndarray:
    """(Personalised) PageRank x vertex count, so 1 is the average whatever the graph's size."""
    if reset is None:
        scores = graph.pagerank(weights=weights, damping=damping, directed=True)
    else:
        # Dangling profiles (who interact with nobody) also jump by the reset vector in igraph.
        scores = graph.personalized_pagerank(
            weights=weights, damping=damping, directed=True, reset=reset.tolist()
        )
    return np.asarray(scores, dtype="float64") * graph.vcount()


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
    interactions, snapshots = tables.social_interactions, tables.social_profiles
    if interactions is None or snapshots is None:
        return empty_features(FEATURES)
    profiles = profile_snapshots(snapshots, as_of)
    owned = profiles["customer_id"].notna().to_numpy()
    if not owned.any():
        return empty_features(FEATURES)

    # Leakage: only interactions strictly before as_of (they also decide which vertices exist).
    inter = interactions.loc[
        (interactions["timestamp"] < as_of)
        & interactions["kind"].isin(GRAPH_KINDS)
        & interactions["source_profile_id"].notna()
        & interactions["target_profile_id"].notna()
    ]
    m = len(inter)
    node_codes, nodes = pd.factorize(
        pd.concat(
            [inter["source_profile_id"], inter["target_profile_id"], profiles.index.to_series()],
            ignore_index=True,
        )
    )
    n = len(nodes)
    source, target = node_codes[:m].astype("int64"), node_codes[m : 2 * m].astype("int64")
    profile_code = node_codes[2 * m :]
    weight = interaction_weights(inter["timestamp"], as_of, config.interaction_half_life_days)
    on_topic = (
        on_market_topic(inter["topic"], config.market_topics)
        if config.market_topics and "topic" in inter.columns
        else None
    )
    # Self-mentions are self-promotion, not influence.
    not_self = source != target
    source, target, weight = source[not_self], target[not_self], weight[not_self]

    # Parallel interactions become one edge carrying their summed weight.
    edge_keys, edge_of = np.unique(source * n + target, return_inverse=True)
    edge_weight = np.bincount(edge_of, weights=weight, minlength=len(edge_keys)).tolist()
    graph = igraph.Graph(
        n, list(zip((edge_keys // n).tolist(), (edge_keys % n).tolist())), directed=True
    )

    per_node = {
        "pagerank": scaled_pagerank(graph, edge_weight, config.pagerank_damping),
        "weighted_in_degree": np.bincount(target, weights=weight, minlength=n),
        "topic_pagerank": np.full(n, np.nan),
    }
    if on_topic is not None:
        topic_weight = weight * on_topic[not_self]
        activity = np.bincount(source, weights=topic_weight, minlength=n) + np.bincount(
            target, weights=topic_weight, minlength=n
        )
        if activity.sum() > 0:
            per_node["topic_pagerank"] = scaled_pagerank(
                graph, edge_weight, config.pagerank_damping, reset=activity / activity.sum()
            )

    # A customer's centrality is the sum over their profiles: their share of the attention.
    codes, customers = customer_codes(profiles["customer_id"].loc[owned])
    owned_codes = profile_code[owned]
    out = pd.DataFrame(
        {
            name: np.bincount(codes, weights=values[owned_codes], minlength=len(customers))
            for name, values in per_node.items()
        },
        index=customers,
    )
    return out[list(FEATURES)].astype("float64")
