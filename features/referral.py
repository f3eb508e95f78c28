"""Referrals: how many customers someone brought in, and what those customers have spent so far.

Population-wide, because a referrer's ``referred_revenue`` reads the transactions of OTHER
customers; the batch scorer computes it once over everyone. Only referrals and transactions dated
strictly before as_of count. Without a referrals table every value is NaN (unknown, not 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.history import (
    DAY_NS,
    customer_codes,
    customer_index,
    eligible_customers,
    timestamps_ns,
)
from features.tables import Tables

FAMILY = "referral"
POPULATION_WIDE = True

FEATURES = {
    "referrals_made": "distinct customers this customer referred before as_of",
    "referrals_made_365d": "of those, referred in the 365 days before as_of (first referral date)",
    "referred_revenue": "net revenue before as_of of the customers this customer referred",
    "was_referred": "1 if another customer referred this one before as_of, else 0",
}
FILL = {name: 0.0 for name in FEATURES}


def referral_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Referral counts, referred customers' revenue and referred status per eligible customer."""
    now = pd.Timestamp(as_of).as_unit("ns").value
    ids = customer_index(eligible_customers(tables.customers, as_of)["customer_id"])
    n = len(ids)
    if tables.referrals is None:
        return pd.DataFrame(np.nan, index=ids, columns=list(FEATURES), dtype="float64")

    refs = tables.referrals
    t = timestamps_ns(refs["timestamp"])
    refs = pd.DataFrame(
        {"referrer_id": refs["referrer_id"].array, "referred_id": refs["referred_id"].array, "t": t}
    ).loc[t < now]
    # Re-sent invitations repeat a pair: a referred customer counts once per referrer, dated by the
    # first referral.
    pairs = refs.groupby(["referrer_id", "referred_id"], sort=False, observed=True, dropna=True)[
        "t"
    ].min().reset_index()

    referred = pd.Index(pairs["referred_id"].unique())
    tx = tables.transactions
    t_tx = timestamps_ns(tx["timestamp"])
    before = t_tx < now
    tx = tx.loc[before] if not before.all() else tx
    who = customer_codes(referred, tx["customer_id"])
    mine = who >= 0
    revenue = np.bincount(
        who[mine], weights=tx["amount"].to_numpy(dtype="float64")[mine], minlength=len(referred)
    )

    referrer = customer_codes(ids, pairs["referrer_id"])
    counted = referrer >= 0
    referrer = referrer[counted]
    pair_t = pairs["t"].to_numpy()[counted]
    pair_revenue = revenue[referred.get_indexer(pairs["referred_id"])][counted]

    out = pd.DataFrame(
        {
            "referrals_made": np.bincount(referrer, minlength=n).astype("float64"),
            "referrals_made_365d": np.bincount(
                referrer[pair_t >= now - 365 * DAY_NS], minlength=n
            ).astype("float64"),
            "referred_revenue": np.bincount(referrer, weights=pair_revenue, minlength=n),
            "was_referred": ids.isin(referred).astype("float64"),
        },
        index=ids,
    )
    return out[list(FEATURES)]
