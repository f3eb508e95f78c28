"""Value rank, percentile and tier of every scored customer: the global order marketing works from.

Ranks need the whole population, so they are computed once over all predictions (two columns per
customer: the output itself), after every chunk has been scored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# (tier, share of customers in percent): a customer's tier is the first whose top share holds its rank.
TIERS = (("top_1pct", 1), ("top_10pct", 10), ("top_50pct", 50))
REST = "rest"
TIER_NAMES = tuple(name for name, _ in TIERS) + (REST,)


def tier_sizes(n: int) -> dict[str, int]:
    """Number of customers ranked into each top tier: ceil(n x share), in exact integer arithmetic."""
    return {name: -(-n * percent // 100) for name, percent in TIERS}


def value_ranks(customer_id, predicted_value) -> pd.DataFrame:
    """value_rank (1 = most valuable), value_percentile and value_tier, in the input's row order.

    Ties in predicted_value are broken by customer_id (ascending) so the ranking is reproducible.
    value_percentile = 100 x (n - rank + 1) / n: the share of customers ranked at or below this one
    (100 for the top customer). Tiers are exact counts of the ranking: top_1pct = the first
    ceil(n / 100) ranks, top_10pct = the rest of the first ceil(n / 10), top_50pct = the rest of
    the first ceil(n / 2), rest = everyone else.
    """
    ids = pa.array(customer_id, type=pa.string())
    values = np.asarray(predicted_value, dtype="float64")
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ValueError(f"{bad} predicted values are not finite numbers: the model is broken")
    n = len(values)
    order = pc.sort_indices(
        pa.table({"value": values, "customer_id": ids}),
        sort_keys=[("value", "descending"), ("customer_id", "ascending")],
    ).to_numpy()
    rank = np.empty(n, dtype="int64")
    rank[order] = np.arange(1, n + 1, dtype="int64")
    tier = np.full(n, REST, dtype=object)
    for name, size in reversed(list(tier_sizes(n).items())):
        tier[rank <= size] = name
    return pd.DataFrame({
        "value_rank": rank,
        "value_percentile": 100.0 * (n - rank + 1) / max(n, 1),
        "value_tier": pd.array(tier, dtype="str"),
    })
