"""Labels: the value each customer produced in the horizon window that starts at as_of.

The label window is [as_of, as_of + horizon), exactly the rows every feature is forbidden to read.
A customer with no transactions in the window produced 0. Labels are only honest when the source
actually covers the whole window, otherwise recent windows would look like churn: checked here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.encoding import (
    DAY_NS,
    customer_codes,
    customer_index,
    eligible_customers,
    timestamps_ns,
)
from features.tables import Tables


def label_column(tables: Tables, config: FeatureConfig) -> str:
    """The transactions column the label sums: ``amount`` (revenue) or ``margin``."""
    if config.label == "revenue":
        return "amount"
    if config.label == "margin":
        if "margin" not in tables.transactions.columns:
            raise ValueError(
                "config.label is 'margin' but the transactions table has no 'margin' column; "
                "add margin to the source or set label='revenue'"
            )
        return "margin"
    raise ValueError(f"config.label must be 'revenue' or 'margin', not {config.label!r}")


def label_coverage_end(tables: Tables) -> pd.Timestamp:
    """The latest transaction timestamp (NaT when there are no transactions)."""
    return pd.Timestamp(tables.transactions["timestamp"].max())


def check_label_coverage(tables: Tables, as_of: pd.Timestamp, horizon_days: int) -> None:
    """Raise ValueError unless transactions reach the last day of [as_of, as_of + horizon)."""
    as_of = pd.Timestamp(as_of)
    needed = as_of + pd.Timedelta(days=horizon_days) - pd.Timedelta(days=1)
    end = label_coverage_end(tables)
    if pd.isna(end) or end < needed:
        shown = "no transactions" if pd.isna(end) else f"transactions end on {end}"
        raise ValueError(
            f"label window [{as_of}, {as_of + pd.Timedelta(days=horizon_days)}) is not covered: "
            f"{shown}, but labels need data up to at least {needed}; use an earlier cutoff or a "
            "shorter horizon"
        )


def label_values(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.Series:
    """Net revenue (or margin) per eligible customer in [as_of, as_of + config.horizon_days), "label".

    Rows: customers who signed up before as_of, sorted by customer_id (the rows of build_features).
    Refunds count negatively; a missing margin counts as 0.
    """
    horizon_days = config.horizon_days
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, not {horizon_days}")
    column = label_column(tables, config)
    as_of = pd.Timestamp(as_of).as_unit("ns")
    check_label_coverage(tables, as_of, horizon_days)

    ids = customer_index(eligible_customers(tables.customers, as_of)["customer_id"])
    t = timestamps_ns(tables.transactions["timestamp"])
    start = as_of.value
    window = (t >= start) & (t < start + horizon_days * DAY_NS)
    tx = tables.transactions.loc[window, ["customer_id", column]]
    who = customer_codes(ids, tx["customer_id"])
    mine = who >= 0
    values = np.nan_to_num(tx[column].to_numpy(dtype="float64"))[mine]
    label = np.bincount(who[mine], weights=values, minlength=len(ids)).astype("float64")
    return pd.Series(label, index=ids, name="label")
