"""The typed contract tables that every feature function receives (see docs/data-contract.md)."""

from __future__ import annotations

from dataclasses import dataclass, fields

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

    def items(self):
        """(name, frame) for every table present."""
        for f in fields(self):
            frame = getattr(self, f.name)
            if frame is not None:
                yield f.name, frame
