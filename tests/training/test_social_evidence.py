"""Social data enters the model only on evidence: left out where influence has no effect, kept where
topical engagement drives value, and never weighed where there is none. The decision uses the
validation windows only; the test-window lift pools customer resampling and refits."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from features.catalog import SOCIAL_FAMILIES
from features.synthetic.knobs import WORLDS
from tests.training.small import SMALL
from training.config import ModelParams

# Young worlds (three years of history): social data has more to add where history is short, so the
# validation evidence is clear at this size (lower bound about +0.003 to +0.005 with topical
# engagement, about -0.003 without influence, both on two seeds), and they train fast.
CUSTOMERS, YEARS = 10_000, 3
CONFIG = replace(SMALL, model=ModelParams(num_threads=2), shap_sample=2000, bootstrap_resamples=100)

pytestmark = pytest.mark.slow


def _evaluate(tmp_path_factory, world: str, seed: int, **drop):
    from features.ingest.source import load_source
    from features.synthetic.world import generate_world
    from training.pandas_engine import PandasFitter, PandasSource
    from training.pipeline import evaluate

    out = tmp_path_factory.mktemp(world)
    generate_world(out, n_customers=CUSTOMERS, seed=seed, end_date="2025-12-31", years=YEARS, knobs=WORLDS[world])
    tables = load_source(out).tables
    if drop:
        tables = replace(tables, **drop)
    return evaluate(PandasSource(tables), PandasFitter(), pd.Timestamp("2026-01-01"), CONFIG)


@pytest.fixture(scope="module")
def no_influence(tmp_path_factory):
    return _evaluate(tmp_path_factory, "no-influence", seed=21)


@pytest.fixture(scope="module")
def topical(tmp_path_factory):
    return _evaluate(tmp_path_factory, "topical", seed=23)


def _social_features(ev) -> list[str]:
    return [f for f in ev.final_model.features if ev.refit_manifest.families[f] in SOCIAL_FAMILIES]


def test_where_influence_has_no_effect_social_data_is_tested_and_left_out(no_influence):
    ev = no_influence
    assert ev.metrics["social_included"] == 0.0 and not ev.social_included
    assert ev.social_decision.startswith("social data left out")
    assert ev.metrics["social_validation_lift_norm_gini_lo"] <= 0
    # Neither the evaluated nor the registered model has a social feature; the attribution is all CRM.
    assert _social_features(ev) == []
    assert not any(ev.manifest.families[f] in SOCIAL_FAMILIES for f in ev.manifest.features)
    assert sum(ev.metrics[f"shap_share_{f}"] for f in SOCIAL_FAMILIES) == 0.0


def test_where_topical_engagement_drives_value_social_data_is_kept_and_its_test_window_lift_reported(topical):
    ev = topical
    assert ev.metrics["social_included"] == 1.0 and ev.social_included
    assert ev.metrics["social_validation_lift_norm_gini_lo"] > 0
    # The test window's lift is measured and reported, not assumed: at this size it can go either
    # way even where validation is clear (seed 25 of this world: validation +0.011 [+0.005, +0.018],
    # test -0.005 [-0.010, -0.001]), which is why the report prints it with its interval.
    for name in ("social_lift_norm_gini", "social_lift_norm_gini_new"):
        lo, estimate, hi = (ev.metrics[f"{name}{end}"] for end in ("_lo", "", "_hi"))
        assert lo <= estimate <= hi and hi - lo > 0, name
    # Reach that counts only where the audience cares is among the model's inputs. (That it outranks
    # raw followers is not claimed: in this generator it does not; docs/evaluation.md says why.)
    assert "topical_reach_log" in _social_features(ev)


def test_without_social_tables_nothing_is_weighed_and_the_run_says_so(tmp_path_factory):
    ev = _evaluate(tmp_path_factory, "default", seed=9, social_profiles=None, social_interactions=None)
    assert ev.social_decision.startswith("no social data")
    assert ev.ablation is None and "social_lift_norm_gini" not in ev.metrics
    assert _social_features(ev) == []
