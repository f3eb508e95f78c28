"""80% value intervals (training.intervals): calibrated coverage, mass points, bins, the model, a run."""

import json

import numpy as np
import pandas as pd
import pytest

from tests.training.small import SMALL
from training.intervals import (
    MAX_BINS,
    apply_intervals,
    bin_count,
    calibrate_intervals,
    interval_coverage,
    interval_width_median,
)
from training.model import BaselineValueModel, CustomerValueModel, FeatureEncoder
from training.model_files import read_model_files, write_model_files
from training.pipeline import served_interval_table
from training.summary import interval_lines


def customers(n: int, seed: int, *, zero_share: float = 0.5):
    """(predicted, realised) for n exchangeable customers: a lognormal spend scaled by the prediction,
    zero for a share of them (bought nothing) and a few returns (negative values)."""
    rng = np.random.default_rng(seed)
    predicted = rng.lognormal(mean=4.0, sigma=1.2, size=n)
    spend = predicted * rng.lognormal(mean=0.0, sigma=0.8, size=n) / (1 - zero_share)
    bought = rng.random(n) >= zero_share
    returned = rng.random(n) < 0.03
    realised = np.where(bought, spend, 0.0) - np.where(returned, rng.exponential(20.0, size=n), 0.0)
    return predicted, realised


def test_new_customers_exchangeable_with_the_calibration_window_are_inside_about_80_percent_of_the_time():
    table = calibrate_intervals(*customers(20_000, seed=1))
    predicted, realised = customers(20_000, seed=2)
    lo, hi = apply_intervals(table, predicted)
    assert table["level"] == 0.8
    assert len(table["lo"]) == MAX_BINS  # 20,000 rows: the most bins
    assert 0.78 <= interval_coverage(realised, lo, hi) <= 0.82
    assert 0.79 <= table["calibration_coverage"] <= 0.82
    # Binned: low and high predictions are each covered about 80% (one pooled interval would not).
    inside = (lo <= realised) & (realised <= hi)
    quintile = pd.qcut(predicted, 5, labels=False)
    assert pd.Series(inside).groupby(quintile).mean().between(0.75, 0.85).all()


def test_a_mass_of_zeros_at_the_lower_end_gives_80_percent_not_90():
    # 70% of customers buy nothing: q(0.1) is 0, and [q(0.1), q(0.9)] would hold about 90% of them.
    predicted, realised = customers(10_000, seed=3, zero_share=0.7)
    table = calibrate_intervals(np.full(len(predicted), 50.0), realised)  # one prediction: one bin's worth
    assert table["lo"] == [0.0]
    naive = (realised >= 0) & (realised <= np.quantile(realised, 0.9))
    assert naive.mean() > 0.85
    _, fresh = customers(10_000, seed=4, zero_share=0.7)
    lo, hi = apply_intervals(table, np.full(len(fresh), 50.0))
    assert 0.77 <= interval_coverage(fresh, lo, hi) <= 0.83


def test_every_bin_has_its_lower_end_at_or_below_its_upper_end_and_an_interval_for_every_customer():
    table = calibrate_intervals(*customers(5_000, seed=5))
    assert all(lo <= hi for lo, hi in zip(table["lo"], table["hi"], strict=True))
    assert list(table["edges"]) == sorted(table["edges"])
    lo, hi = apply_intervals(table, customers(1_000, seed=6)[0])
    assert np.isfinite(lo).all() and (lo <= hi).all()
    assert interval_width_median(lo, hi) > 0


def test_predictions_outside_the_calibration_range_take_the_end_bins():
    predicted, realised = customers(2_000, seed=7)
    table = calibrate_intervals(predicted, realised)
    top = predicted.max() * 100
    lo, hi = apply_intervals(table, [predicted.min() - 1e6, -5.0, top, np.nan])
    floor = table["scale_floor"][0]  # below the bottom bin's median prediction, its median is the scale
    assert (lo[0], hi[0]) == (table["lo"][0] * floor, table["hi"][0] * floor)
    assert (lo[1], hi[1]) == (table["lo"][0] * floor, table["hi"][0] * floor)
    assert (lo[2], hi[2]) == (table["lo"][-1] * top, table["hi"][-1] * top)
    assert np.isnan(lo[3]) and np.isnan(hi[3])


