"""Where a run's windows fall: the test window one horizon before as_of, training windows before it.

Timeline (H = horizon_days; see docs/evaluation.md):
    training windows: cutoffs test_cutoff - H - k*step, labels [c, c + H) all end by test_cutoff
    test window:      features before test_cutoff = as_of - H, label [test_cutoff, as_of)
    refit windows:    cutoffs as_of - H - k*step (labels end by as_of): the registered model
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.windows import training_cutoffs
from training.config import TrainConfig


@dataclass(frozen=True)
class WindowPlan:
    """Every cutoff of a run. Label windows are [cutoff, cutoff + horizon_days)."""

    as_of: pd.Timestamp
    horizon_days: int
    test_cutoff: pd.Timestamp
    train_cutoffs: tuple[pd.Timestamp, ...]  # evaluation model, oldest first (validation excluded)
    validation_cutoffs: tuple[pd.Timestamp, ...]  # early stopping: the most recent training windows
    refit_cutoffs: tuple[pd.Timestamp, ...]  # registered model, oldest first

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


def plan_windows(as_of: pd.Timestamp, config: TrainConfig) -> WindowPlan:
    """Cutoffs for evaluation and refit; no evaluation label passes the test cutoff as_of - H."""
    horizon = config.horizon_days
    test_cutoff = as_of - pd.Timedelta(days=horizon)
    evaluation = sorted(training_cutoffs(test_cutoff, horizon, config.n_windows, config.step_days))
    refit = sorted(training_cutoffs(as_of, horizon, config.n_windows, config.step_days))
    k = config.validation_windows
    return WindowPlan(as_of, horizon, test_cutoff, tuple(evaluation[:-k]), tuple(evaluation[-k:]),
                      tuple(refit))
