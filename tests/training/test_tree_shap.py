"""training.tree_shap gives LightGBM's own pred_contrib values, for every kind of split the model can hold."""

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training import tree_shap as ts

ROWS, FEATURES, CATEGORY = 2_000, 6, 3


def world(seed: int, missing: float = 0.2):
    """Numbers with NaNs and exact zeros, and one categorical column (codes, NaN and a negative)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(ROWS, FEATURES))
    X[:, CATEGORY] = rng.integers(0, 8, ROWS)
    X[rng.random(ROWS) < missing, 1] = np.nan
    X[rng.random(ROWS) < 0.3, 2] = 0.0
    X[rng.random(ROWS) < missing / 2, CATEGORY] = np.nan
    y = X[:, 0] + 2 * np.nan_to_num(X[:, 1]) + 3 * (X[:, CATEGORY] == 2) + (X[:, 2] == 0) + rng.normal(size=ROWS)
    scoring = rng.normal(size=(500, FEATURES))
    scoring[:, CATEGORY] = rng.integers(-1, 11, 500)  # unseen codes and a negative one
    scoring[rng.random(500) < missing, 1] = np.nan
    scoring[rng.random(500) < 0.3, 2] = 0.0
    scoring[rng.random(500) < missing, CATEGORY] = np.nan
    return X, y, scoring


def fit(X, y, rounds=30, categorical=(CATEGORY,), **params):
    params = {"objective": "regression", "verbosity": -1, "num_threads": 2, "seed": 0, **params}
    return lgb.train(params, lgb.Dataset(X, y, categorical_feature=list(categorical)), rounds)


def lightgbm_shap(booster, X, num_iteration=None):
    return booster.predict(X, raw_score=True, pred_contrib=True, num_iteration=num_iteration)


# Every kind of split and tree the fast paths must read as LightGBM does (test_tree_predict uses them too).
MODEL_KINDS = {
    "depth7": {"num_leaves": 31, "max_depth": 7},
    "unbounded": {"num_leaves": 15, "max_depth": -1},
    "zero-as-missing": {"num_leaves": 15, "zero_as_missing": True},
    "no-missing": {"num_leaves": 8, "use_missing": False},
    "bagging": {"num_leaves": 8, "bagging_fraction": 0.7, "bagging_freq": 1},
    "one-hot-categories": {"num_leaves": 4, "max_cat_to_onehot": 16},
    "tweedie": {"num_leaves": 31, "min_data_in_leaf": 5, "max_depth": 4, "objective": "tweedie"},
}


@pytest.mark.parametrize("params", list(MODEL_KINDS.values()), ids=list(MODEL_KINDS))
@pytest.mark.parametrize("categorical", [(CATEGORY,), ()], ids=["categorical", "numeric"])
def test_equals_lightgbm_pred_contrib(params, categorical):
    X, y, scoring = world(0)
    if params.get("objective") == "tweedie":
        y = np.exp(y / 4)
    booster = fit(X, y, categorical=categorical, **params)
    assert ts.shap_tables(booster) is not None  # the fast path, not the fallback
    np.testing.assert_allclose(ts.tree_shap(booster, scoring), lightgbm_shap(booster, scoring), rtol=0, atol=1e-10)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), leaves=st.integers(2, 40), depth=st.sampled_from([-1, 2, 5, 8]),
       rounds=st.integers(1, 25), missing=st.floats(0.0, 0.6))
def test_equals_lightgbm_on_random_models(seed, leaves, depth, rounds, missing):
    X, y, scoring = world(seed, missing)
    booster = fit(X, y, rounds=rounds, num_leaves=leaves, max_depth=depth, min_data_in_leaf=10)
    np.testing.assert_allclose(ts.tree_shap(booster, scoring), lightgbm_shap(booster, scoring), rtol=0, atol=1e-10)


def test_rows_sum_to_the_raw_prediction_and_the_last_column_is_the_expected_value():
    X, y, scoring = world(1)
    booster = fit(X, y)
    values = ts.tree_shap(booster, scoring)
    np.testing.assert_allclose(values.sum(axis=1), booster.predict(scoring, raw_score=True), atol=1e-10)
    assert np.unique(values[:, -1]).size == 1


def test_no_rows_and_rows_spread_over_threads_in_uneven_blocks():
    X, y, scoring = world(6)
    booster = fit(X, y, num_threads=3)
    assert ts.tree_shap(booster, scoring[:0]).shape == (0, FEATURES + 1)
    many = np.concatenate([scoring] * 3)[: 3 * ts.ROWS_PER_TASK + 7]  # 4 blocks, the last short, 3 threads
    np.testing.assert_allclose(ts.tree_shap(booster, many), lightgbm_shap(booster, many), rtol=0, atol=1e-10)


def test_uses_only_the_first_num_iteration_trees():
    X, y, scoring = world(2)
    booster = fit(X, y, rounds=40)
    np.testing.assert_allclose(ts.tree_shap(booster, scoring, 7), lightgbm_shap(booster, scoring, 7), atol=1e-10)
    assert not np.allclose(ts.tree_shap(booster, scoring, 7), ts.tree_shap(booster, scoring, 40))


def test_constant_trees_only_move_the_expected_value():
    X, _, scoring = world(3)
    booster = fit(X, np.full(ROWS, 5.0), rounds=3)  # nothing to split on: single-leaf trees
    values = ts.tree_shap(booster, scoring)
    np.testing.assert_allclose(values, lightgbm_shap(booster, scoring), atol=1e-10)
    assert not values[:, :-1].any()


def test_models_the_tables_do_not_cover_get_lightgbms_own_values(monkeypatch):
    X, y, scoring = world(4)
    deep = fit(X, y, num_leaves=31, max_depth=-1)
    monkeypatch.setattr(ts, "MAX_TABLE_ENTRIES", 100)  # as for a model of very deep trees
    assert ts.shap_tables(deep) is None
    np.testing.assert_allclose(ts.tree_shap(deep, scoring), lightgbm_shap(deep, scoring), rtol=0, atol=0)

    linear = fit(X, np.nan_to_num(y), categorical=(), linear_tree=True, num_leaves=8)
    assert ts.shap_tables(linear) is None  # LightGBM has no SHAP for linear trees either, and says so
    with pytest.raises(lgb.basic.LightGBMError, match="linear trees"):
        ts.tree_shap(linear, scoring)


def test_the_booster_thread_count_is_respected_within_the_process_openmp_limit(monkeypatch):
    X, y, _ = world(5)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert ts.booster_threads(fit(X, y, rounds=2, num_threads=1)) == 1
    assert ts.booster_threads(fit(X, y, rounds=2, num_threads=3)) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as in the scorer's workers
    assert ts.booster_threads(fit(X, y, rounds=2, num_threads=3)) == 1


def test_values_within_lightgbms_zero_threshold_read_as_zero():
    """LightGBM drops values within 1e-35f (a float32 widened) when it reads a row: they split as 0.0."""
    X, y, _ = world(7)
    booster = fit(X, y, num_leaves=31, min_data_in_leaf=5)
    zero = float(np.float32(1e-35))
    values = np.array([0.0, -0.0, zero, -zero, 1e-35, -1e-35, np.nextafter(zero, 1), np.nextafter(-zero, -1),
                       np.nan, 1.0, -1.0], np.float64)
    scoring = np.random.default_rng(0).choice(values, size=(2_000, FEATURES))
    np.testing.assert_allclose(ts.tree_shap(booster, scoring), lightgbm_shap(booster, scoring), rtol=0, atol=1e-10)
