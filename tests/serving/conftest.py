"""Shared fixtures for the report tests: a small real training run in a temporary MLflow store, and Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import apt_lock

MODEL_NAME = "customer-value"


# ---------------------------------------------------------------------------------------------
# A small, real training run: LightGBM fitted on a generated customer table, logged to MLflow
# with the names training/train.py uses (metrics, tags, feature_importance.csv, deciles.csv, an
# ablation child run, a registered model with aliases, and report_inputs/).

FAMILIES = {
    "tenure_days": "history", "order_count": "history", "spend_365d": "history", "days_since_last_order": "history",
    "attr_region": "attributes", "referrals_made": "referral", "has_social_profile": "coverage",
    "followers_log": "social", "influence_score_max": "social", "pagerank": "network", "topical_share": "topical",
}
SOCIAL = [f for f, family in FAMILIES.items() if family in ("social", "network", "topical", "coverage")]


def customer_table(n: int, seed: int, prefix: str) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """(features indexed by customer_id, realised value, last-365-days revenue) of ``n`` customers.

    Value rises with spend and referrals, and with followers only when their content is on topic:
    reach without topical relevance is worth nothing here, as the report's caution says.
    """
    rng = np.random.default_rng(seed)
    social = rng.random(n) < 0.5
    followers_log = np.where(social, np.log1p(rng.pareto(1.4, n) * 200), np.nan)
    topical = np.where(social, rng.beta(2, 5, n), np.nan)
    orders = rng.poisson(3, n).astype(float)
    spend = orders * rng.gamma(4.0, 15.0, n)
    features = pd.DataFrame({
        "tenure_days": rng.uniform(30, 1500, n).round(),
        "order_count": orders,
        "spend_365d": spend,
        "days_since_last_order": np.where(orders > 0, rng.uniform(1, 365, n).round(), np.nan),
        "attr_region": pd.Categorical(rng.choice(["north", "south", "west"], n)),
        "referrals_made": rng.poisson(0.3, n).astype(float),
        "has_social_profile": social.astype(float),
        "followers_log": followers_log,
        "influence_score_max": np.where(social, np.clip(9 * followers_log + rng.normal(0, 8, n), 0, 100), np.nan),
        "pagerank": np.where(social, rng.lognormal(0, 0.5, n), np.nan),
        "topical_share": topical,
    }, index=pd.Index([f"{prefix}{i:04d}" for i in range(n)], name="customer_id", dtype="str"))
    on_topic = np.nan_to_num(topical * followers_log)
    expected = 0.8 * spend + 60 * features["referrals_made"].to_numpy() + 40 * on_topic
    actual = np.where(rng.random(n) < 0.75, expected * rng.gamma(2.0, 0.5, n), 0.0)
    last_h = spend * rng.uniform(0.7, 1.3, n)
    return features, pd.Series(actual, index=features.index), pd.Series(last_h, index=features.index)


@dataclass(frozen=True)
class TinyRun:
    tracking_uri: str
    run_id: str
    model_name: str
    model_version: str
    n_test: int


def fit(features: pd.DataFrame, label: pd.Series, seed: int = 0):
    from training.config import ModelParams
    from training.model import CustomerValueModel, FeatureEncoder, make_model

    encoder = FeatureEncoder.fit(features)
    params = ModelParams(num_leaves=7, max_depth=4, min_child_samples=10, max_rounds=40, num_threads=1)
    model = make_model(params, encoder.categorical, seed=seed)
    model.fit(encoder.encode(features), label.to_numpy(), rounds={"value": 40})
    families = {f: FAMILIES[f] for f in features.columns}
    return CustomerValueModel.from_fitted(model, encoder, families=families)


def log_tiny_run(tracking_uri: str, *, n_train: int = 900, n_test: int = 600, register: bool = True,
                 report_inputs: bool = True, experiment: str = "customer-value") -> TinyRun:
    """Fit, evaluate and log a small run the way training.train does; returns where it went.

    Call it with ``tracking_uri`` current (tracking_to).
    """
    import mlflow
    from mlflow.models import infer_signature

    from features.config import FeatureConfig
    from training import tracking
    from training.attribution import family_shares, feature_importance
    from training.config import TrainConfig
    from training.evaluate import deciles, evaluate_predictions, paired_bootstrap_lift
    from training.metrics import value_metrics
    from training.report_inputs import log_report_inputs, predictions_frame, shap_sample_frame

    tracking.quiet_mlflow_warnings()
    train_x, train_y, _ = customer_table(n_train, seed=1, prefix="T")
    test_x, test_y, last_h = customer_table(n_test, seed=2, prefix="C")
    model = fit(train_x, train_y)
    without = fit(train_x.drop(columns=SOCIAL), train_y)
    predicted = model.predict_value(test_x)
    predicted_ns = without.predict_value(test_x.drop(columns=SOCIAL))
    bgnbd = pd.Series(0.9 * test_x["spend_365d"].to_numpy() + 25.0, index=test_x.index)
    baselines = {"last_h": last_h, "bgnbd": bgnbd}
    metrics = evaluate_predictions(test_y, predicted, baselines)
    actual = test_y.to_numpy()
    new = (test_x["tenure_days"] < 365).to_numpy()
    for suffix, mask, seed in (("", np.ones(len(actual), bool), 0), ("_new", new, 1)):
        lift = paired_bootstrap_lift(actual[mask], predicted.to_numpy()[mask], predicted_ns.to_numpy()[mask],
                                     resamples=50, seed=seed)
        metrics.update({f"social_lift_norm_gini{suffix}": lift.estimate, f"social_lift_norm_gini{suffix}_lo": lift.lo,
                        f"social_lift_norm_gini{suffix}_hi": lift.hi})
    ablation = value_metrics(actual, predicted_ns.to_numpy(), prefix="test_")
    metrics.update({f"ablation_{k}": v for k, v in ablation.items()})
    importance = feature_importance(model.log_contributions(test_x), model.encoder.encode(test_x), FAMILIES,
                                    categorical=model.encoder.categorical)
    metrics.update(family_shares(importance, ("history", "attributes", "referral", "coverage", "social",
                                              "network", "topical")))
    metrics.update({"rows_train": float(n_train), "rows_validation": 0.0, "rows_test": float(n_test),
                    "rows_refit": float(n_train + n_test)})
    config = TrainConfig(features=FeatureConfig(market_topics=("outdoor", "hiking")))

    experiment_id = tracking.experiment_id(experiment, tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name="tiny report run") as run:
        mlflow.log_params(config.flat())
        mlflow.set_tags({
            "as_of": "2026-01-01", "horizon_days": "365", "test_cutoff": "2025-01-01", "objective": "tweedie",
            "feature_manifest_hash": "tiny", "baseline_bgnbd_status": "ok: tiny fixture",
            "windows": json.dumps({"as_of": "2026-01-01", "test_cutoff": "2025-01-01",
                                   "train_cutoffs": ["2023-07-02", "2023-10-01"],
                                   "validation_cutoffs": ["2024-01-01"],
                                   "refit_cutoffs": ["2024-07-01", "2024-09-30", "2025-01-01"]}),
        })
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
        with tempfile.TemporaryDirectory() as tmp:
            importance.to_csv(Path(tmp) / "feature_importance.csv", index=False)
            deciles(test_y, {"model": predicted, **baselines}).to_csv(Path(tmp) / "deciles.csv", index=False)
            mlflow.log_artifacts(tmp)
        with mlflow.start_run(run_name="without social families", nested=True):
            mlflow.log_metrics(ablation)
        if report_inputs:
            log_report_inputs(predictions_frame(test_y, {"model": predicted, **baselines}, test_x["tenure_days"]),
                              shap_sample_frame(test_x, model.contributions(test_x)))
        version = ""
        if register:
            example = model.encoder.model_input(test_x.head(20))
            info = mlflow.pyfunc.log_model(name="model", python_model=model,
                                           signature=infer_signature(example, model.predict_value(example)),
                                           input_example=example.head(3),
                                           pip_requirements=tracking.PIP_REQUIREMENTS,
                                           registered_model_name=MODEL_NAME)
            version = str(info.registered_model_version)
            client.set_registered_model_alias(MODEL_NAME, "challenger", version)
            client.set_registered_model_alias(MODEL_NAME, "champion", version)
            mlflow.set_tags({"model_name": MODEL_NAME, "model_version": version})
    return TinyRun(tracking_uri, run.info.run_id, MODEL_NAME, version, n_test)


@contextmanager
def tracking_to(uri: str):
    """MLflow tracks (and registers) to ``uri`` inside the block; the previous settings come back after.

    MLflow keeps the URIs both in module globals and in environment variables (which it sets itself),
    so both are restored: other tests must not find their runs in this store.
    """
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # a registry URI another module's runs left behind must not win
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory, new_mlflow_store) -> str:
    """A temporary SQLite MLflow store shared by the session's report tests."""
    return new_mlflow_store(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture
def mlflow_store(store_uri, monkeypatch):
    """The session's store, made current for one test, with an experiment whose artifacts are beside
    the store (runs started without one go to MLflow's Default experiment, whose artifacts are
    elsewhere: in ./mlruns of the folder pytest runs in, the checkout, for a store MLflow made)."""
    from training import tracking

    with tracking_to(store_uri):
        monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", tracking.experiment_id("report-tests", store_uri))
        yield store_uri


@pytest.fixture(scope="session")
def tiny_run(store_uri) -> TinyRun:
    """The champion of the session's store: a registered model with report inputs."""
    with tracking_to(store_uri):
        return log_tiny_run(store_uri)


@pytest.fixture(scope="session")
def built_report(tiny_run, store_uri, tmp_path_factory) -> Path:
    """report.html built for the tiny run's champion (default model URI)."""
    from serving.report.build import build_report

    with tracking_to(store_uri):
        return build_report(out_dir=tmp_path_factory.mktemp("report"))


# ---------------------------------------------------------------------------------------------
# Chromium

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path to Debian's chromium, installed with apt-get when missing and running as root.

    Without root (or apt-get) the browser tests are skipped on a developer machine, but fail under
    CI=true: CI must prove the report opens in a real browser.
    """
    path = find_chromium()
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        with apt_lock():  # pytest-xdist: another worker may be installing it right now
            if find_chromium() is None:
                env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
                subprocess.run(["apt-get", "update"], check=True, env=env, timeout=900, capture_output=True)
                subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, env=env,
                               timeout=1800, capture_output=True)
        path = find_chromium()
    if path is None:
        message = "chromium is not installed and cannot be installed here (needs root and apt-get)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


# ---------------------------------------------------------------------------------------------
# Today's scores, as `clv score` writes them, for the report built with --scores


def write_current_scores(path: Path, back_test: pd.DataFrame, *, n_new: int = 400, manifest: dict | None = None,
                         intervals: bool = True) -> pd.DataFrame:
    """A scores file (sorted by value_rank) of ``n_new`` new customers N0000... valued highest, then every
    back-test customer of ``back_test`` (customer_id, predicted) valued in the reverse of their back-test
    order: the back-test's most valuable customers land in today's bottom tier. Returns the frame."""
    from serving.scoring.core import manifest_path
    from serving.scoring.tiers import value_ranks

    rng = np.random.default_rng(7)
    new_values = np.sort(rng.gamma(2.0, 900.0, n_new))[::-1] + 500.0
    order = back_test.sort_values(["predicted", "customer_id"], ascending=[True, True])["customer_id"]
    old_values = np.linspace(400.0, 1.0, len(order))  # highest back-test prediction -> lowest value today
    frame = pd.DataFrame({"customer_id": [f"N{i:04d}" for i in range(n_new)] + order.tolist(),
                          "predicted_value": np.concatenate([new_values, old_values])})
    ranked = value_ranks(frame["customer_id"], frame["predicted_value"])
    frame = pd.concat([frame, ranked], axis=1).sort_values("value_rank", kind="stable").reset_index(drop=True)
    values = frame["predicted_value"].to_numpy()
    frame["value_p10"] = 0.4 * values if intervals else np.nan
    frame["value_p90"] = 2.1 * values if intervals else np.nan
    frame["p_alive"] = np.linspace(0.99, 0.2, len(frame)) if intervals else np.nan
    frame["expected_orders"] = np.nan
    frame["reason_1"] = pd.array(["spend_365d=1380.19: +210.50"] * len(frame), dtype="str")
    frame["reason_2"] = pd.array([None] * len(frame), dtype="str")
    frame["model_name"] = "customer-value"
    frame["model_version"] = "1"
    frame["as_of"] = pd.Timestamp("2026-06-01")
    frame["horizon_days"] = 365
    frame["customer_id"] = frame["customer_id"].astype("str")
    frame.to_parquet(path, index=False)
    if manifest is not None:
        manifest_path(path).write_text(json.dumps(manifest))
    return frame


CURRENT_MANIFEST = {
    "currency": "EUR",
    "interval": {"level": 0.8, "coverage_on_test": 0.793, "method": "conformal"},
    "drift": {"status": "drift", "warn": 0.1, "threshold": 0.25, "predictions": 0.31,
              "features": {"spend_365d": 0.41, "order_count": 0.05}, "drifted": ["spend_365d"]},
}


@pytest.fixture(scope="session")
def current_scores(tiny_run, store_uri, tmp_path_factory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """(scores file with a manifest, its frame, the back-test predictions) for the tiny run's champion."""
    from training.report_inputs import load_report_inputs

    with tracking_to(store_uri):
        predictions, _ = load_report_inputs(tiny_run.run_id)
    path = tmp_path_factory.mktemp("scores") / "scores.parquet"
    frame = write_current_scores(path, predictions, manifest=CURRENT_MANIFEST)
    return path, frame, predictions


@pytest.fixture(scope="session")
def scored_report(current_scores, tiny_run, store_uri, tmp_path_factory) -> Path:
    """report.html built for the tiny run's champion with today's scores (--scores)."""
    from serving.report.build import build_report

    with tracking_to(store_uri):
        return build_report(out_dir=tmp_path_factory.mktemp("scored-report"), scores=current_scores[0])
