import re
import sqlite3

import pytest

from features.errors import UserError
from training.config import TrainConfig
from training.tracking import check_store, fingerprint_hash, tracking_uri, ui_command


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


def test_a_new_or_working_sqlite_store_passes_the_check(tmp_path):
    check_store(f"sqlite:///{tmp_path}/mlflow.db")  # MLflow creates it
    check_store(f"sqlite:///{tmp_path}/mlflow.db")  # and it now holds MLflow's tables


def test_a_store_folder_or_a_store_in_a_missing_folder_is_refused_at_once(tmp_path):
    (tmp_path / "mlflow.db").mkdir()
    with pytest.raises(UserError, match="mlflow.db is a folder"):
        check_store(f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(UserError, match="nowhere does not exist"):
        check_store(f"sqlite:///{tmp_path}/nowhere/mlflow.db")


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(UserError, match="cannot be used: file is not a database"):
        check_store(f"sqlite:///{tmp_path}/mlflow.db")


def test_a_store_another_process_keeps_locked_is_refused_after_a_short_wait(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    check_store(uri)
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(UserError, match="database is locked; another process holds it"):
            check_store(uri, lock_wait_seconds=0.1)
    finally:
        holder.close()
    check_store(uri)


def test_a_store_mlflow_refuses_is_one_user_error_naming_it(tmp_path):
    (tmp_path / "a-file").write_text("a plain file is no tracking store")
    with pytest.raises(UserError, match=re.escape(f"MLflow store {tmp_path}/a-file cannot be used")) as caught:
        check_store(str(tmp_path / "a-file"))
    assert "\n" not in str(caught.value)


def test_a_tracking_server_that_does_not_answer_is_one_line_at_once_not_minutes_of_retries():
    import time

    from features.errors import UserError
    from training.tracking import check_store

    started = time.perf_counter()
    with pytest.raises(UserError, match=r"MLflow tracking server http://127\.0\.0\.1:1 does not answer"):
        check_store("http://127.0.0.1:1")
    assert time.perf_counter() - started < 60  # a bound on the behaviour (no retry loop), not a speed target
