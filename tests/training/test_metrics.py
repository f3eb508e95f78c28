import math

import numpy as np
import pandas as pd
import pytest

from training.metrics import (
    decile_table,
    gini,
    gini_weighted,
    norm_gini,
    norm_gini_weighted,
    spearman,
    top_capture,
    value_metrics,
)

ACTUAL = np.array([0.0, 0.0, 1.0, 3.0])


def test_gini_of_actual_ordered_by_prediction_matches_hand_computation():
    # Ordered by prediction (desc): actual 0, 0, 1, 3 -> cumulative shares 0, 0, .25, 1 against
    # positions .25, .5, .75, 1: (-.25 - .5 - .5 + 0) / 4.
    assert gini(ACTUAL, [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-0.3125)
    # Perfect order 3, 1, 0, 0 -> shares .75, 1, 1, 1: (.5 + .5 + .25 + 0) / 4.
    assert gini(ACTUAL, ACTUAL) == pytest.approx(0.3125)


def test_norm_gini_is_one_for_the_perfect_order_and_minus_one_for_the_reverse():
    assert norm_gini(ACTUAL, [1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.0)
    assert norm_gini(ACTUAL, [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_norm_gini_depends_on_order_only():
    assert norm_gini(ACTUAL, [10.0, 20.0, 30.0, 40.0]) == norm_gini(
        ACTUAL, np.log([1.0, 2.0, 3.0, 4.0])
    )


def test_tied_predictions_share_the_mean_of_their_actuals():
    # A constant prediction ranks nobody: every position holds the mean, so the Gini is exactly 0.
    assert norm_gini(ACTUAL, [5.0, 5.0, 5.0, 5.0]) == pytest.approx(0.0)
    # Ties are averaged, so the result does not depend on row order.
    actual = np.array([3.0, 0.0, 1.0, 0.0])
    predicted = np.array([1.0, 1.0, 0.0, 0.0])
    shuffled = [2, 0, 3, 1]
    assert norm_gini(actual, predicted) == norm_gini(actual[shuffled], predicted[shuffled])
    # Top pair holds 1.5 each, bottom pair .5 each: shares .375, .75, .875, 1 against .25, .5, .75, 1
    # sum to .5, so G = .5 / 4 = .125; the perfect order's G is .3125.
    assert norm_gini(actual, predicted) == pytest.approx(0.125 / 0.3125)


def test_negative_actuals_are_kept_and_norm_gini_is_nan_without_positive_total():
    # A refund (negative net value) ranked last is part of the perfect order.
    actual = np.array([2.0, -1.0, 3.0])
    assert norm_gini(actual, [2.0, 1.0, 3.0]) == pytest.approx(1.0)
    assert math.isnan(norm_gini([0.0, 0.0], [1.0, 2.0]))
    assert math.isnan(norm_gini([1.0, -1.0], [1.0, 2.0]))


def test_weighted_gini_equals_gini_of_the_replicated_rows():
    actual = np.array([5.0, 0.0, 2.0, 1.0, 0.0])
    predicted = np.array([3.0, 1.0, 3.0, 2.0, 0.0])
    counts = np.array([[2, 0, 1, 3, 1], [1, 1, 1, 1, 1]])
    got = gini_weighted(actual, predicted, counts)
    for row, value in zip(counts, got):
        assert value == pytest.approx(gini(np.repeat(actual, row), np.repeat(predicted, row)))
    normalised = norm_gini_weighted(actual, predicted, counts)
    assert normalised[1] == pytest.approx(norm_gini(actual, predicted))


def test_top10_capture_is_the_share_of_value_held_by_the_top_tenth():
    actual = np.arange(20.0)  # total 190
    # Top 10% of 20 = 2 customers, predicted highest: actual 19 and 18.
    assert top_capture(actual, actual) == pytest.approx(37.0 / 190.0)
    # A boundary tie gives each tied customer their group's mean: top 1 of 10 tied at the top with
    # actual 9 and 1 -> mean 5 of total 45 (0..9).
    actual = np.arange(10.0)
    predicted = np.zeros(10)
    predicted[[9, 1]] = 1.0
    assert top_capture(actual, predicted) == pytest.approx(5.0 / 45.0)


def test_spearman_uses_ranks_and_is_nan_for_a_constant_prediction():
    assert spearman([1.0, 2.0, 3.0], [10.0, 100.0, 1000.0]) == pytest.approx(1.0)
    assert math.isnan(spearman([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]))


def test_value_metrics_named_with_prefix_and_hand_computed_errors():
    metrics = value_metrics([0.0, 10.0, 30.0], [5.0, 5.0, 50.0], prefix="test_")
    assert list(metrics) == [
        "test_norm_gini",
        "test_spearman",
        "test_top10_capture",
        "test_mae",
        "test_rmse",
        "test_total_error_pct",
    ]
    assert metrics["test_mae"] == pytest.approx((5 + 5 + 20) / 3)
    assert metrics["test_rmse"] == pytest.approx(math.sqrt((25 + 25 + 400) / 3))
    assert metrics["test_total_error_pct"] == pytest.approx(100 * (60 - 40) / 40)
    assert metrics["test_top10_capture"] == pytest.approx(30 / 40)


def test_value_metrics_refuse_non_finite_predictions():
    with pytest.raises(ValueError, match="not finite"):
        value_metrics([1.0, 2.0], [1.0, np.nan])


def test_decile_table_compares_mean_predicted_and_actual_per_decile():
    actual = np.arange(20.0)
    table = decile_table(actual, {"perfect": actual})
    expected = pd.DataFrame(
        {
            "model": ["perfect"] * 10,
            "decile": np.arange(1, 11, dtype=np.int64),
            "customers": np.full(10, 2, dtype=np.int64),
            "mean_predicted": np.arange(0.5, 20.0, 2.0),
            "mean_actual": np.arange(0.5, 20.0, 2.0),
            "share_of_actual": np.arange(1.0, 40.0, 4.0) / 190.0,
        }
    )
    pd.testing.assert_frame_equal(table, expected)


def test_tied_predictions_fall_in_one_decile():
    actual = np.arange(10.0)
    table = decile_table(actual, {"flat": np.zeros(10)})
    assert table[["decile", "customers"]].values.tolist() == [[6, 10]]
