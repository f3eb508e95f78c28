"""Drift checks: the population stability index of today's customers against the training test window."""

import numpy as np
import pandas as pd
import pytest

from training.drift import (
    PREDICTIONS,
    THRESHOLD,
    add_counts,
    bin_counts,
    drift_report,
    drift_sentence,
    numeric_reference,
    psi,
    reference,
)


def population(n: int, seed: int, *, spend_scale: float = 1.0, region_shares=(0.5, 0.3, 0.2)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    orders = rng.poisson(2, n).astype(float)
    return pd.DataFrame({
        "orders": orders,
        "spend": np.where(orders > 0, rng.gamma(2.0, 50.0, n) * spend_scale, np.nan),
        "region": rng.choice(["north", "south", "west"], n, p=list(region_shares)),
    })


def report_for(ref_frame, today, predictions_ref=None, predictions_today=None, **kwargs):
    ref = reference(ref_frame, predictions_ref if predictions_ref is not None else ref_frame["orders"].to_numpy(),
                    categorical=["region"])
    counts = bin_counts(ref, today, predictions_today if predictions_today is not None else today["orders"].to_numpy())
    return drift_report(ref, counts, **kwargs)


def test_the_same_kind_of_population_is_stable():
    report = report_for(population(20_000, 1), population(20_000, 2))
    assert report["status"] == "ok"
    assert max(report["features"].values()) < 0.02
    assert report["predictions"] < 0.02


def test_the_reference_population_itself_has_no_drift_at_all():
    frame = population(5_000, 1)
    report = report_for(frame, frame)
    assert report["features"] == {"orders": 0.0, "spend": 0.0, "region": 0.0}
    assert report["predictions"] == 0.0


def test_spend_three_times_higher_is_drift_and_names_the_feature():
    report = report_for(population(20_000, 1), population(20_000, 2, spend_scale=3.0))
    assert report["status"] == "drift"
    assert report["drifted"] == ["spend"]
    assert report["features"]["spend"] > THRESHOLD
    assert "spend" in drift_sentence(report) and "DRIFT" in drift_sentence(report)


def test_a_changed_category_mix_is_drift():
    report = report_for(population(20_000, 1), population(20_000, 2, region_shares=(0.1, 0.2, 0.7)))
    assert "region" in report["drifted"]


def test_categories_never_seen_in_training_count_as_other():
    today = population(2_000, 2).assign(region="east")
    report = report_for(population(20_000, 1), today)
    assert report["features"]["region"] > THRESHOLD


def test_missing_values_have_their_own_bin():
    today = population(20_000, 2)
    today.loc[today.index[: 10_000], "spend"] = np.nan  # half the customers lose their spend
    assert "spend" in report_for(population(20_000, 1), today)["drifted"]


def test_a_value_many_share_that_moves_a_little_is_not_a_shift():
    # 60% of customers carry the population mean (a fitted parameter), which moves slightly between fits.
    rng = np.random.default_rng(0)
    before = np.where(rng.random(20_000) < 0.6, 85.3, rng.gamma(2.0, 50.0, 20_000))
    after = np.where(rng.random(20_000) < 0.6, 86.1, rng.gamma(2.0, 50.0, 20_000))
    spec = numeric_reference(before)
    from training.drift import numeric_counts

    assert psi(spec["shares"], numeric_counts(spec, after)) < 0.02


def test_counts_of_parts_add_up_to_the_counts_of_the_whole():
    ref_frame, today = population(5_000, 1), population(3_000, 2)
    ref = reference(ref_frame, ref_frame["orders"].to_numpy(), categorical=["region"])
    whole = bin_counts(ref, today, today["orders"].to_numpy())
    parts = [bin_counts(ref, today.iloc[i:i + 450], today["orders"].to_numpy()[i:i + 450]) for i in range(0, 3_000, 450)]
    assert add_counts(parts) == whole
    assert sum(whole[PREDICTIONS]) == len(today)


def test_the_reference_holds_bin_edges_and_shares_not_customers_values():
    frame = population(50_000, 1)
    ref = reference(frame, frame["orders"].to_numpy(), categorical=["region"])
    spend = ref["features"]["spend"]
    assert len(spend["edges"]) <= 9 and len(spend["shares"]) == len(spend["edges"]) + 2
    assert sum(spend["shares"]) == pytest.approx(1.0, abs=1e-5)


def test_a_model_without_a_reference_is_reported_as_not_checked():
    report = drift_report(None, None)
    assert report["status"] == "not checked"
    assert "retrain" in drift_sentence(report)


def test_the_threshold_decides_between_shift_and_drift():
    ref, today = population(20_000, 1), population(20_000, 2, spend_scale=1.3)
    value = report_for(ref, today)["features"]["spend"]
    assert report_for(ref, today, threshold=value / 2)["status"] == "drift"
    assert report_for(ref, today, threshold=value * 2, warn=value / 2)["status"] == "shift"
