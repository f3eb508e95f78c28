"""Season: where in the year the value window starts, and how much of it falls in the peak months.

The same for every customer of a window; it lets a model trained on windows from several seasons
tell a window whose horizon holds the holiday peak from one that does not (with a 91-day horizon
the two differ several-fold in value; with a full year every window holds one peak).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.encoding import customer_index, eligible_customers
from features.tables import Tables

FAMILY = "season"
POPULATION_WIDE = False
FEATURES = {
    "season_sin": "sin(2 pi x day of year of as_of / 365.25): the value window's start in the year",
    "season_cos": "cos(2 pi x day of year of as_of / 365.25)",
    "horizon_peak_share": "share of the days of [as_of, as_of + horizon) in config.peak_months; NaN "
    "with no peak months configured",
}
FILL: dict[str, float] = {}


def season_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """The window's season, the same row for every customer who signed up before as_of."""
    ids = customer_index(eligible_customers(tables.customers, as_of)["customer_id"])
    angle = 2 * np.pi * (as_of.day_of_year - 1) / 365.25
    days = pd.date_range(as_of.normalize(), periods=config.horizon_days, freq="D")
    peak = float(np.isin(days.month, config.peak_months).mean()) if config.peak_months else np.nan
    n = len(ids)
    return pd.DataFrame({"season_sin": np.full(n, np.sin(angle)), "season_cos": np.full(n, np.cos(angle)),
                         "horizon_peak_share": np.full(n, peak)}, index=ids)
