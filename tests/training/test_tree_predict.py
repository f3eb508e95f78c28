"""training.tree_predict gives LightGBM's own raw scores, bit for bit, for every kind of split the model can hold."""

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.training.test_tree_shap import CATEGORY, FEATURES, MODEL_KINDS, ROWS, fit, world
from training import tree_predict as tp


@pytest.fixture(autouse=True)
def fast_path_for_any_rows(monkeypatch):
    """These tests' inputs are small: build the arrays for them too (BUILD_MIN_ROWS guards real runs)."""
    monkeypatch.setattr(tp, "BUILD_MIN_ROWS", 0)


def lightgbm_raw(booster, X, num_iteration=None):
    return booster.predict(X, raw_score=True, num_iteration=num_iteration)


def assert_same_bits(ours, theirs):
    assert ours.dtype == np.float64 and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs), f"{np.count_nonzero(ours != theirs)} rows differ"


@pytest.mark.parametrize("params", [*MODEL_KINDS.values(), {"num_leaves": 8, "objective": "binary"}],
                         ids=[*MODEL_KINDS, "binary"])
@pytest.mark.parametrize("categorical", [(CATEGORY,), ()], ids=["categorical", "numeric"])
def test_equals_lightgbm_raw_score_bit_for_bit(params, categorical):
    X, y, scoring = world(0)
    if params.get("objective") == "tweedie":
        y = np.exp(y / 4)
    if params.get("objective") == "binary":
        y = (y > np.median(y)).astype(float)
    booster = fit(X, y, categorical=categorical, **params)
    assert tp.forest_of(booster) is not None  # the fast path, not the fallback
    assert_same_bits(tp.raw_score(booster, scoring), lightgbm_raw(booster, scoring))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), leaves=st.integers(2, 60), depth=st.sampled_from([-1, 2, 5, 8]),
       rounds=st.integers(1, 25), missing=st.floats(0.0, 0.6), zero_as_missing=st.booleans())
def test_equals_lightgbm_on_random_models(seed, leaves, depth, rounds, missing, zero_as_missing):
    X, y, scoring = world(seed, missing)
    booster = fit(X, y, rounds=rounds, num_leaves=leaves, max_depth=depth, min_data_in_leaf=5,
                  zero_as_missing=zero_as_missing)
    assert_same_bits(tp.raw_score(booster, scoring), lightgbm_raw(booster, scoring))
    assert_same_bits(tp.raw_score(booster, X), lightgbm_raw(booster, X))


def test_edge_values_decide_as_lightgbm_does():
    """Around LightGBM's zero (1e-35f, a float32 widened, not the double 1e-35), at the thresholds
    themselves, and categories that are fractional, negative, NaN, infinite or past every bitset."""
    X, y, _ = world(7)
    for zero_as_missing in (False, True):
        booster = fit(X, y, num_leaves=31, zero_as_missing=zero_as_missing, min_data_in_leaf=5)
        thresholds = [float(t) for t in _numeric_thresholds(booster.dump_model())]
        zero = float(np.float32(1e-35))
        specials = [0.0, -0.0, zero, -zero, 1e-35, -1e-35, np.nextafter(zero, 1), np.nextafter(-zero, -1),
                    np.nan, np.inf, -np.inf, -0.5, -1.0, -0.999, 2.7, 7.0, 31.0, 32.0, 1e10, -1e10]
        values = np.array(specials + thresholds + [np.nextafter(t, np.inf) for t in thresholds], np.float64)
        rng = np.random.default_rng(0)
        scoring = rng.choice(values, size=(4_000, FEATURES))
        assert_same_bits(tp.raw_score(booster, scoring), lightgbm_raw(booster, scoring))


def test_the_first_num_iteration_trees_and_the_best_iteration_as_lightgbm_reads_them():
    X, y, scoring = world(2)
    booster = fit(X, y, rounds=40)
    assert_same_bits(tp.raw_score(booster, scoring, 7), lightgbm_raw(booster, scoring, 7))
    assert not np.array_equal(tp.raw_score(booster, scoring, 7), tp.raw_score(booster, scoring, 40))
    booster.best_iteration = 12  # as early stopping leaves it: predict's default
    assert_same_bits(tp.raw_score(booster, scoring), lightgbm_raw(booster, scoring))
    assert_same_bits(tp.raw_score(booster, scoring, -1), lightgbm_raw(booster, scoring, -1))


