"""From a generated world to the stakeholder report: `clv train` then `clv report`, through the Python API."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_training_then_report_gives_every_section_on_a_generated_world(mlflow_store, tmp_path):
    from features.config import FeatureConfig
    from features.synthetic.world import generate_world
    from serving.report.build import build_report
    from training.config import ModelParams, TrainConfig
    from training.report_inputs import load_report_inputs
    from training.train import train

    generate_world(tmp_path / "world", n_customers=2500, seed=11)
    config = TrainConfig(features=FeatureConfig(market_topics=("outdoor", "hiking")),
                         model=ModelParams(max_rounds=40, num_leaves=15, max_depth=5, min_child_samples=20),
                         n_windows=3, bootstrap_resamples=50, shap_sample=1500)
    run_id = train(tmp_path / "world", experiment="report-end-to-end",
                   model_name="customer-value-e2e", config=config, progress=False)

    # training logs the customer-level report inputs (raises MissingReportInputs if it did not).
    predictions, shap_sample = load_report_inputs(run_id)
    assert len(predictions) > 1000 and 0 < len(shap_sample) <= 1500

    html = build_report(model_uri="models:/customer-value-e2e@champion", out_dir=tmp_path / "report").read_text()

    assert run_id in html
    # Every section is there with its content, none replaced by a "missing input" note.
    assert "report inputs" not in html
    for figure in ("family_importance", "feature_importance", "dependence_referrals_made", "decile_lift",
                   "calibration"):
        assert f'id="figure-{figure}"' in html, figure
    # The page leads with what the run decided about social data, before the drivers.
    import mlflow

    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    summary = html[html.index('id="summary"'):html.index('id="importance"')]
    if tags["social_included"] == "true":
        headline = "Social data improves ranking and is kept"
        for figure in ("dependence_influence_score_max", "dependence_topical_share", "dependence_followers_log",
                       "influence_value_quadrant"):
            assert f'id="figure-{figure}"' in html, figure
        assert "reach but little value" in html and "value but no reach" in html
    else:  # a 2,500-customer world: social data does not beat the noise and is left out
        headline = "Social data was tested and left out"
        assert 'id="figure-dependence_followers_log"' not in html
    assert headline in summary and summary.index(headline) < summary.index("strongest drivers")
    assert "For new customers (under one year of tenure" in html or headline.endswith("left out")
    assert "Test-window metrics with and without the social families" in html
    assert "BG/NBD" in html and "last 365 days" in html
