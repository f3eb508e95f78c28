"""The world's calendar: days since the history's start, seasonal demand, sign-ups, snapshots.

Time is float days since the first day of the history; the history is [0, h_end) (up to and
including end_date) and the ground-truth year follows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.synthetic.knobs import (
    MONTHLY_SEASONALITY,
    N_SNAPSHOTS,
    SIGNUP_SEASONALITY_EXPONENT,
    WINDOW_DAYS,
    YEAR_DAYS,
)


@dataclass(frozen=True)
class Calendar:
    """One world's time axis: days (floats) since ``start``, with the season and sign-up curves."""

    start: pd.Timestamp  # first day of the history
    h_end: int  # days; history is [0, h_end), i.e. up to and including end_date
    season: np.ndarray  # demand factor per day over [0, h_end + WINDOW_DAYS)
    cum_season: np.ndarray  # cumulative demand at day boundaries (len = days + 1)
    cum_signup: np.ndarray  # cumulative sign-up intensity over the history's day boundaries
    snapshot_days: np.ndarray  # day index of each social snapshot (quarterly, last = end_date)

    @property
    def start_ns(self) -> int:
        return int(self.start.value)

    def demand(self, t: np.ndarray) -> np.ndarray:
        """Cumulative seasonal demand (in demand-days) at times t."""
        return np.interp(t, np.arange(len(self.cum_season), dtype=np.float64), self.cum_season)

    def at_demand(self, c: np.ndarray) -> np.ndarray:
        """Inverse of ``demand``: the time at which cumulative demand reaches c."""
        return np.interp(c, self.cum_season, np.arange(len(self.cum_season), dtype=np.float64))

    @staticmethod
    def seconds(days: np.ndarray) -> np.ndarray:
        """Float days since start -> whole seconds since start (int64)."""
        return np.floor(np.asarray(days) * 86_400.0).astype(np.int64)

    def to_ns(self, days: np.ndarray) -> np.ndarray:
        """Float days -> int64 epoch ns, truncated to whole seconds."""
        return self.start_ns + self.seconds(days) * 1_000_000_000


def build_calendar(end_date, years: int, growth: float) -> Calendar:
    """The calendar of a history of ``years`` years ending on ``end_date``, sign-ups growing by
    ``growth`` a year."""
    end = pd.Timestamp(end_date).normalize()
    start = end - pd.DateOffset(years=years) + pd.Timedelta(days=1)
    h_end = int((end + pd.Timedelta(days=1) - start).days)
    n_days = h_end + WINDOW_DAYS
    months = pd.date_range(start, periods=n_days, freq="D").month.to_numpy() - 1
    days_in_month = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    monthly = np.asarray(MONTHLY_SEASONALITY)
    monthly = monthly / (monthly @ days_in_month / 365.0)  # mean demand per day over a year = 1
    season = monthly[months]
    cum_season = np.concatenate([[0.0], np.cumsum(season)])
    day_mid = np.arange(h_end) + 0.5
    signup = (
        np.exp(np.log1p(growth) * day_mid / YEAR_DAYS)
        * season[:h_end] ** SIGNUP_SEASONALITY_EXPONENT
    )
    cum_signup = np.concatenate([[0.0], np.cumsum(signup)])
    snaps = [end - pd.DateOffset(months=3 * k) for k in range(N_SNAPSHOTS - 1, -1, -1)]
    snapshot_days = np.array([(s - start).days for s in snaps if s >= start], dtype=np.int64)
    return Calendar(start, h_end, season, cum_season, cum_signup, snapshot_days)
