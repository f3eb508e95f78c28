"""Customer-level report inputs: the frames a training run logs for the report, and how they come back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.report_inputs import (
    MissingReportInputs,
    are_pseudonyms,
    currency_frame,
    load_report_inputs,
    log_report_inputs,
    predictions_frame,
    pseudonymised,
    shap_sample_frame,
)

IDS = pd.Index(["C1", "C2", "C3"], name="customer_id", dtype="str")


def predictions():
    return pd.DataFrame({
        "customer_id": pd.array(["C1", "C2", "C3"], dtype="str"),
        "predicted": [10.0, 20.0, 0.5],
        "actual": [12.0, 0.0, 3.0],
        "baseline_last_h": [8.0, 25.0, 0.0],
        "baseline_bgnbd": [9.0, np.nan, 1.0],
        "tenure_days": [30.0, 400.0, 1000.0],
    })


def shap_sample():
    return pd.DataFrame({
        "customer_id": pd.array(["C1", "C3"], dtype="str"),
        "spend_365d": [100.0, 0.0],
        "attr_region": pd.Categorical(["north", None]),
        "shap__spend_365d": [4.0, -2.0],
        "shap__attr_region": [0.5, 0.0],
    })


def test_predictions_frame_lines_up_named_predictions_by_customer():
    actual = pd.Series([12.0, 0.0, 3.0], index=IDS)
    model = pd.Series([0.5, 20.0, 10.0], index=pd.Index(["C3", "C2", "C1"], name="customer_id"))
    last_h = pd.Series([8.0, 25.0, 0.0], index=IDS)
    tenure = pd.Series([30.0, 400.0, 1000.0], index=IDS)
    frame = predictions_frame(actual, {"model": model, "last_h": last_h}, tenure)
    expected = predictions().assign(baseline_bgnbd=np.nan)  # no BG/NBD prediction: NaN, not zero
    pd.testing.assert_frame_equal(frame, expected)


def test_shap_sample_frame_puts_values_beside_their_contributions():
    features = pd.DataFrame({"spend_365d": [100.0, 0.0], "attr_region": pd.Categorical(["north", None])},
                            index=pd.Index(["C1", "C3"], name="customer_id", dtype="str"))
    contributions = pd.DataFrame({"spend_365d": [4.0, -2.0], "attr_region": [0.5, 0.0], "baseline": [7.0, 7.0]},
                                 index=features.index)
    expected = shap_sample().assign(baseline=[7.0, 7.0])
    pd.testing.assert_frame_equal(shap_sample_frame(features, contributions), expected)


def test_currency_contributions_from_log_shap_equal_the_models_own():
    from tests.serving.conftest import customer_table, fit

    features, actual, _ = customer_table(300, seed=5, prefix="X")
    model = fit(features, actual)
    pd.testing.assert_frame_equal(currency_frame(model.objective, model.log_contributions(features)),
                                  model.contributions(features))


def test_frames_round_trip_through_the_run(mlflow_store):
    import mlflow

    with mlflow.start_run() as run:
        log_report_inputs(predictions(), shap_sample())
    loaded_predictions, loaded_sample = load_report_inputs(run.info.run_id, tracking_uri=mlflow_store)
    pd.testing.assert_frame_equal(loaded_predictions, predictions())
    # Categorical feature values travel as plain strings (missing stays missing).
    pd.testing.assert_frame_equal(loaded_sample, shap_sample().assign(attr_region=pd.array(["north", None],
                                                                                           dtype="str")))


def test_a_run_without_report_inputs_says_so(mlflow_store):
    import mlflow

    with mlflow.start_run() as run:
        pass
    with pytest.raises(MissingReportInputs, match="has no report_inputs/predictions.parquet"):
        load_report_inputs(run.info.run_id, tracking_uri=mlflow_store)


def test_logging_needs_an_active_run():
    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_report_inputs(predictions(), shap_sample())


@pytest.mark.parametrize("frame, message", [
    (predictions().drop(columns=["tenure_days"]), r"missing columns \['tenure_days'\]"),
    (predictions().assign(customer_id=["C1", "C1", "C3"]), "unique"),
    (predictions().assign(predicted=[1.0, np.inf, 2.0]), "1 non-finite values in 'predicted'"),
])
def test_bad_predictions_are_refused_before_anything_is_logged(mlflow_store, frame, message):
    import mlflow

    with mlflow.start_run() as run, pytest.raises((KeyError, ValueError), match=message):
        log_report_inputs(frame, shap_sample())
    assert mlflow.MlflowClient(mlflow_store).list_artifacts(run.info.run_id) == []


def test_an_oversized_shap_sample_is_refused(mlflow_store):
    import mlflow

    with mlflow.start_run(), pytest.raises(ValueError, match="at most 1"):
        log_report_inputs(predictions(), shap_sample(), max_shap_rows=1)


def test_pseudonyms_name_customers_by_their_position_in_the_test_window():
    out = pseudonymised(predictions(), pd.Index(["C0", "C1", "C2", "C3"], dtype="str"))
    assert out["customer_id"].tolist() == ["customer-2", "customer-3", "customer-4"]
    assert are_pseudonyms(out["customer_id"]) and not are_pseudonyms(predictions()["customer_id"])
