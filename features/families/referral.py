"""Referrals: how many customers someone brought in, and what those customers have spent so far.

Population-wide, because a referrer's ``referred_revenue`` reads the transactions of OTHER
customers: engines that never hold a whole table gather what the family reads with ``ReferralSums``
(features.population). Only referrals and transactions dated strictly before as_of count. Without a
referrals table every value is NaN (unknown, not 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.catalog import unknown_features
from features.config import FeatureConfig
from features.encoding import (
    DAY_NS,
    customer_codes,
    customer_index,
    eligible_customers,
    factorize_ids,
    timestamps_ns,
)
from features.ingest.id_sets import IdSet
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
    if tables.referrals is None:
        return unknown_features(FEATURES)
    now = pd.Timestamp(as_of).as_unit("ns").value
    ids = customer_index(eligible_customers(tables.customers, as_of)["customer_id"])
    n = len(ids)

    refs = tables.referrals
    t = timestamps_ns(refs["timestamp"])
    before = t < now
    referrer_ids = refs["referrer_id"][before]
    referred_ids = refs["referred_id"][before]
    t = t[before]

    # Re-sent invitations repeat a pair: a referred customer counts once per referrer, dated by the
    # first referral. Pairs are deduplicated on integer codes.
    referrer = customer_codes(ids, referrer_ids)
    referred, n_referred = factorize_ids(referred_ids)
    valid = (referrer >= 0) & (referred >= 0)
    key = referrer[valid] * max(n_referred, 1) + referred[valid]
    by_pair = np.lexsort((t[valid], key))
    first = np.ones(len(by_pair), dtype=bool)
    first[1:] = key[by_pair][1:] != key[by_pair][:-1]
    pair_rows = np.flatnonzero(valid)[by_pair[first]]
    pair_referrer = referrer[pair_rows]
    pair_t = t[pair_rows]

    # Net revenue before as_of of every customer, looked up for the referred side of each pair.
    everyone = customer_index(tables.customers["customer_id"])
    tx = tables.transactions
    who = customer_codes(everyone, tx["customer_id"], timestamps_ns(tx["timestamp"]) < now)
    # Rows after as_of or of unknown customers go to one extra bin, so no row is copied: every
    # customer's sum adds the same rows in the same order as summing the kept rows alone.
    counted = np.where(who >= 0, who, len(everyone))
    revenue = np.bincount(counted, weights=tx["amount"].to_numpy(dtype="float64"),
                          minlength=len(everyone) + 1)[:len(everyone)]
    referred_pos = customer_codes(everyone, referred_ids.iloc[pair_rows])
    pair_revenue = np.where(referred_pos >= 0, revenue[np.maximum(referred_pos, 0)], 0.0)

    was_referred = customer_codes(ids, referred_ids)
    out = pd.DataFrame(
        {
            "referrals_made": np.bincount(pair_referrer, minlength=n).astype("float64"),
            "referrals_made_365d": np.bincount(
                pair_referrer[pair_t >= now - 365 * DAY_NS], minlength=n
            ).astype("float64"),
            "referred_revenue": np.bincount(pair_referrer, weights=pair_revenue, minlength=n),
            "was_referred": (
                np.bincount(was_referred[was_referred >= 0], minlength=n) > 0
            ).astype("float64"),
        },
        index=ids,
    )
    return out[list(FEATURES)]


def revenue_rows(transactions: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The transactions referral_features reads, summarised: one row per customer with a
    transaction before as_of (their first timestamp, and their net revenue before as_of summed in
    row order, as the family sums it). The family's features are the same from these rows as from
    the transactions themselves, so the batch scorer holds one row per referred customer, not
    every transaction of theirs. Columns: customer_id, timestamp, amount.
    """
    t = timestamps_ns(transactions["timestamp"])
    counted = (t < pd.Timestamp(as_of).as_unit("ns").value) & transactions["customer_id"].notna().to_numpy()
    codes, names = pd.factorize(transactions["customer_id"].loc[counted])
    first = np.full(len(names), np.iinfo(np.int64).max)
    np.minimum.at(first, codes, t[counted])
    amount = np.bincount(codes, weights=transactions["amount"].to_numpy("float64")[counted],
                         minlength=len(names))
    return pd.DataFrame({"customer_id": pd.array(names, dtype="str"),
                         "timestamp": first.view("datetime64[ns]"), "amount": amount})


class ReferralSums:
    """What referral_features reads, gathered from batches: the referrals, the customers they name,
    and the net revenue before as_of of the referred ones (one row each, revenue_rows).

    ``finish`` computes the family from those alone; it equals referral_features on the whole
    tables (every other customer's row would be the family's FILL). Referrals come first, then
    each batch of customers with their transactions (a customer's transactions all in one batch).
    """

    def __init__(self, as_of: pd.Timestamp):
        self.as_of = as_of
        self.referrals: pd.DataFrame | None = None  # None: the source has no referrals table
        self._named = self._referred = IdSet([])
        self._customers: list[pd.DataFrame] = []
        self._revenue: list[pd.DataFrame] = []

    def add_referrals(self, referrals: pd.DataFrame | None) -> None:
        if referrals is None:
            return
        self.referrals = referrals
        # Built once, asked for every batch (IdSet.contains): Arrow's is_in built a hash table of
        # every referred customer for each batch, which grew with the square of the base.
        self._referred = _id_set(referrals["referred_id"])
        self._named = _id_set(pd.concat([referrals["referrer_id"], referrals["referred_id"]]))

    def add_customers(self, customers: pd.DataFrame, transactions: pd.DataFrame) -> None:
        """A batch of customers (customer_id, signup_date) and all their transactions."""
        if self.referrals is None:
            return
        named = self._named.contains(customers["customer_id"])
        self._customers.append(customers.loc[named, ["customer_id", "signup_date"]])
        referred = transactions.loc[self._referred.contains(transactions["customer_id"])]
        self._revenue.append(revenue_rows(referred, self.as_of))

    def finish(self, config: FeatureConfig) -> pd.DataFrame:
        if self.referrals is None:
            return unknown_features(FEATURES)
        customers = pd.concat(self._customers, ignore_index=True) if self._customers else pd.DataFrame(
            {"customer_id": pd.Series([], dtype="str"), "signup_date": pd.Series([], dtype="datetime64[ns]")})
        revenue = pd.concat(self._revenue, ignore_index=True) if self._revenue else revenue_rows(
            pd.DataFrame({"customer_id": pd.Series([], dtype="str"),
                          "timestamp": pd.Series([], dtype="datetime64[ns]"),
                          "amount": pd.Series([], dtype="float64")}), self.as_of)
        tables = Tables(customers=customers, transactions=revenue, referrals=self.referrals)
        return referral_features(tables, self.as_of, config)


def _id_set(ids: pd.Series) -> IdSet:
    """The distinct ids named (missing ones left out: they name no customer)."""
    return IdSet([pa.array(pd.Series(ids, dtype="str").dropna().unique(), type=pa.string())])
