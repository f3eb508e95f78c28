import pytest

from training.config import TrainConfig
from training.tracking import (
    ChampionScore,
    decide_promotion,
    fingerprint_hash,
    tracking_uri,
    ui_command,
)


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


def test_default_tracking_store_is_sqlite_in_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = tracking_uri()
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert (
        ui_command(uri) == f"mlflow ui --backend-store-uri sqlite:///{tmp_path.resolve()}/mlflow.db"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


def test_fingerprint_hash_is_stable_and_content_sensitive():
    a = {"customers": {"sha256": "abc", "bytes": 10}, "transactions": {"sha256": "def", "bytes": 5}}
    b = {"transactions": {"bytes": 5, "sha256": "def"}, "customers": {"bytes": 10, "sha256": "abc"}}
    assert fingerprint_hash(a) == fingerprint_hash(b)
    assert fingerprint_hash(a) != fingerprint_hash(
        {**a, "customers": {"sha256": "abd", "bytes": 10}}
    )


def test_config_flattens_to_dotted_params():
    flat = TrainConfig().flat()
    assert flat["model.objective"] == "tweedie"
    assert flat["features.market_topics"] == []
    assert flat["features.horizon_days"] == 365
    assert flat["n_windows"] == 4 and flat["seed"] == 0


def test_config_refuses_too_few_windows():
    with pytest.raises(ValueError, match="at least one window must remain"):
        TrainConfig(n_windows=1, validation_windows=1)
