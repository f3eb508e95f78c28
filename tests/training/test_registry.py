"""Promotion rules: a new version becomes champion only as the mode and the comparison allow."""

import pytest

from training.registry import ChampionScore, decide_promotion, parse_model_uri


def test_first_model_becomes_champion():
    decision = decide_promotion("auto", 0.61, None)
    assert decision.promote and decision.decision == "promoted"
    assert "no champion" in decision.reason


def test_auto_promotes_a_model_at_least_as_good_on_the_same_window():
    better = decide_promotion("auto", 0.62, ChampionScore("3", 0.60, ""))
    tie = decide_promotion("auto", 0.60, ChampionScore("3", 0.60, ""))
    assert better.promote and tie.promote
    assert better.reason == "test_norm_gini 0.6200 >= champion v3's 0.6000 on the same test window"
    assert better.champion_version == "3" and better.champion_norm_gini == 0.60


def test_auto_keeps_a_better_champion_and_says_why():
    decision = decide_promotion("auto", 0.55, ChampionScore("3", 0.60, ""))
    assert not decision.promote and decision.decision == "kept_champion"
    assert decision.reason == "test_norm_gini 0.5500 < champion v3's 0.6000 on the same test window"


def test_auto_promotes_when_the_champion_cannot_be_compared():
    decision = decide_promotion(
        "auto", 0.10, ChampionScore("2", None, "incompatible features: extra features: ['x']")
    )
    assert decision.promote
    assert "cannot be compared" in decision.reason and "extra features" in decision.reason


def test_always_and_never_do_as_named():
    champion = ChampionScore("4", 0.90, "")
    assert decide_promotion("always", 0.10, champion).promote
    never = decide_promotion("never", 0.99, champion)
    assert not never.promote and never.reason == "promote=never"
    assert not decide_promotion("never", 0.99, None).promote


def test_unknown_promotion_mode_is_refused():
    with pytest.raises(ValueError, match="promote must be one of"):
        decide_promotion("sometimes", 0.5, None)


def test_model_uris_name_a_registered_model_by_alias_or_version():
    assert parse_model_uri("models:/customer-value@champion") == ("customer-value", "champion", None)
    assert parse_model_uri("models:/customer-value/3") == ("customer-value", None, "3")
    assert parse_model_uri("runs:/abc/model") is None
    assert parse_model_uri("/tmp/model") is None
