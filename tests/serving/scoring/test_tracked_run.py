"""Scoring runs are tracked in MLflow, checked for drift, and carry value per tier.

A real training run (train_run on a generated world) registers the champion with its drift
reference; the scorer then scores the same world as of the training test cutoff (the population the
reference was taken from: no drift), and a copy whose amounts are five times larger (drift).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.config import FeatureConfig
from features.synthetic.world import generate_world
from serving.scoring.chunked import score_customers
from serving.scoring.tracked_run import DriftError
from tests.clv_process import run_clv
from training.config import ModelParams, TrainConfig

pytestmark = pytest.mark.slow

MODEL = "tracked-value"
TEST_CUTOFF = pd.Timestamp("2025-01-01")  # as_of 2026-01-01 minus the 365-day horizon
QUICK = TrainConfig(features=FeatureConfig(market_topics=("outdoor",)),
                    model=ModelParams(max_rounds=30, num_leaves=15, min_child_samples=20, num_threads=1),
                    social_ablation=False, shap_sample=200, bootstrap_resamples=20, currency="eur")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tracked-world")
    generate_world(out, n_customers=1500, seed=5, end_date="2025-12-31")
    return out


@pytest.fixture(scope="module")
def shifted_world(world, tmp_path_factory) -> Path:
    """The same customers, spending five times as much on every order."""
    out = tmp_path_factory.mktemp("shifted-world")
    for path in world.iterdir():
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            if path.name == "transactions.parquet":
                frame["amount"] = frame["amount"] * 5
            frame.to_parquet(out / path.name, index=False)
    return out


@pytest.fixture(scope="module")
def store(world, tmp_path_factory, new_mlflow_store):
    """A fresh SQLite store holding the champion trained on ``world``."""
    from training.train import train_run

    folder = tmp_path_factory.mktemp("tracked-mlflow")
    uri = new_mlflow_store(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mp.chdir(folder)
        train_run(world, config=QUICK, model_name=MODEL, experiment="tracked", promote="always", progress=False)
        yield uri


def score(source, out, **options):
    return score_customers(source, out=out, model_uri=f"models:/{MODEL}@champion", progress=False, **options)


@pytest.fixture(scope="module")
def unchanged(world, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("unchanged") / "scores.parquet"
    return score(world, out, as_of=TEST_CUTOFF), out


def test_scoring_the_population_the_model_was_tested_on_shows_no_drift(unchanged):
    summary, _ = unchanged
    drift = summary["drift"]
    assert drift["status"] == "ok", drift
    assert drift["predictions"] < 0.01
    assert max(drift["features"].values()) < 0.01
    assert drift["drifted"] == []


def test_a_population_spending_five_times_more_is_flagged_as_drift(shifted_world, store, tmp_path):
    summary = score(shifted_world, tmp_path / "scores.parquet")
    drift = summary["drift"]
    assert drift["status"] == "drift"
    assert "predicted_value" in drift["drifted"]
    assert any("spend" in name for name in drift["drifted"])


def test_fail_on_drift_publishes_nothing_but_logs_the_run(shifted_world, store, tmp_path):
    import mlflow

    out = tmp_path / "scores.parquet"
    with pytest.raises(DriftError, match="nothing published"):
        score(shifted_world, out, fail_on_drift=True)
    assert not out.exists() and not out.with_name("scores.manifest.json").exists()
    runs = mlflow.search_runs(experiment_names=[f"{MODEL}-scoring"], filter_string="tags.drift_status = 'drift'",
                              output_format="list")
    assert runs


def test_an_unchanged_population_passes_fail_on_drift(world, store, tmp_path):
    summary = score(world, tmp_path / "scores.parquet", as_of=TEST_CUTOFF, fail_on_drift=True)
    assert summary["drift"]["status"] == "ok"
    assert (tmp_path / "scores.parquet").exists()


def test_each_scoring_run_is_logged_with_model_counts_tiers_and_drift(unchanged, store, tmp_path):
    import mlflow

    summary, _ = unchanged
    place = summary["tracking"]
    assert place["experiment"] == f"{MODEL}-scoring"
    client = mlflow.MlflowClient(tracking_uri=store)
    run = client.get_run(place["run_id"])
    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["model_name"] == MODEL and tags["model_version"] == summary["model"]["version"]
    assert tags["as_of"] == "2025-01-01" and tags["drift_status"] == "ok" and tags["currency"] == "EUR"
    assert len(tags["input_fingerprint"]) == 16
    assert metrics["scored"] == summary["scored"] and metrics["customers_in"] == summary["customers_in"]
    assert metrics["tier_top_1pct_customers"] == summary["tiers"]["top_1pct"]
    assert metrics["psi_predictions"] == pytest.approx(summary["drift"]["predictions"])
    drift = client.download_artifacts(run.info.run_id, "drift.json", dst_path=str(tmp_path))
    logged = json.loads(Path(drift).read_text())
    assert logged["drift"]["features"] == summary["drift"]["features"]


def test_the_scoring_run_holds_no_customer_id(unchanged, store, world, tmp_path):
    import mlflow

    summary, _ = unchanged
    client = mlflow.MlflowClient(tracking_uri=store)
    run = client.get_run(summary["tracking"]["run_id"])
    logged = json.dumps([run.data.tags, run.data.metrics, run.data.params])
    logged += Path(client.download_artifacts(run.info.run_id, "drift.json", dst_path=str(tmp_path))).read_text()
    ids = pd.read_parquet(world / "customers.parquet")["customer_id"].astype(str)
    assert not [i for i in ids if i in logged]
    assert str(world) not in logged


def test_tier_economics_add_up_to_the_scores(unchanged):
    summary, out = unchanged
    scores = pd.read_parquet(out)
    tiers = {t["tier"]: t for t in summary["tier_economics"]}
    for tier, rows in scores.groupby("value_tier"):
        assert tiers[tier]["customers"] == len(rows)
        assert tiers[tier]["total_value"] == pytest.approx(rows["predicted_value"].sum(), abs=0.01)
        assert tiers[tier]["mean_value"] == pytest.approx(rows["predicted_value"].mean(), abs=0.01)
    assert sum(t["share_of_value"] for t in tiers.values()) == pytest.approx(1.0, abs=1e-3)
    assert summary["currency"] == "EUR"  # the training run's, upper-cased
    assert json.loads(out.with_name("scores.manifest.json").read_text())["tier_economics"] == summary["tier_economics"]


def test_the_run_s_currency_overrides_the_training_run_s(world, store, tmp_path):
    summary = score(world, tmp_path / "scores.parquet", as_of=TEST_CUTOFF, currency="$", track=False)
    assert summary["currency"] == "$"
    assert summary["tracking"] == {"skipped": "tracking turned off for this run"}


def test_scores_carry_the_chance_still_active_and_expected_orders(unchanged, world):
    _, out = unchanged
    scores = pd.read_parquet(out)
    assert scores["p_alive"].between(0, 1).all()
    assert (scores["expected_orders"] >= 0).all()
    # Customers expected to order more are more often still active.
    assert np.corrcoef(scores["p_alive"], scores["expected_orders"])[0, 1] > 0


def test_clv_score_fail_on_drift_exits_3_with_one_line(shifted_world, store, tmp_path):
    out = tmp_path / "scores.parquet"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    result = run_clv(["score", "--data", str(shifted_world), "--out", str(out), "--model", f"models:/{MODEL}@champion",
                      "--fail-on-drift"], env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "━" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: DRIFT")
    assert not out.exists()


def test_a_drift_threshold_outside_the_psi_range_is_a_user_error(world, store, tmp_path):
    from features.errors import UserError

    with pytest.raises(UserError, match="drift threshold"):
        score(world, tmp_path / "scores.parquet", drift_threshold=-1.0)


def test_the_config_currency_is_checked():
    from features.errors import UserError

    assert replace(QUICK, currency="usd").currency == "USD"
    with pytest.raises(UserError, match="currency"):
        replace(QUICK, currency="euros and cents")