def test_a_customer_predicted_far_above_the_rest_of_the_top_bin_gets_a_range_that_grows_with_the_prediction():
    predicted, realised = customers(5_000, seed=9)
    table = calibrate_intervals(predicted, realised)
    top_bin = predicted[predicted >= table["edges"][-1]]
    ordinary, exceptional = np.median(top_bin), top_bin.max()
    (_, lo_e), (hi_o, hi_e) = apply_intervals(table, [ordinary, exceptional])
    assert hi_e / hi_o == pytest.approx(exceptional / ordinary)
    assert lo_e <= exceptional <= hi_e  # not a range far below the prediction


def test_a_tiny_calibration_set_still_gives_one_bin_from_its_lowest_to_its_highest_ratio():
    table = calibrate_intervals([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 10.0, -2.0, 7.0, 3.0])
    assert table["edges"] == [] and table["rows"] == [5] and table["calibration_rows"] == 5
    assert table["scale_floor"] == [3.0]  # the median prediction; ratios y / max(prediction, 3)
    assert table["lo"] == pytest.approx([-2.0 / 3]) and table["hi"] == pytest.approx([10.0 / 3])
    lo, hi = apply_intervals(table, [0.5, 6.0])
    assert list(lo) == pytest.approx([-2.0, -4.0]) and list(hi) == pytest.approx([10.0, 20.0])


def test_the_number_of_bins_follows_the_calibration_rows():
    assert [bin_count(n) for n in (0, 5, 399, 400, 2_000, 1_000_000)] == [1, 1, 1, 2, 10, MAX_BINS]


def test_many_equal_predictions_do_not_leave_empty_or_starved_bins():
    # A fallback values every customer without the baseline feature at 0: 60% equal predictions.
    predicted, realised = customers(4_000, seed=8)
    predicted[:2_400] = 0.0
    table = calibrate_intervals(predicted, realised)
    assert sum(table["rows"]) == 4_000
    assert min(table["rows"]) >= 4_000 // bin_count(4_000) // 2
    assert table["edges"][0] > 0  # every zero prediction in the first bin


def test_an_empty_calibration_set_is_refused():
    with pytest.raises(ValueError, match="no calibration rows"):
        calibrate_intervals([np.nan], [1.0])


def test_the_same_inputs_give_the_same_table():
    assert calibrate_intervals(*customers(3_000, seed=9)) == calibrate_intervals(*customers(3_000, seed=9))


def test_coverage_counts_both_ends_as_inside_and_a_missing_interval_as_outside():
    assert interval_coverage([0.0, 5.0, 10.0, 11.0], [0.0] * 4, [10.0] * 4) == 0.75
    assert interval_coverage([1.0, 1.0], [0.0, np.nan], [2.0, np.nan]) == 0.5


def fallback(table=None) -> BaselineValueModel:
    model = BaselineValueModel("last_h", FeatureEncoder(("spend_horizon",)), scale=2.0)
    if table is not None:
        model.interval_table = table
    return model


def test_a_model_stored_without_an_interval_table_gives_missing_intervals():
    lo, hi = fallback().value_interval(np.array([1.0, 50.0, 500.0]))
    assert lo.shape == hi.shape == (3,)
    assert np.isnan(lo).all() and np.isnan(hi).all()


def test_the_interval_table_travels_with_the_model_files(tmp_path):
    table = calibrate_intervals(*customers(1_000, seed=10))
    table["coverage_on_test"] = 0.81
    model = fallback(table)
    stored = read_model_files(write_model_files(model, tmp_path))
    assert stored.interval_table == table
    assert "interval_table" in json.loads((tmp_path / "value_model.json").read_text())["state"]
    values = np.array([0.0, 30.0, 3_000.0])
    np.testing.assert_array_equal(stored.value_interval(values), model.value_interval(values))


