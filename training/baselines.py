"""The BG/NBD + Gamma-Gamma baseline scored on the same test window as the model.

The other baseline, last-H-days revenue, is the history family's ``spend_horizon`` feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.families.btyd import btyd_predictions, fit_btyd, purchase_summary

BASELINES = ("last_h", "bgnbd")  # last_h: features.families.history spend_horizon


@dataclass(frozen=True)
class BgNbdResult:
    """Prediction per customer (NaN where the fit failed) and what happened, for the run's tags."""

    prediction: pd.Series | None
    status: str
    params: dict[str, float]


def bgnbd_value(
    transactions: pd.DataFrame,
    customers: pd.DataFrame,
    cutoff: pd.Timestamp,
    horizon_days: int,
    *,
    penalizer: float = 0.001,
) -> BgNbdResult:
    """Expected gross spend in [cutoff, cutoff + H): BG/NBD purchases x Gamma-Gamma spend.

    Fitted the way an analyst would fit them with lifetimes, on positive amounts before the cutoff
    (daily purchase occasions, observation end the day before the cutoff; Gamma-Gamma on repeat
    buyers; customers who never bought are born at signup): exactly the btyd feature family's
    ``btyd_expected_value`` (features.families.btyd), so the model's own input is the bar it must
    clear. ``customers``: customer_id and signup_date of the customers to score.
    """
    summary = purchase_summary(customers, transactions, cutoff)
    fit = fit_btyd(summary, penalizer)
    if fit.bgnbd is None:
        return BgNbdResult(None, fit.status, {})
    value = btyd_predictions(summary, fit, horizon_days)["btyd_expected_value"]
    if not np.all(np.isfinite(value.to_numpy())):
        return BgNbdResult(None, f"failed: {int((~np.isfinite(value.to_numpy())).sum())} non-finite predictions", {})
    ids = pd.Index(customers["customer_id"], name="customer_id")
    return BgNbdResult(value.reindex(ids).rename("baseline_bgnbd"), fit.status, fit.params)
