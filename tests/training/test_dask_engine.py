"""The pieces of Dask training that need no cluster: choosing rounds like LightGBM's early stopping."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from training.dask_engine import LABEL, _curve, early_stopping_rounds


def test_early_stopping_keeps_the_best_round_before_patience_runs_out():
    curve = np.array([5.0, 4.0, 3.0, 3.5, 3.2, 2.9, 3.0, 3.1, 2.5])
    # Patience 2: rounds 4 and 5 do not beat round 3 (3.0), so the run stops there and the later
    # 2.9 is never seen. Patience 3 reaches 2.9 at round 6 and then 2.5 at round 9.
    assert early_stopping_rounds(curve, patience=2) == 3
    assert early_stopping_rounds(curve, patience=3) == 9


def test_early_stopping_keeps_the_first_of_equal_best_rounds():
    assert early_stopping_rounds(np.array([2.0, 1.0, 1.0, 1.0]), patience=10) == 2


@pytest.mark.parametrize(
    "objective",
    [
        {"objective": "tweedie", "tweedie_variance_power": 1.5, "metric": "tweedie"},
        {"objective": "binary", "metric": "binary_logloss"},
        {"objective": "gamma", "metric": "gamma"},
        {"objective": "regression", "metric": "l2"},
    ],
)
def test_validation_curve_matches_lightgbm_own_metric(objective):
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(600, 3)), columns=["a", "b", "c"])
    value = np.exp(X["a"].to_numpy()) * (rng.random(600) < 0.6)
    y = {"binary": (value > 0).astype(float), "gamma": value + 0.5}.get(
        objective["objective"], value
    )
    train = lgb.Dataset(X, y, free_raw_data=False)
    recorded: dict = {}
    booster = lgb.train(
        {**objective, "verbosity": -1, "num_threads": 1, "num_leaves": 7},
        train,
        num_boost_round=15,
        valid_sets=[lgb.Dataset(X, y, reference=train)],
        callbacks=[lgb.record_evaluation(recorded)],
    )
    sums, rows = _curve(booster.model_to_string(), X.assign(**{LABEL: y}), objective, 15)
    lightgbm_curve = np.asarray(recorded["valid_0"][objective["metric"]])
    np.testing.assert_allclose(sums / rows, lightgbm_curve, rtol=1e-6)
