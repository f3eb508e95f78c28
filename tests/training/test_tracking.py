import pytest

from training.config import TrainConfig
from training.tracking import fingerprint_hash, tracking_uri, ui_command


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
    assert flat["n_windows"] == "auto" and flat["step_days"] == "auto" and flat["seed"] == 0


def test_config_refuses_too_few_windows():
    with pytest.raises(ValueError, match="at least one window must remain"):
        TrainConfig(n_windows=1, validation_windows=1)
