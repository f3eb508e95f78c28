"""The promotion gate: a new version becomes champion only when it beats the baselines and the champion."""

from types import SimpleNamespace

import pandas as pd
import pytest

from features.errors import UserError
from features.manifest import FeatureManifest
from training.model_source import parse_model_uri
from training.registry import (
    Candidate,
    ChampionScore,
    decide_promotion,
    score_champion,
)

BASELINES = {"last_h": 0.55, "bgnbd": 0.58}


def model(gini, **baselines):
    return Candidate(gini, baselines or BASELINES)


def test_a_first_model_that_beats_every_baseline_becomes_champion():
    decision = decide_promotion("auto", model(0.61), None)
    assert decision.promote and decision.decision == "promoted"
    assert "no champion" in decision.reason and "beats every baseline" in decision.reason


def test_a_model_that_does_not_beat_a_baseline_is_never_promoted_automatically():
    first = decide_promotion("auto", model(0.57), None)
    assert not first.promote and first.decision == "not_promoted"
    assert first.reason == "test_norm_gini 0.5700 does not beat the bgnbd baseline's 0.5800 on the same test window"
    tie = decide_promotion("auto", model(0.58), ChampionScore("3", 0.40, ""))
    assert not tie.promote and tie.decision == "kept_champion" and "bgnbd" in tie.reason


def test_a_missing_baseline_does_not_block_promotion():
    decision = decide_promotion("auto", Candidate(0.61, {"last_h": 0.55, "bgnbd": None}), None)
    assert decision.promote


def test_a_model_at_least_as_good_as_the_champion_on_the_same_window_is_promoted():
    better = decide_promotion("auto", model(0.62), ChampionScore("3", 0.60, ""))
    tie = decide_promotion("auto", model(0.60), ChampionScore("3", 0.60, ""))
    assert better.promote and tie.promote
    assert better.reason == "test_norm_gini 0.6200 >= champion v3's 0.6000 on the same test window"
    assert better.champion_version == "3" and better.champion_norm_gini == 0.60


def test_a_better_champion_is_kept_and_the_run_says_why():
    decision = decide_promotion("auto", model(0.59), ChampionScore("3", 0.60, ""))
    assert not decision.promote and decision.decision == "kept_champion"
    assert decision.reason == "test_norm_gini 0.5900 < champion v3's 0.6000 on the same test window"


def test_a_champion_that_cannot_be_scored_on_this_window_is_kept_not_replaced_blindly():
    champion = ChampionScore("2", None, "incompatible features: extra features: ['x']; its logged "
                             "evaluation is of another test window (2024-01-01, 365 days)")
    decision = decide_promotion("auto", model(0.99), champion)
    assert not decision.promote and decision.decision == "kept_champion"
    assert "cannot be scored" in decision.reason and "--promote always" in decision.reason


def test_a_champion_compared_by_its_logged_evaluation_is_compared_on_the_shared_customers():
    # On the customers both runs tested the candidate scores 0.57, below the champion's 0.60,
    # although its score on its whole test window (0.65) is higher.
    champion = ChampionScore("4", 0.60, "compared by its logged evaluation", candidate_norm_gini=0.57)
    decision = decide_promotion("auto", model(0.65), champion)
    assert not decision.promote and "0.5700 < champion v4's 0.6000" in decision.reason


def test_a_fallback_is_promoted_when_there_is_no_champion_but_never_over_a_better_one():
    fallback = Candidate(0.58, BASELINES, kind="fallback:bgnbd")
    first = decide_promotion("auto", fallback, None)
    assert first.promote and "fallback:bgnbd" in first.reason
    assert not decide_promotion("auto", fallback, ChampionScore("5", 0.70, "")).promote
    assert decide_promotion("auto", fallback, ChampionScore("5", 0.50, "")).promote


def test_always_and_never_do_as_named():
    champion = ChampionScore("4", 0.90, "")
    assert decide_promotion("always", model(0.10), champion).promote
    never = decide_promotion("never", model(0.99), champion)
    assert not never.promote and never.reason == "promote=never"
    assert not decide_promotion("never", model(0.99), None).promote


def test_an_unknown_promotion_mode_is_a_user_error():
    with pytest.raises(UserError, match="promote must be one of auto, always, never"):
        decide_promotion("sometimes", model(0.5), None)


def test_model_uris_name_a_registered_model_by_alias_or_version():
    assert parse_model_uri("models:/customer-value@champion") == ("customer-value", "champion", None)
    assert parse_model_uri("models:/customer-value/3") == ("customer-value", None, "3")
    assert parse_model_uri("runs:/abc/model") is None
    assert parse_model_uri("/tmp/model") is None


class _Registry:
    """A registry whose champion's run tags its evaluation model with ``evaluation_model_uri``."""

    def __init__(self, evaluation_model_uri: str):
        self.run = SimpleNamespace(info=SimpleNamespace(run_id="r1"), data=SimpleNamespace(tags={
            "evaluation_model_uri": evaluation_model_uri, "test_cutoff": "2024-01-01", "horizon_days": "365"}))

    def get_registered_model(self, name):
        return SimpleNamespace(name=name)

    def get_model_version_by_alias(self, name, alias):
        return SimpleNamespace(version="1", run_id="r1")

    def get_run(self, run_id):
        return self.run


@pytest.mark.parametrize("tagged", ["/tmp/somewhere/model", "file:///tmp/somewhere/model",
                                    "https://example.com/model", "models://other-host/clv/1"])
def test_the_champion_is_loaded_only_from_the_configured_store_never_from_where_a_tag_points(
        tagged, monkeypatch):
    import mlflow.pyfunc

    def load_model(uri, *args, **kwargs):
        raise AssertionError(f"loaded {uri}")

    monkeypatch.setattr(mlflow.pyfunc, "load_model", load_model)
    label = pd.Series([1.0, 2.0, 3.0], index=["a", "b", "c"])
    score = score_champion(_Registry(tagged), "clv", pd.DataFrame(index=label.index), label, label,
                           FeatureManifest.__new__(FeatureManifest), pd.Timestamp("2025-01-01"), 365,
                           exclude_version="2")
    assert score.version == "1" and score.norm_gini is None
    assert "is not in the MLflow store" in score.note
