"""Customer-level evaluation data of a training run, logged for the stakeholder report (serving/report/build.py).

The run's metrics and feature_importance.csv summarise the test window; the report also needs the
customers themselves: predicted vs realised value (deciles, calibration, the influence x value
quadrant) and signed contributions in currency next to the feature values (dependence plots). Both
frames come from the out-of-time test window only, so nothing here was seen in training.

Artifacts, under ``report_inputs/`` of the run:
- predictions.parquet: customer_id, predicted, actual, baseline_last_h, baseline_bgnbd (NaN when the
  BG/NBD fit failed), tenure_days; one row per test customer.
- shap_sample.parquet: customer_id, the feature values as the model saw them, and ``shap__<feature>``
  (signed contribution in currency, from CustomerValueModel.contributions) for a seeded sample of at
  most 20,000 test customers; optional ``baseline`` (the model's baseline value in currency).

Unless the run opts in (TrainConfig.log_customer_ids), ``customer_id`` holds pseudonyms
(``customer-<n>``, n the customer's position in the test window), the same in both files so the
report can still join them, so the tracking store never holds real ids (docs/privacy.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from training.attribution import shap_sample
from training.model import currency_contributions

ARTIFACT_DIR = "report_inputs"
PREDICTIONS_FILE = "predictions.parquet"
SHAP_SAMPLE_FILE = "shap_sample.parquet"
PREDICTION_COLUMNS = ("customer_id", "predicted", "actual", "baseline_last_h", "baseline_bgnbd", "tenure_days")
SHAP_PREFIX = "shap__"
PSEUDONYM = r"customer-\d+"
MAX_SHAP_ROWS = 20_000


class MissingReportInputs(LookupError):
    """The run has no report_inputs/ artifacts (trained before they were logged, or logging failed)."""


def shap_columns(frame: pd.DataFrame) -> list[str]:
    """The features that have a ``shap__<feature>`` contribution column, in frame order."""
    return [c[len(SHAP_PREFIX):] for c in frame.columns if c.startswith(SHAP_PREFIX)]


def shap_sample_frame(features: pd.DataFrame, contributions: pd.DataFrame) -> pd.DataFrame:
    """The shap_sample layout from a feature frame and CustomerValueModel.contributions on the same rows.

    ``features`` and ``contributions`` are indexed by customer_id (same rows, same order); the result
    has customer_id, every model feature's value, ``shap__<feature>`` per feature and ``baseline``.
    """
    if not features.index.equals(contributions.index):
        raise ValueError("features and contributions must have the same customer_id index, in the same order")
    names = [c for c in contributions.columns if c != "baseline"]
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise KeyError(f"features frame lacks {len(missing)} contribution features: {missing[:10]}")
    values = features[names].reset_index(drop=True)
    shap = contributions[names].astype(np.float64).reset_index(drop=True).add_prefix(SHAP_PREFIX)
    parts = [pd.DataFrame({"customer_id": features.index.astype("str").to_numpy()}), values, shap]
    if "baseline" in contributions.columns:
        parts.append(pd.DataFrame({"baseline": contributions["baseline"].to_numpy(np.float64)}))
    return pd.concat(parts, axis=1)


def predictions_frame(actual: pd.Series, predictions: dict[str, pd.Series], tenure_days: pd.Series) -> pd.DataFrame:
    """The predictions layout from the test label and named predictions, all indexed by customer_id.

    ``predictions`` holds ``model`` and the baselines ``last_h`` and (when its fit worked) ``bgnbd``;
    a missing baseline becomes NaN, so the report can say it is absent instead of guessing.
    """
    ids = actual.index
    nan = pd.Series(np.nan, index=ids)
    return pd.DataFrame({
        "customer_id": ids.astype("str").to_numpy(),
        "predicted": predictions["model"].reindex(ids).to_numpy(np.float64),
        "actual": actual.to_numpy(np.float64),
        "baseline_last_h": predictions.get("last_h", nan).reindex(ids).to_numpy(np.float64),
        "baseline_bgnbd": predictions.get("bgnbd", nan).reindex(ids).to_numpy(np.float64),
        "tenure_days": tenure_days.reindex(ids).to_numpy(np.float64),
    })


def currency_frame(objective: str, log_contributions: pd.DataFrame) -> pd.DataFrame:
    """CustomerValueModel.contributions from already computed log-scale TreeSHAP (saves a second SHAP pass)."""
    names = [c for c in log_contributions.columns if c != "baseline"]
    money, baseline = currency_contributions(objective, log_contributions[names].to_numpy(np.float64),
                                             log_contributions["baseline"].to_numpy(np.float64))
    out = pd.DataFrame(money, index=log_contributions.index, columns=names)
    out["baseline"] = baseline
    return out


def report_frames(ev, *, log_contributions: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, shap_sample) of a training.train.Evaluation, ready for log_report_inputs.

    The SHAP sample is the attribution step's seeded sample of the test window (same rows, same
    seed). Pass that step's log-scale contributions to skip recomputing TreeSHAP, the slow part.
    """
    test = ev.test_features
    predictions = predictions_frame(ev.test_label, ev.predictions, test["tenure_days"])
    sample = shap_sample(test, ev.config.shap_sample, seed=ev.config.seed)
    # Above 20k rows the attribution sample is thinned (seeded) so the artifact stays small.
    sample = shap_sample(sample, MAX_SHAP_ROWS, seed=ev.config.seed)
    if ev.model.kind != "lightgbm":  # a baseline served as the model: its own contributions
        money = ev.model.contributions(sample)
    else:
        if log_contributions is None:
            log_contributions = ev.model.log_contributions(sample)
        money = currency_frame(ev.model.objective, log_contributions.loc[sample.index])
    shap_frame = shap_sample_frame(sample, money)
    if not ev.config.log_customer_ids:
        predictions, shap_frame = (pseudonymised(frame, test.index) for frame in (predictions, shap_frame))
    return predictions, shap_frame


