"""End to end: `train` on a tiny generated world, tracked in a throwaway SQLite MLflow store."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.training.small import MARKET_TOPICS, SMALL
from training.config import ModelParams

pytestmark = pytest.mark.slow

MODEL = "clv-test"
# A deliberately weak model on the same features: one split, two rounds.
WEAK = replace(
    SMALL,
    model=ModelParams(max_rounds=2, num_leaves=2, min_child_samples=20, num_threads=1),
    social_ablation=False,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_mlflow_store):
    """MLFLOW_TRACKING_URI pointing at a fresh SQLite file; the working directory is a temp dir too."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = new_mlflow_store(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        # MLflow exports the registry URI itself: set it here so that leaving the module unsets it.
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mp.chdir(folder)
        yield folder


@pytest.fixture(scope="module")
def runs(store, tiny_world):
    """Four runs in order: first, the same again, a weak model (auto), the weak model again (always)."""
    from training.train import train_run

    def go(config, promote):
        return train_run(
            tiny_world,
            model_name=MODEL,
            experiment="clv-tests",
            promote=promote,
            config=config,
            progress=False,
        )

    return {
        "first": go(SMALL, "auto"),
        "again": go(SMALL, "auto"),
        "weak_auto": go(WEAK, "auto"),
        "weak_always": go(WEAK, "always"),
    }


@pytest.fixture(scope="module")
def client(store):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")


def test_run_logs_metrics_against_baselines_with_the_agreed_names(runs, client):
    metrics = client.get_run(runs["first"].run_id).data.metrics
    for metric in ("norm_gini", "spearman", "top10_capture", "mae", "rmse", "total_error_pct"):
        assert f"test_{metric}" in metrics
        assert f"baseline_last_h_test_{metric}" in metrics
        assert f"baseline_bgnbd_test_{metric}" in metrics
    for name in (
        "social_lift_norm_gini",
        "social_lift_norm_gini_lo",
        "social_lift_norm_gini_hi",
        "social_lift_norm_gini_new",
        "social_lift_norm_gini_new_lo",
        "social_lift_norm_gini_new_hi",
    ):
        assert name in metrics
    assert metrics["social_lift_norm_gini_lo"] <= metrics["social_lift_norm_gini_hi"]
    shares = {k: v for k, v in metrics.items() if k.startswith("shap_share_")}
    assert {
        "shap_share_history",
        "shap_share_social",
        "shap_share_network",
        "shap_share_topical",
    } <= set(shares)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert metrics["test_norm_gini"] > 0.3


def test_run_records_config_lineage_artifacts_and_inputs(runs, client, tiny_world):
    run = client.get_run(runs["first"].run_id)
    params, tags = run.data.params, run.data.tags
    assert params["model.objective"] == SMALL.model.objective
    assert params["features.market_topics"] == str(list(MARKET_TOPICS))
    assert params["n_windows"] == "auto" and "8 windows 91 days apart" in tags["window_plan"]
    assert tags["model_kind"] == "lightgbm" and "at least every baseline" in tags["model_verdict"]
    for tag in (
        "git_commit",
        "input_fingerprint",
        "feature_manifest_hash",
        "as_of",
        "horizon_days",
    ):
        assert tags[tag]
    assert tags["as_of"] == "2026-01-01" and tags["horizon_days"] == "365"
    windows = json.loads(tags["windows"])
    assert windows["test_cutoff"] == "2025-01-01"
    assert all(
        pd.Timestamp(c) + pd.Timedelta(days=365) <= pd.Timestamp("2025-01-01")
        for c in windows["train_cutoffs"] + windows["validation_cutoffs"]
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "feature_manifest.json",
        "feature_importance.csv",
        "deciles.csv",
        "deciles.png",
        "feature_importance.png",
        "metrics_vs_baselines.json",
        "input_fingerprint.json",
        "report_inputs",
    } <= artifacts
    names = sorted(d.dataset.name for d in run.inputs.dataset_inputs)
    assert names == ["test_window_2025-01-01", "training_windows"]
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(children) == 1 and "test_norm_gini" in children[0].data.metrics


