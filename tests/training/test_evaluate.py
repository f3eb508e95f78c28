import numpy as np
import pandas as pd
import pytest

from training.charts import decile_chart
from training.evaluate import (
    deciles,
    evaluate_predictions,
    paired_bootstrap_lift,
    refit_bootstrap_lift,
)
from training.metrics import norm_gini


def noisy_world(n: int, seed: int):
    rng = np.random.default_rng(seed)
    actual = np.where(rng.random(n) < 0.5, 0.0, rng.gamma(1.0, 100.0, n))
    good = actual + rng.normal(0.0, 20.0, n)
    bad = actual + rng.normal(0.0, 200.0, n)
    return actual, good, bad


def test_identical_predictions_have_zero_lift_and_a_zero_interval():
    actual, good, _ = noisy_world(500, seed=0)
    lift = paired_bootstrap_lift(actual, good, good, resamples=50, seed=1)
    assert (lift.estimate, lift.lo, lift.hi, lift.customers) == (0.0, 0.0, 0.0, 500)


def test_a_clearly_better_model_has_a_positive_interval():
    actual, good, bad = noisy_world(2000, seed=1)
    lift = paired_bootstrap_lift(actual, good, bad, resamples=100, seed=2)
    assert lift.estimate == pytest.approx(norm_gini(actual, good) - norm_gini(actual, bad))
    assert 0 < lift.lo < lift.estimate < lift.hi


def test_two_models_of_equal_quality_get_an_interval_covering_zero():
    rng = np.random.default_rng(3)
    actual = rng.gamma(1.0, 100.0, 1500)
    a = actual + rng.normal(0.0, 60.0, 1500)
    b = actual + rng.normal(0.0, 60.0, 1500)
    lift = paired_bootstrap_lift(actual, a, b, resamples=200, seed=4)
    assert lift.lo < 0 < lift.hi


def test_bootstrap_is_reproducible_for_a_seed_and_varies_across_seeds():
    actual, good, bad = noisy_world(300, seed=5)
    first = paired_bootstrap_lift(actual, good, bad, resamples=40, seed=7)
    again = paired_bootstrap_lift(actual, good, bad, resamples=40, seed=7, chunk=7)
    other = paired_bootstrap_lift(actual, good, bad, resamples=40, seed=8)
    assert first == again
    assert (first.lo, first.hi) != (other.lo, other.hi)


def refits(n: int = 3000, pairs: int = 5):
    """Models with and without some columns that carry nothing: they differ by refitting noise only."""
    rng = np.random.default_rng(3)
    actual = rng.gamma(1.0, 100.0, n)
    shared = actual + rng.normal(0.0, 80.0, n)
    with_ = [shared + np.random.default_rng(100 + k).normal(0.0, 40.0, n) for k in range(pairs)]
    without = [shared + np.random.default_rng(200 + k).normal(0.0, 40.0, n) for k in range(pairs)]
    return actual, with_, without


def test_refitting_noise_alone_cannot_give_an_interval_that_excludes_zero():
    actual, with_, without = refits()
    # One refit pair alone can look significant (here: worse, interval below zero)...
    single = paired_bootstrap_lift(actual, with_[1], without[1], resamples=200, seed=1)
    assert single.hi < 0
    # ...pooled over the refits, the interval holds their spread and covers zero.
    pooled = refit_bootstrap_lift(actual, with_, without, resamples=200, seed=1)
    assert pooled.lo < 0 < pooled.hi
    assert pooled.estimate == pytest.approx(np.mean(
        [norm_gini(actual, a) - norm_gini(actual, b) for a, b in zip(with_, without)]))


def test_one_refit_pair_is_the_paired_bootstrap():
    actual, good, bad = noisy_world(400, seed=9)
    assert refit_bootstrap_lift(actual, [good], [bad], resamples=30, seed=2) == paired_bootstrap_lift(
        actual, good, bad, resamples=30, seed=2)


def test_metrics_are_aligned_on_customer_id_not_position():
    index = pd.Index(["a", "b", "c"], name="customer_id")
    actual = pd.Series([0.0, 10.0, 30.0], index=index)
    model = pd.Series([50.0, 5.0, 5.0], index=["c", "a", "b"])
    baseline = pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"])
    metrics = evaluate_predictions(actual, model, {"last_h": baseline})
    assert metrics["test_mae"] == pytest.approx((5 + 5 + 20) / 3)
    assert metrics["baseline_last_h_test_norm_gini"] == pytest.approx(1.0)
    assert set(metrics) == {
        f"{prefix}{m}"
        for prefix in ("test_", "baseline_last_h_test_")
        for m in ("norm_gini", "spearman", "top10_capture", "mae", "rmse", "total_error_pct")
    }


def test_decile_chart_writes_a_png(tmp_path):
    actual, good, bad = noisy_world(200, seed=6)
    index = pd.RangeIndex(200)
    table = deciles(
        pd.Series(actual, index=index),
        {"model": pd.Series(good, index=index), "last_h": pd.Series(bad, index=index)},
    )
    assert set(table["model"]) == {"model", "last_h"}
    decile_chart(table, tmp_path / "deciles.png")
    assert (tmp_path / "deciles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