def test_a_fallback_is_served_with_its_interval_bins_in_its_own_units():
    # The refit fallback is the same baseline levelled by another scale: its predictions are the
    # evaluation model's times 2 here, so the bins on predicted value must be too.
    predicted, realised = customers(1_000, seed=11)
    halves = [(pd.Series(predicted[s]), pd.Series(realised[s])) for s in (slice(0, 500), slice(500, None))]
    evaluation = BaselineValueModel("last_h", FeatureEncoder(("spend_horizon",)), scale=1.5)
    served = BaselineValueModel("last_h", FeatureEncoder(("spend_horizon",)), scale=3.0)
    table = served_interval_table(evaluation, served, *halves, coverage_on_test=0.8)
    plain = calibrate_intervals(predicted, realised)
    np.testing.assert_allclose(table["edges"], 2 * np.asarray(plain["edges"]))
    assert table["rows"] == plain["rows"]
    # The same customer gets the same range in currency from either model.
    for served_range, plain_range in zip(apply_intervals(table, 2 * predicted), apply_intervals(plain, predicted),
                                         strict=True):
        np.testing.assert_allclose(served_range, plain_range)
    learned = CustomerValueModel("tweedie", FeatureEncoder(("spend_horizon",)), {}, {})
    assert served_interval_table(learned, learned, *halves, coverage_on_test=0.8)["edges"] == plain["edges"]


def test_a_run_that_serves_a_baseline_gives_it_intervals_too(small_base):
    from dataclasses import replace

    from features.ingest.source import load_source
    from training.pandas_engine import PandasFitter, PandasSource
    from training.pipeline import evaluate

    ev = evaluate(PandasSource(load_source(small_base).tables), PandasFitter(), pd.Timestamp("2026-01-01"),
                  replace(SMALL, social_ablation=False))
    assert ev.final_model.kind.startswith("fallback:")
    assert 0.6 <= ev.metrics["test_interval_coverage"] <= 1.0
    assert ev.final_model.interval_table["calibration_rows"] == ev.rows["validation"] + ev.rows["test"]
    lo, hi = ev.final_model.value_interval(ev.final_model.predict_value(ev.test_features))
    assert np.isfinite(lo).all() and (lo <= hi).all()


def test_the_summary_states_the_coverage_and_warns_outside_0_7_to_0_9():
    ok = interval_lines({"test_interval_coverage": 0.812, "interval_level": 0.8})
    assert ok == [("80% value intervals: 0.81 of test customers inside (calibrated on validation)", False)]
    narrow = interval_lines({"test_interval_coverage": 0.62, "interval_level": 0.8})
    assert len(narrow) == 2 and narrow[1][1] and "too narrow" in narrow[1][0]
    assert "too wide" in interval_lines({"test_interval_coverage": 0.95})[1][0]
    assert interval_lines({}) == []


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_world, new_mlflow_store):
    """One tracked training run on the tiny world, in a throwaway SQLite store."""
    from dataclasses import replace

    from training.train import train_run

    folder = tmp_path_factory.mktemp("mlflow-intervals")
    uri = new_mlflow_store(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mp.chdir(folder)
        summary = train_run(tiny_world, model_name="clv-intervals", experiment="clv-intervals",
                            config=replace(SMALL, social_ablation=False), progress=False)
        import mlflow

        client = mlflow.MlflowClient()
        model = mlflow.pyfunc.load_model(f"models:/clv-intervals/{summary.model_version}").unwrap_python_model()
        yield summary, client.get_run(summary.run_id).data, model


def test_a_training_run_logs_the_test_coverage_of_its_80_percent_intervals(run):
    summary, data, _ = run
    assert data.metrics["interval_level"] == 0.8
    assert 0.7 <= data.metrics["test_interval_coverage"] <= 0.9
    assert data.metrics["test_interval_width_median"] >= 0
    assert summary.metrics["test_interval_coverage"] == data.metrics["test_interval_coverage"]


def test_the_registered_model_carries_intervals_calibrated_on_validation_and_test(run):
    summary, data, model = run
    table = model.interval_table
    assert table["calibrated_on"].startswith("validation and test windows")
    assert table["coverage_on_test"] == pytest.approx(data.metrics["test_interval_coverage"])
    assert table["calibration_rows"] == summary.rows["validation"] + summary.rows["test"]
    lo, hi = model.value_interval(pd.Series([0.0, 100.0, 10_000.0]))
    assert np.isfinite(lo).all() and (lo <= hi).all()