def test_registered_champion_scores_features_given_as_plain_strings(runs, tiny_tables):
    import mlflow

    from features.build import build_features

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    inner = model.unwrap_python_model()
    features = build_features(tiny_tables, pd.Timestamp("2026-01-01"), SMALL.features)
    frame = inner.encoder.model_input(features)
    predicted = model.predict(frame)
    assert (
        len(predicted) == len(features) and np.isfinite(predicted).all() and (predicted >= 0).all()
    )
    reasons = inner.contributions(frame.head(20))
    np.testing.assert_allclose(reasons.sum(axis=1), np.asarray(predicted)[:20], rtol=1e-9)


def test_the_registered_model_records_the_optional_columns_its_source_had(runs, tiny_tables):
    """So that scoring can refuse a source lacking one (serving.scoring.core.check_model_columns)."""
    import mlflow

    from features.ingest.contract import OPTIONAL_COLUMNS

    inner = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").unwrap_python_model()
    expected = {table: [c for c in OPTIONAL_COLUMNS[table] if c in getattr(tiny_tables, table).columns]
                for table in OPTIONAL_COLUMNS if getattr(tiny_tables, table) is not None}
    assert inner.source_columns == expected
    assert expected["transactions"]  # the generated world has optional transaction columns


@pytest.mark.filterwarnings("ignore:.*An input example was not provided")  # the pickled copy
def test_the_registered_model_holds_no_pickle_and_predicts_as_its_pickle_would(runs, tiny_tables, tmp_path):
    """Boosters as LightGBM text, the rest as JSON, the wrapper as code (training.model_files); its
    predictions equal those of the same model stored the old way, as a cloudpickle."""
    import mlflow

    from features.build import build_features

    version = runs["first"].model_version
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL}/{version}",
                                                     dst_path=str(tmp_path / "registered")))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith(".pkl")], files
    assert {"MLmodel", "pyfunc_code.py", "artifacts/value_model.json"} <= files
    assert any(f.startswith("artifacts/booster_") and f.endswith(".txt") for f in files)
    flavor = mlflow.models.Model.load(str(local)).flavors["python_function"]
    assert "python_model" not in flavor and flavor["model_code_path"].endswith("pyfunc_code.py")

    stored = mlflow.pyfunc.load_model(str(local))
    inner = stored.unwrap_python_model()
    mlflow.pyfunc.save_model(tmp_path / "pickled", python_model=inner, signature=stored.metadata.signature,
                             pip_requirements=["lightgbm"])
    pickled = mlflow.pyfunc.load_model(str(tmp_path / "pickled"))
    frame = inner.encoder.model_input(build_features(tiny_tables, pd.Timestamp("2026-01-01"), SMALL.features))
    np.testing.assert_allclose(stored.predict(frame), pickled.predict(frame), rtol=1e-12, atol=0)


def test_same_data_config_and_seed_give_identical_metrics(runs):
    first, again = runs["first"].metrics, runs["again"].metrics
    shared = sorted(set(first) & set(again))
    assert len(shared) > 40
    assert {k: first[k] for k in shared} == {k: again[k] for k in shared}


def test_first_model_becomes_champion(runs):
    assert runs["first"].promotion == "promoted" and "no champion" in runs["first"].promotion_reason
    assert runs["first"].aliases == ["challenger", "champion"]


def test_auto_promotes_an_equally_good_model_compared_on_the_same_window(runs):
    again = runs["again"]
    assert again.promotion == "promoted", again.promotion_reason
    assert again.metrics["champion_test_norm_gini"] == pytest.approx(
        again.metrics["test_norm_gini"]
    )


def test_auto_keeps_a_better_champion(runs, client):
    weak = runs["weak_auto"]
    assert weak.promotion == "kept_champion", weak.promotion_reason
    assert weak.metrics["test_norm_gini"] < weak.metrics["champion_test_norm_gini"]
    assert weak.aliases == ["challenger"]
    assert client.get_run(weak.run_id).data.tags["promotion_reason"] == weak.promotion_reason


def test_always_promotes_even_a_worse_model(runs, client):
    # (promote="never" is covered by the rule tests in test_tracking.py.)
    weak = runs["weak_always"]
    assert weak.promotion == "promoted" and weak.promotion_reason == "promote=always"
    champion = client.get_model_version_by_alias(MODEL, "champion")
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(champion.version) == str(challenger.version) == weak.model_version == "4"
