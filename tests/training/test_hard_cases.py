"""Training on data unlike our generator's, from the command line with default settings: a small
base, a young business with a short horizon, too little data, a future-dated transaction. Each run
either serves a model that beats the baselines or says why not, and never promotes a worse one."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.cli import app
from tests.features.ingest.test_contract import valid_tables, write_source

pytestmark = pytest.mark.slow

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_mlflow_store):
    """A fresh SQLite MLflow store and working directory for this module's runs."""
    folder = tmp_path_factory.mktemp("hard-cases")
    uri = new_mlflow_store(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        # MLflow exports the registry URI itself: set it here so that leaving the module unsets it.
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mp.setenv("COLUMNS", "200")
        mp.chdir(folder)
        yield folder


@pytest.fixture(scope="module")
def client(store):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")


@pytest.fixture(scope="module")
def small_base_run(store, small_base):
    result = runner.invoke(app, ["train", "--data", str(small_base), "--model-name", "small"])
    return result


@pytest.fixture(scope="module")
def young_business(tmp_path_factory):
    """A two-year world run as of its eleventh month: ten months of history, a 91-day horizon."""
    from features.synthetic.world import generate_world

    out = tmp_path_factory.mktemp("young")
    generate_world(out, n_customers=2000, seed=4, years=2, end_date="2025-12-31")
    return out


def _run(client, experiment="customer-value"):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              "tags.`mlflow.parentRunId` IS NULL", order_by=["attributes.start_time DESC"])
    return runs[0]


def test_a_small_base_serves_the_baseline_that_beats_its_model_and_says_so(small_base_run, client):
    # 200 customers: a learned model cannot beat BG/NBD + Gamma-Gamma; the run registers BG/NBD.
    assert small_base_run.exit_code == 0, small_base_run.output
    assert "registered a fallback (fallback:bgnbd)" in small_base_run.output
    run = _run(client)
    assert run.data.tags["model_kind"] == "fallback:bgnbd"
    assert "ranks below the bgnbd baseline" in run.data.tags["model_verdict"]
    assert run.data.metrics["test_norm_gini"] == pytest.approx(run.data.metrics["baseline_bgnbd_test_norm_gini"])
    assert run.data.metrics["learned_test_norm_gini"] < run.data.metrics["baseline_bgnbd_test_norm_gini"]
    version = client.get_model_version_by_alias("small", "champion")
    assert version.tags["model_kind"] == "fallback:bgnbd"


def test_scores_of_a_fallback_model_say_what_served_them_and_ties_share_a_tier(small_base_run, small_base, store):
    assert small_base_run.exit_code == 0
    out = store / "small-scores.parquet"
    result = runner.invoke(app, ["score", "--data", str(small_base), "--model", "models:/small@champion",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "this model is a fallback:bgnbd" in result.output
    scores = pd.read_parquet(out)
    assert set(scores["model_kind"]) == {"fallback:bgnbd"}
    # Customers with the same prediction share a rank and a tier, whatever their ids.
    for _, tied in scores.groupby("predicted_value"):
        assert tied["value_rank"].nunique() == 1 and tied["value_tier"].nunique() == 1


def test_the_report_on_a_fallback_leads_with_it(small_base_run, store):
    assert small_base_run.exit_code == 0
    result = runner.invoke(app, ["report", "--model", "models:/small@champion", "--out", str(store / "report")])
    assert result.exit_code == 0, result.output
    html = (store / "report" / "report.html").read_text(encoding="utf-8")
    assert "This model is a fallback (fallback:bgnbd)" in html
    assert html.index("This model is a fallback") < html.index("Social families")


def test_a_young_business_with_a_short_horizon_trains_with_default_settings(store, client, young_business):
    result = runner.invoke(app, ["train", "--data", str(young_business), "--as-of", "2024-11-01",
                                 "--horizon-days", "91", "--model-name", "young", "--experiment", "young"])
    assert result.exit_code == 0, result.output
    run = _run(client, "young")
    plan = run.data.tags["window_plan"]
    assert "91 days" not in plan.split(":")[0]  # the step was shortened to fit the history
    assert f"windows: {plan}".replace(" ", "") in result.output.replace("\n", "").replace(" ", "")
    # Whatever is served ranks at least as well as every baseline on the test window.
    metrics = run.data.metrics
    for baseline in ("last_h", "bgnbd"):
        assert metrics["test_norm_gini"] >= metrics[f"baseline_{baseline}_test_norm_gini"] - 1e-12
    assert run.data.params["n_windows"] == "auto" and run.data.params["step_days"] == "auto"


def test_too_little_data_stops_before_training_with_one_line_and_exit_2(store, tmp_path):
    src = write_source(tmp_path, valid_tables())
    result = runner.invoke(app, ["train", "--data", str(src), "--model-name", "tiny", "--horizon-days", "30"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in result.output
    assert "too little data to train" in lines[-1] or "history too short" in lines[-1], lines[-1]


def test_a_future_dated_transaction_is_rejected_and_cannot_date_the_run(store, tmp_path):
    tables = valid_tables()
    tables["transactions"].loc[0, "timestamp"] = "2052-03-01"
    src = write_source(tmp_path, tables)
    result = runner.invoke(app, ["validate", "--data", str(src), "--rejects", str(tmp_path / "rejects")])
    assert result.exit_code == 0, result.output
    rejects = pd.read_csv(tmp_path / "rejects" / "transactions.csv", dtype=str)
    assert rejects["reason"].tolist() == ["timestamp in the future '2052-03-01'"]
    from features.ingest.source import load_source

    latest = load_source(src, reject_threshold=1.0).tables.transactions["timestamp"].max()
    assert latest < pd.Timestamp.now()
