"""Where a run's windows fall: the test window one horizon before as_of, training windows before it.

Timeline (H = horizon_days; see docs/evaluation.md):
    training windows: cutoffs test_cutoff - H - k*step, labels [c, c + H) all end by test_cutoff
    test window:      features before test_cutoff = as_of - H, label [test_cutoff, as_of)
    refit windows:    cutoffs as_of - H - k*step (labels end by as_of): the registered model

Unless the configuration sets them, the number of windows and the step between them are chosen
from the history the data actually has (``plan_windows``): as many windows as fit, up to
MAX_WINDOWS, a quarter apart when the history allows (four seasons), closer together for a young
business, never closer than a quarter of the horizon (windows a few days apart are the same rows
again). Too short a history for an honest out-of-time test is a UserError that says how long a
horizon the data can support.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.errors import UserError
from features.windows import training_cutoffs
from training.config import TrainConfig

MAX_WINDOWS = 8
DEFAULT_STEP_DAYS = 91  # a quarter: windows from every season
MIN_HISTORY_DAYS = 30  # of transactions before a training window's cutoff: something to learn from
MIN_STEP_DAYS = 7


@dataclass(frozen=True)
class WindowPlan:
    """Every cutoff of a run. Label windows are [cutoff, cutoff + horizon_days)."""

    as_of: pd.Timestamp
    horizon_days: int
    test_cutoff: pd.Timestamp
    train_cutoffs: tuple[pd.Timestamp, ...]  # evaluation model, oldest first (validation excluded)
    validation_cutoffs: tuple[pd.Timestamp, ...]  # early stopping: the most recent training windows
    refit_cutoffs: tuple[pd.Timestamp, ...]  # registered model, oldest first
    n_windows: int = 0
    step_days: int = 0
    reason: str = ""  # how n_windows and step_days were chosen

    def describe(self) -> dict[str, object]:
        def day(ts):
            return str(pd.Timestamp(ts).date())

        return {
            "as_of": day(self.as_of),
            "test_cutoff": day(self.test_cutoff),
            "train_cutoffs": [day(c) for c in self.train_cutoffs],
            "validation_cutoffs": [day(c) for c in self.validation_cutoffs],
            "refit_cutoffs": [day(c) for c in self.refit_cutoffs],
        }


def plan_windows(as_of: pd.Timestamp, config: TrainConfig, first_transaction: pd.Timestamp | None = None) -> WindowPlan:
    """Cutoffs for evaluation and refit; no evaluation label passes the test cutoff as_of - H.

    ``first_transaction`` (the earliest the run may see) sizes the windows when the configuration
    leaves n_windows or step_days unset; without it the defaults are MAX_WINDOWS and
    DEFAULT_STEP_DAYS.
    """
    horizon = config.horizon_days
    test_cutoff = as_of - pd.Timedelta(days=horizon)
    n_windows, step_days, reason = _size(test_cutoff - pd.Timedelta(days=horizon), as_of, config,
                                         first_transaction)
    evaluation = sorted(training_cutoffs(test_cutoff, horizon, n_windows, step_days))
    refit = sorted(training_cutoffs(as_of, horizon, n_windows, step_days))
    k = config.validation_windows
    return WindowPlan(as_of, horizon, test_cutoff, tuple(evaluation[:-k]), tuple(evaluation[-k:]),
                      tuple(refit), n_windows, step_days, reason)


def _size(latest_cutoff: pd.Timestamp, as_of: pd.Timestamp, config: TrainConfig,
          first_transaction: pd.Timestamp | None) -> tuple[int, int, str]:
    """(n_windows, step_days, why) for training cutoffs that end at ``latest_cutoff``."""
    needed = config.validation_windows + 1
    horizon = config.horizon_days
    if config.n_windows is not None and config.step_days is not None:
        return config.n_windows, config.step_days, (
            f"{config.n_windows} windows {config.step_days} days apart, as configured")
    if first_transaction is None or pd.isna(first_transaction):
        n = config.n_windows or MAX_WINDOWS
        step = config.step_days or DEFAULT_STEP_DAYS
        return n, step, f"{n} windows {step} days apart (defaults; the history's start is unknown)"
    earliest = pd.Timestamp(first_transaction).normalize() + pd.Timedelta(days=MIN_HISTORY_DAYS)
    room = (latest_cutoff - earliest).days
    history = (as_of - pd.Timestamp(first_transaction).normalize()).days
    shortest = 2 * horizon + MIN_HISTORY_DAYS + MIN_STEP_DAYS * (needed - 1)
    if room < MIN_STEP_DAYS * (needed - 1):
        longest = max(0, (history - MIN_HISTORY_DAYS - MIN_STEP_DAYS * (needed - 1)) // 2)
        raise UserError(
            f"history too short for an out-of-time test with a {horizon}-day horizon: transactions "
            f"start {pd.Timestamp(first_transaction).date()}, {history} days before as_of "
            f"{as_of.date()}, and training needs at least {shortest} (two horizons, "
            f"{MIN_HISTORY_DAYS} days of history before the first window and {needed} windows); "
            + (f"use --horizon-days {longest} or less, or more history" if longest >= 1
               else "more history is needed"))
    if config.step_days is not None:
        step = config.step_days
    else:
        spread = room // (MAX_WINDOWS - 1)
        step = min(DEFAULT_STEP_DAYS, max(_weeks(horizon // 4), _weeks(spread)))
        step = min(step, max(MIN_STEP_DAYS, room // (needed - 1)))
    n = config.n_windows or min(MAX_WINDOWS, room // step + 1)
    if config.n_windows is None and n < needed:
        n, step = needed, max(MIN_STEP_DAYS, room // (needed - 1))
    why = (f"{n} windows {step} days apart: the first cutoff is {MIN_HISTORY_DAYS} days after the first "
           f"transaction ({pd.Timestamp(first_transaction).date()}), the latest one horizon before the "
           f"test cutoff, leaving {room} days for training cutoffs")
    return n, step, why


def _weeks(days: int) -> int:
    """Days rounded down to whole weeks (at least one), so every window starts on the same weekday."""
    return max(MIN_STEP_DAYS, days // 7 * 7)
