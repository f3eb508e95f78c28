"""Out-of-time windowing: nothing used for training, early stopping or tuning sees the test window."""

from dataclasses import replace

import numpy as np
import pandas as pd

from features.run_request import default_as_of
from features.tables import Tables
from tests.training.small import SMALL
from training.config import TrainConfig
from training.pandas_engine import PandasFitter, PandasSource
from training.pipeline import evaluate
from training.plan import plan_windows


def day(text):
    return pd.Timestamp(text)


def test_plan_puts_the_test_cutoff_one_horizon_before_as_of_and_every_label_before_it():
    plan = plan_windows(day("2026-01-01"), TrainConfig(n_windows=4, step_days=91))
    assert plan.test_cutoff == day("2025-01-01")
    assert plan.validation_cutoffs == (day("2024-01-02"),)  # the most recent training window
    assert plan.train_cutoffs == (day("2023-04-04"), day("2023-07-04"), day("2023-10-03"))
    horizon = pd.Timedelta(days=365)
    assert all(
        c + horizon <= plan.test_cutoff for c in plan.train_cutoffs + plan.validation_cutoffs
    )
    # The registered model's windows end by as_of; the latest of them is the test window itself.
    assert plan.refit_cutoffs == (
        day("2024-04-03"),
        day("2024-07-03"),
        day("2024-10-02"),
        day("2025-01-01"),
    )
    assert all(c + horizon <= plan.as_of for c in plan.refit_cutoffs)


def test_as_of_defaults_to_the_day_after_the_latest_transaction():
    transactions = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "timestamp": pd.to_datetime(["2025-03-01 10:00", "2025-12-31 23:59"]).astype(
                "datetime64[ns]"
            ),
            "amount": [1.0, 2.0],
        }
    )
    customers = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "signup_date": pd.to_datetime(["2025-01-01"] * 2).astype("datetime64[ns]"),
        }
    )
    assert default_as_of(Tables(customers, transactions).transactions["timestamp"].max()) == day("2026-01-01")


def test_evaluation_model_is_unchanged_by_anything_in_the_test_window(tiny_tables):
    """Rewriting every transaction dated on or after the test cutoff must not move the evaluation
    model (its training and early stopping labels all end by the cutoff), only its test score."""
    config = replace(SMALL, social_ablation=False, shap_sample=100)
    as_of = default_as_of(tiny_tables.transactions["timestamp"].max())
    honest = evaluate(PandasSource(tiny_tables), PandasFitter(), as_of, config)

    cutoff = honest.plan.test_cutoff
    tx = tiny_tables.transactions
    late = (tx["timestamp"] >= cutoff).to_numpy()
    rng = np.random.default_rng(0)
    rewritten = tx.assign(
        amount=np.where(late, rng.permutation(tx["amount"].to_numpy()) * 3.0, tx["amount"])
    )
    leaked = evaluate(PandasSource(replace(tiny_tables, transactions=rewritten)), PandasFitter(), as_of, config)

    assert late.sum() > 100
    assert honest.model.booster_strings == leaked.model.booster_strings
    assert (
        honest.rows["train"] == leaked.rows["train"]
        and honest.rows["validation"] == leaked.rows["validation"]
    )
    assert honest.metrics["test_norm_gini"] != leaked.metrics["test_norm_gini"]
    assert (
        max(honest.plan.train_cutoffs + honest.plan.validation_cutoffs) + pd.Timedelta(days=365)
        <= cutoff
    )