def test_constant_trees_and_a_loaded_model_string():
    X, y, scoring = world(3)
    constant = fit(X, np.full(ROWS, 5.0), rounds=3)  # nothing to split on: single-leaf trees
    assert_same_bits(tp.raw_score(constant, scoring), lightgbm_raw(constant, scoring))
    loaded = lgb.Booster(model_str=fit(X, y, rounds=10).model_to_string())
    assert_same_bits(tp.raw_score(loaded, scoring), lightgbm_raw(loaded, scoring))


def test_no_rows_and_rows_spread_over_threads_in_uneven_blocks():
    X, y, scoring = world(6)
    booster = fit(X, y, num_threads=3)
    assert tp.raw_score(booster, scoring[:0]).shape == (0,)
    many = np.concatenate([scoring] * 3)[: 3 * tp.ROWS_PER_BLOCK + 7]  # 4 blocks, the last short, 3 threads
    assert_same_bits(tp.raw_score(booster, many), lightgbm_raw(booster, many))
    with pytest.raises(ValueError, match="feature columns"):
        tp.raw_score(booster, scoring[:, :2])


def test_models_it_does_not_describe_get_lightgbms_own_predict():
    X, y, scoring = world(4)
    linear = fit(X, np.nan_to_num(y), categorical=(), linear_tree=True, num_leaves=8)
    classes = fit(X, (y > 0).astype(int) + (y > 2), objective="multiclass", num_class=3, num_leaves=8)
    forest = fit(X, y, boosting="rf", bagging_fraction=0.7, bagging_freq=1, num_leaves=8)
    for booster in (linear, classes, forest):
        assert tp.forest_of(booster) is None
        np.testing.assert_array_equal(tp.raw_score(booster, scoring), lightgbm_raw(booster, scoring))


def _numeric_thresholds(model: dict):
    stack = [tree["tree_structure"] for tree in model["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_index" in node:
            if node["decision_type"] != "==":
                yield node["threshold"]
            stack += [node["left_child"], node["right_child"]]


def test_a_booster_is_built_on_its_first_large_predict_and_small_ones_before_go_to_lightgbm(monkeypatch):
    monkeypatch.setattr(tp, "BUILD_MIN_ROWS", 1_000)
    X, y, scoring = world(8)
    booster = fit(X, y)
    assert_same_bits(tp.raw_score(booster, scoring), lightgbm_raw(booster, scoring))  # 500 rows
    assert booster not in tp._cache
    assert_same_bits(tp.raw_score(booster, X), lightgbm_raw(booster, X))  # 2,000 rows: built
    assert list(tp._cache[booster]) == [-1]
    assert_same_bits(tp.raw_score(booster, scoring[:10]), lightgbm_raw(booster, scoring[:10]))  # kept


def test_compiling_at_install_runs_both_kernels_whatever_the_build_threshold(monkeypatch):
    monkeypatch.setattr(tp, "BUILD_MIN_ROWS", 50_000)  # as in a real run: the tiny model is below it
    calls = {"_raw_rows": 0, "_numeric_rows": 0}
    for name in calls:
        kernel = getattr(tp, name)

        def spy(*args, name=name, kernel=kernel):
            calls[name] += args[3] - args[2]
            return kernel(*args)

        monkeypatch.setattr(tp, name, spy)
    tp.compile_kernels()
    assert calls == {"_raw_rows": 200, "_numeric_rows": 200}


@pytest.mark.parametrize("zero_as_missing", [False, True])
def test_categorical_splits_become_derived_features_unless_a_split_treats_zero_as_missing(zero_as_missing):
    """The numeric walk takes each distinct categorical split as one derived feature; a forest with a
    zero-as-missing split keeps the mixed walk. Both give LightGBM's bits, whichever walks."""
    X, y, scoring = world(3)
    booster = fit(X, y, categorical=(CATEGORY,), num_leaves=31, zero_as_missing=zero_as_missing)
    forest = tp.forest_of(booster)
    categorical = int(((forest.packed >> 51) & 1).sum())
    assert categorical > 0
    if zero_as_missing:
        assert forest.numeric is None
    else:
        derived = forest.numeric.feature
        assert 0 < len(derived) <= categorical and set(derived.tolist()) == {CATEGORY}
        assert not ((forest.numeric.packed >> 51) & 1).any()
    for mixed in (False, True):
        kernel, arrays = tp.kernel_arrays(forest, mixed)
        out = np.empty(len(scoring))
        kernel(np.ascontiguousarray(scoring, np.float64), out, 0, len(scoring), *arrays)
        assert_same_bits(out, lightgbm_raw(booster, scoring))
