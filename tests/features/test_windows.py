import pandas as pd
import pytest

from features.config import FeatureConfig
from features.tables import Tables
from features.windows import build_training_set, training_cutoffs

CONFIG = FeatureConfig(horizon_days=30)
FAMILIES = ["history", "attributes"]


def ts(*values):
    return pd.to_datetime(list(values), format="ISO8601").astype("datetime64[ns]")


CUSTOMERS = pd.DataFrame({
    "customer_id": ["a", "b"],
    "signup_date": ts("2024-01-01", "2024-03-15"),
    "region": pd.Series(["west", "east"], dtype="str"),
})
TX = pd.DataFrame({
    "customer_id": ["a", "a", "b", "a", "b"],
    "timestamp": ts("2024-01-10", "2024-03-05", "2024-03-20", "2024-04-10", "2024-06-29"),
    "amount": [10.0, 20.0, 30.0, 40.0, 50.0],
})
TABLES = Tables(CUSTOMERS, TX)
EVAL = pd.Timestamp("2024-05-01")


def test_cutoffs_step_back_from_eval_cutoff_minus_the_horizon():
    assert training_cutoffs(pd.Timestamp("2024-05-01"), 30, 3, 30) == [
        pd.Timestamp("2024-04-01"), pd.Timestamp("2024-03-02"), pd.Timestamp("2024-02-01")]
    with pytest.raises(ValueError, match="must be positive"):
        training_cutoffs(EVAL, 30, 0, 30)


def test_windows_stack_features_cutoff_and_label_oldest_first():
    out = build_training_set(TABLES, EVAL, CONFIG, n_windows=3, step_days=30, families=FAMILIES)
    cutoffs = ts("2024-02-01", "2024-03-02", "2024-04-01", "2024-04-01")
    expected = pd.DataFrame(
        {"cutoff": cutoffs, "label": [0.0, 20.0, 40.0, 0.0],
         "net_spend_total": [10.0, 10.0, 30.0, 30.0]},
        index=pd.Index(["a", "a", "a", "b"], name="customer_id"),
    )
    pd.testing.assert_frame_equal(out[["cutoff", "label", "net_spend_total"]], expected)
    assert list(out.columns[-2:]) == ["cutoff", "label"]


def test_no_label_window_reaches_into_the_evaluation_period():
    out = build_training_set(TABLES, EVAL, CONFIG, n_windows=3, step_days=30, families=FAMILIES)
    assert (out["cutoff"] + pd.Timedelta(days=CONFIG.horizon_days) <= EVAL).all()
    # b's purchase of 2024-06-29 is after eval_cutoff: no label may contain it.
    assert 50.0 not in out["label"].tolist()


def test_windows_before_the_first_transaction_are_skipped_and_reported():
    heard = []
    out = build_training_set(TABLES, EVAL, CONFIG, n_windows=6, step_days=30, families=FAMILIES,
                             on_window=lambda cutoff, rows, s: heard.append((cutoff, rows)))
    assert out["cutoff"].min() == pd.Timestamp("2024-02-01")
    assert heard == [(pd.Timestamp("2023-11-03"), 0), (pd.Timestamp("2023-12-03"), 0),
                     (pd.Timestamp("2024-01-02"), 0), (pd.Timestamp("2024-02-01"), 1),
                     (pd.Timestamp("2024-03-02"), 1), (pd.Timestamp("2024-04-01"), 2)]


def test_no_window_with_history_is_an_error():
    with pytest.raises(ValueError, match="no training window"):
        build_training_set(TABLES, pd.Timestamp("2024-02-01"), CONFIG, n_windows=2, step_days=30,
                           families=FAMILIES)


def test_category_levels_are_shared_across_windows():
    out = build_training_set(TABLES, EVAL, CONFIG, n_windows=3, step_days=30, families=FAMILIES)
    assert out["attr_region"].dtype == pd.CategoricalDtype(["west", "east"])
    assert out["attr_region"].tolist() == ["west", "west", "west", "east"]


def test_label_window_not_covered_by_the_data_is_refused():
    short = Tables(CUSTOMERS, TX[TX["timestamp"] < "2024-04-15"])
    with pytest.raises(ValueError, match="not covered"):
        build_training_set(short, EVAL, CONFIG, n_windows=1, step_days=30, families=FAMILIES)
