"""Baselines scored on the same test window as the model: last-H-days revenue and BG/NBD + Gamma-Gamma."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

BASELINES = ("last_h", "bgnbd")


def last_h_revenue(
    transactions: pd.DataFrame, customers: pd.Index, cutoff: pd.Timestamp, horizon_days: int
) -> pd.Series:
    """Net revenue (refunds included) in [cutoff - H, cutoff) per customer, 0 without transactions.

    The naive forecast a business already has: "next year looks like last year".
    """
    start = cutoff - pd.Timedelta(days=horizon_days)
    in_window = (transactions["timestamp"] >= start) & (transactions["timestamp"] < cutoff)
    recent = transactions.loc[in_window]
    spend = recent.groupby("customer_id", sort=False)["amount"].sum()
    out = spend.reindex(customers, fill_value=0.0).astype(np.float64)
    out.index.name = "customer_id"
    return out.rename("baseline_last_h")


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
    """Expected net spend in [cutoff, cutoff + H): BG/NBD purchases x Gamma-Gamma spend, fitted with lifetimes.

    Fitted the way an analyst would: positive-amount transactions strictly before the cutoff, daily
    purchase frequency (several orders on one day are one purchase occasion), observation end = the
    day before the cutoff. Gamma-Gamma is fitted on repeat customers with positive mean spend;
    one-time buyers get its population mean (its conditional expectation at frequency 0). Customers
    who signed up but never bought are treated as born at signup with no repeat purchase. Refunds are
    outside this model, so it forecasts gross spend. ``customers``: customer_id and signup_date of the
    customers to score.
    """
    try:
        with warnings.catch_warnings():
            # lifetimes sets a pandas option at import that pandas 3 deprecates; harmless.
            warnings.simplefilter("ignore")
            from lifetimes import BetaGeoFitter, GammaGammaFitter
            from lifetimes.utils import summary_data_from_transaction_data
    except ImportError as exc:  # pragma: no cover - lifetimes is a declared dependency
        return BgNbdResult(None, f"failed: lifetimes not importable ({exc})", {})

    end = cutoff - pd.Timedelta(days=1)
    purchases = transactions.loc[
        (transactions["timestamp"] < cutoff) & (transactions["amount"] > 0),
        ["customer_id", "timestamp", "amount"],
    ]
    if purchases["customer_id"].nunique() < 10:
        return BgNbdResult(
            None, "failed: fewer than 10 customers with purchases before the cutoff", {}
        )
    try:
        with warnings.catch_warnings():
            # lifetimes' optimiser probes invalid regions (log/sqrt of negatives) on its way to the optimum.
            warnings.simplefilter("ignore", RuntimeWarning)
            rfm = summary_data_from_transaction_data(
                purchases,
                "customer_id",
                "timestamp",
                monetary_value_col="amount",
                observation_period_end=end,
                freq="D",
            )
            bgf = BetaGeoFitter(penalizer_coef=penalizer)
            bgf.fit(rfm["frequency"].to_numpy(), rfm["recency"].to_numpy(), rfm["T"].to_numpy())
            repeat = rfm[(rfm["frequency"] > 0) & (rfm["monetary_value"] > 0)]
            if len(repeat) < 10:
                return BgNbdResult(
                    None, "failed: fewer than 10 repeat customers for Gamma-Gamma", {}
                )
            ggf = GammaGammaFitter(penalizer_coef=penalizer)
            ggf.fit(repeat["frequency"].to_numpy(), repeat["monetary_value"].to_numpy())

            ids = pd.Index(customers["customer_id"], name="customer_id")
            table = rfm.reindex(ids)
            never_bought = table["frequency"].isna().to_numpy()
            age_days = (
                (end - pd.to_datetime(customers["signup_date"]))
                .dt.days.clip(lower=0)
                .to_numpy(np.float64)
            )
            frequency = np.where(never_bought, 0.0, table["frequency"].to_numpy(np.float64))
            recency = np.where(never_bought, 0.0, table["recency"].to_numpy(np.float64))
            age = np.where(never_bought, age_days, table["T"].to_numpy(np.float64))
            monetary = np.where(frequency > 0, table["monetary_value"].to_numpy(np.float64), 0.0)
            monetary = np.where(np.isfinite(monetary) & (monetary > 0), monetary, 0.0)
            repeat_mask = monetary > 0
            frequency_gg = np.where(repeat_mask, frequency, 0.0)
            purchases_h = bgf.conditional_expected_number_of_purchases_up_to_time(
                float(horizon_days), frequency, recency, age
            )
            spend = ggf.conditional_expected_average_profit(frequency_gg, monetary)
        value = np.asarray(purchases_h, dtype=np.float64) * np.asarray(spend, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any fitting failure is reported, the run goes on
        return BgNbdResult(None, f"failed: {type(exc).__name__}: {exc}"[:500], {})
    if not np.all(np.isfinite(value)):
        bad = int((~np.isfinite(value)).sum())
        return BgNbdResult(None, f"failed: {bad} non-finite predictions", {})
    params = {f"bgnbd_{k}": float(v) for k, v in bgf.params_.items()}
    params.update({f"gammagamma_{k}": float(v) for k, v in ggf.params_.items()})
    prediction = pd.Series(value, index=ids, name="baseline_bgnbd")
    return BgNbdResult(prediction, f"ok: {len(rfm)} buyers, {len(repeat)} repeat", params)
