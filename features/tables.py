"""The typed contract tables that every feature function receives (see docs/data-contract.md)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd

REQUIRED_TABLES = ("customers", "transactions")
OPTIONAL_TABLES = ("social_profiles", "social_interactions", "referrals")
TABLE_NAMES = REQUIRED_TABLES + OPTIONAL_TABLES


@dataclass(frozen=True)
class Tables:
    """Validated contract tables. Optional tables are None when the source has none.

    Guaranteed dtypes (ids are pandas ``str``; times are naive UTC ``datetime64[ns]``):
    - customers: customer_id (unique), signup_date, then static attributes
      (text as ``category``, numbers numeric).
    - transactions: customer_id, timestamp, amount (float64, finite; negative = refund);
      optional order_id (str), quantity (float64), category (str), channel (str), margin (float64).
    - social_profiles: profile_id, customer_id (NaN when not a customer), network, snapshot_date,
      followers, following, posts, engagements (float64, >= 0); optional influence_score (0-100).
    - social_interactions: source_profile_id, target_profile_id, timestamp, kind; optional topic.
    - referrals: referrer_id, referred_id (customer ids), timestamp.
    """

    customers: pd.DataFrame
    transactions: pd.DataFrame
    social_profiles: pd.DataFrame | None = None
    social_interactions: pd.DataFrame | None = None
    referrals: pd.DataFrame | None = None
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def items(self):
        """(name, frame) for every table present."""
        for f in fields(self):
            if f.name in TABLE_NAMES and (frame := getattr(self, f.name)) is not None:
                yield f.name, frame

    def derived(self, key: Hashable, compute: Callable[[], Any], *, as_of=None) -> Any:
        """compute() once per key for these tables, for values several feature families share.

        Values that depend on a cutoff pass ``as_of``; only the latest cutoff's are kept, since
        training windows visit cutoffs one after another. The tables must not be modified after
        the first call (frames are treated as immutable inputs throughout).
        """
        if as_of is not None:
            if self._derived.get("__as_of__") != as_of:
                for stale in [k for k in self._derived if isinstance(k, tuple) and k[0] == "__at__"]:
                    del self._derived[stale]
                self._derived["__as_of__"] = as_of
            key = ("__at__", key)
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]
