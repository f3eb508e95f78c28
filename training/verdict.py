"""Whether the data can train a model, and whether the trained model is worth serving.

Before fitting: enough customers with value in the training and test windows (``check_enough_data``;
otherwise a UserError says what is missing). After fitting: a model that barely learned (a
handful of boosting rounds, near-constant predictions) or that ranks below a baseline on the test
window is not served (``judge``); the run registers the best baseline in its place, labelled as a
fallback (training.model.BaselineValueModel), or stops when there is none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import UserError
from training.config import TrainConfig
from training.model import BASELINE_FEATURES, CustomerValueModel

MIN_ROUNDS = 5  # fewer boosting rounds than this: early stopping found nothing to learn
MIN_DISTINCT_PREDICTIONS = 10
MIN_RELATIVE_SPREAD = 1e-6  # standard deviation / mean of the predictions


@dataclass(frozen=True)
class Verdict:
    """What the run serves: ``learned`` (the fitted model) or ``fallback`` (the baseline named)."""

    kind: str
    reason: str
    baseline: str | None = None

    @property
    def model_kind(self) -> str:
        return "lightgbm" if self.kind == "learned" else f"fallback:{self.baseline}"


def check_enough_data(train_buyers: int, test_customers: int, test_buyers: int, windows: int,
                      config: TrainConfig) -> None:
    """Stop, naming what is missing, when the windows cannot train a model or judge one."""
    missing = []
    if train_buyers < config.min_train_buyers:
        missing.append(f"the training windows hold {train_buyers} customers with value in their horizon "
                       f"(need {config.min_train_buyers})")
    if test_buyers < config.min_test_buyers:
        missing.append(f"the test window holds {test_buyers} of {test_customers} customers with value "
                       f"(need {config.min_test_buyers} to judge a ranking)")
    if windows < config.validation_windows + 1:
        missing.append(f"{windows} training window(s) have history (need {config.validation_windows + 1})")
    if missing:
        raise UserError("too little data to train: " + "; ".join(missing)
                        + ". Add customers or history, or use a shorter --horizon-days")


def judge(model: CustomerValueModel, predicted: pd.Series, metrics: dict[str, float],
          baselines: dict[str, pd.Series]) -> Verdict:
    """``learned`` when the model learned something and ranks at least as well as every baseline on
    the test window; otherwise ``fallback`` to the best-ranking baseline that can be served."""
    problems = []
    rounds = min(model.rounds.values()) if model.rounds else 0
    if rounds < MIN_ROUNDS:
        problems.append(f"early stopping kept {rounds} boosting round(s)")
    values = predicted.to_numpy(dtype="float64")
    distinct = len(np.unique(np.round(values, 9)))
    spread = float(np.std(values) / abs(np.mean(values))) if len(values) and np.mean(values) else 0.0
    if distinct < MIN_DISTINCT_PREDICTIONS or spread < MIN_RELATIVE_SPREAD:
        problems.append(f"predictions are nearly constant ({distinct} distinct values)")
    gini = metrics["test_norm_gini"]
    scores = {name: metrics.get(f"baseline_{name}_test_norm_gini", np.nan) for name in baselines}
    better = {name: score for name, score in scores.items() if np.isfinite(score) and score > gini}
    if better:
        best = max(better, key=better.get)
        problems.append(f"it ranks below the {best} baseline on the test window "
                        f"(normalised Gini {gini:.4f} < {better[best]:.4f})")
    if not problems:
        return Verdict("learned", f"normalised Gini {gini:.4f} at least every baseline's "
                       + ", ".join(f"{n} {s:.4f}" for n, s in scores.items() if np.isfinite(s)))
    servable = {name: score for name, score in scores.items() if name in BASELINE_FEATURES and np.isfinite(score)}
    if not servable:
        raise UserError("the model is not worth serving (" + "; ".join(problems) + ") and no baseline "
                        "could be computed to serve instead: too little data to train")
    best = max(servable, key=servable.get)
    return Verdict("fallback", "; ".join(problems) + f": the {best} baseline is served instead", best)