def pseudonymised(frame: pd.DataFrame, ids: pd.Index) -> pd.DataFrame:
    """``frame`` with each customer_id replaced by ``customer-<n>``, n its 1-based position in ``ids``."""
    position = ids.astype("str").get_indexer(frame["customer_id"].astype("str"))
    if (position < 0).any():
        raise ValueError("pseudonymised: customer ids missing from the id list")
    return frame.assign(customer_id=pseudonyms(len(ids))[position])


def pseudonyms(n: int) -> pd.Index:
    """``customer-1`` .. ``customer-<n>``: the names of a test window's customers, in index order."""
    return pd.Index([f"customer-{p + 1}" for p in range(n)], dtype="str", name="customer_id")


def are_pseudonyms(ids) -> bool:
    """True when logged ids are pseudonyms (a run that did not opt in to log_customer_ids)."""
    return bool(len(ids)) and bool(pd.Series(ids, dtype="str").str.fullmatch(PSEUDONYM).all())


def _check_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise KeyError(f"predictions: missing columns {missing} (expected {list(PREDICTION_COLUMNS)})")
    out = predictions[list(PREDICTION_COLUMNS)].reset_index(drop=True)
    out["customer_id"] = out["customer_id"].astype("str")
    if out["customer_id"].isna().any() or out["customer_id"].duplicated().any():
        raise ValueError("predictions: customer_id must be present and unique")
    for column in PREDICTION_COLUMNS[1:]:
        out[column] = pd.to_numeric(out[column], errors="raise").astype(np.float64)
    for column in ("predicted", "actual", "baseline_last_h", "tenure_days"):
        bad = ~np.isfinite(out[column].to_numpy())
        if bad.any():
            raise ValueError(f"predictions: {int(bad.sum())} non-finite values in {column!r}")
    return out


def _check_shap_sample(shap_sample: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    if "customer_id" not in shap_sample.columns:
        raise KeyError("shap_sample: missing column 'customer_id'")
    if len(shap_sample) > max_rows:
        raise ValueError(f"shap_sample: {len(shap_sample):,} rows; pass a seeded sample of at most {max_rows:,}")
    features = shap_columns(shap_sample)
    if not features:
        raise KeyError(f"shap_sample: no '{SHAP_PREFIX}<feature>' contribution columns")
    missing = [f for f in features if f not in shap_sample.columns]
    if missing:
        raise KeyError(f"shap_sample: contributions without feature values: {missing[:10]}")
    out = shap_sample.reset_index(drop=True)
    out["customer_id"] = out["customer_id"].astype("str")
    if out["customer_id"].duplicated().any():
        raise ValueError("shap_sample: customer_id must be unique")
    # Categorical feature values are written as plain strings: parquet round-trips them exactly and
    # the report only needs numeric features for its dependence plots.
    for name in features:
        if isinstance(out[name].dtype, pd.CategoricalDtype):
            out[name] = out[name].astype("str")
    return out


def log_report_inputs(predictions: pd.DataFrame, shap_sample: pd.DataFrame, *,
                      max_shap_rows: int = MAX_SHAP_ROWS) -> None:
    """Log both frames to the ACTIVE MLflow run as ``report_inputs/{predictions,shap_sample}.parquet``."""
    import mlflow

    if mlflow.active_run() is None:
        raise RuntimeError("log_report_inputs needs an active MLflow run (call it inside mlflow.start_run)")
    predictions = _check_predictions(predictions)
    shap_sample = _check_shap_sample(shap_sample, max_shap_rows)
    with tempfile.TemporaryDirectory(prefix="clv-report-inputs-") as tmp:
        folder = Path(tmp)
        predictions.to_parquet(folder / PREDICTIONS_FILE, index=False)
        shap_sample.to_parquet(folder / SHAP_SAMPLE_FILE, index=False)
        mlflow.log_artifacts(str(folder), artifact_path=ARTIFACT_DIR)


def load_report_inputs(run_id: str, *, tracking_uri: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, shap_sample) logged by log_report_inputs on ``run_id``, as written.

    ``tracking_uri``: the MLflow store (default: MLflow's current one).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    listed = {Path(f.path).name for f in client.list_artifacts(run_id, ARTIFACT_DIR)}
    missing = [name for name in (PREDICTIONS_FILE, SHAP_SAMPLE_FILE) if name not in listed]
    if missing:
        raise MissingReportInputs(
            f"run {run_id} has no {', '.join(f'{ARTIFACT_DIR}/{m}' for m in missing)}: it was trained "
            "without report inputs; retrain it with the current `clv train`"
        )
    with tempfile.TemporaryDirectory(prefix="clv-report-inputs-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT_DIR, dst_path=tmp,
                                                        tracking_uri=tracking_uri)
        except MlflowException as err:  # pragma: no cover - listed above, so only a broken store lands here
            raise MissingReportInputs(f"run {run_id}: could not download {ARTIFACT_DIR}/: {err}") from err
        predictions = pd.read_parquet(Path(local) / PREDICTIONS_FILE)
        shap_sample = pd.read_parquet(Path(local) / SHAP_SAMPLE_FILE)
    return predictions, shap_sample
