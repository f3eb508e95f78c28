import pandas as pd
import pytest

from features.config import FeatureConfig
from features.labels import check_label_coverage, label_coverage_end, label_values
from features.tables import Tables

AS_OF = pd.Timestamp("2024-01-01")


def ts(*values):
    return pd.to_datetime(list(values), format="ISO8601").astype("datetime64[ns]")


CUSTOMERS = pd.DataFrame({"customer_id": ["b", "a", "c", "late"],
                          "signup_date": ts("2023-01-01", "2023-01-01", "2023-06-01",
                                            "2024-01-01")})
TX = pd.DataFrame({
    "customer_id": ["a", "a", "a", "a", "b", "late"],
    "timestamp": ts("2023-12-31", "2024-01-01", "2024-02-01", "2024-01-31", "2024-01-31 12:00",
                    "2024-01-15"),
    "amount": [1000.0, 10.0, 20.0, -5.0, 7.0, 99.0],
    "margin": [100.0, 1.0, 2.0, -1.0, None, 9.0],
})
TABLES = Tables(CUSTOMERS, TX)


def test_label_is_net_revenue_in_the_horizon_window_starting_at_as_of():
    label = label_values(TABLES, AS_OF, FeatureConfig(horizon_days=31))
    # Window [2024-01-01, 2024-02-01): the purchase on as_of counts, the one on 2024-02-01 does not,
    # refunds reduce it, customers without transactions get 0, later signups get no row.
    expected = pd.Series([5.0, 7.0, 0.0], index=pd.Index(["a", "b", "c"], name="customer_id"),
                         name="label")
    pd.testing.assert_series_equal(label, expected)


def test_margin_label_sums_margin_with_missing_as_zero():
    label = label_values(TABLES, AS_OF, FeatureConfig(label="margin", horizon_days=31))
    assert label.tolist() == [0.0, 0.0, 0.0]
    label = label_values(TABLES, AS_OF, FeatureConfig(label="margin", horizon_days=32))
    assert label.tolist() == [2.0, 0.0, 0.0]


def test_margin_label_without_a_margin_column_is_a_clear_error():
    tables = Tables(CUSTOMERS, TX.drop(columns="margin"))
    with pytest.raises(ValueError, match="no 'margin' column"):
        label_values(tables, AS_OF, FeatureConfig(label="margin", horizon_days=31))


def test_the_horizon_is_the_feature_configs():
    assert label_values(TABLES, AS_OF, FeatureConfig(horizon_days=31)).tolist() == [5.0, 7.0, 0.0]
    assert label_values(TABLES, AS_OF, FeatureConfig(horizon_days=1)).tolist() == [10.0, 0.0, 0.0]


def test_window_not_covered_by_the_source_is_refused():
    assert label_coverage_end(TABLES) == pd.Timestamp("2024-02-01")
    check_label_coverage(TABLES, AS_OF, 32)  # needs data up to 2024-02-01: covered
    with pytest.raises(ValueError, match="not covered"):
        check_label_coverage(TABLES, AS_OF, 33)
    with pytest.raises(ValueError, match="not covered"):
        label_values(TABLES, AS_OF, FeatureConfig())
