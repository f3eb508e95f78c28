import numpy as np
import pandas as pd
import pytest

from features.config import FeatureConfig
from features.families import history as history_module
from features.families.history import FEATURES, history_features
from features.tables import Tables

AS_OF = pd.Timestamp("2025-01-01")
CONFIG = FeatureConfig()


def ts(*values):
    return pd.to_datetime(list(values), format="ISO8601").astype("datetime64[ns]")


def customers(ids=("a", "b"), signups=None):
    signups = signups or ["2023-01-01"] * len(ids)
    return pd.DataFrame({"customer_id": list(ids), "signup_date": ts(*signups)})


def transactions(rows, **extra):
    """rows: (customer_id, timestamp, amount)."""
    ids, times, amounts = zip(*rows) if rows else ((), (), ())
    frame = pd.DataFrame(
        {"customer_id": pd.Series(ids, dtype="str"), "timestamp": ts(*times),
         "amount": np.asarray(amounts, dtype="float64")}
    )
    return frame.assign(**extra)


def history(tx, custs=None, as_of=AS_OF, config=CONFIG):
    return history_features(Tables(custs if custs is not None else customers(), tx), as_of, config)


def expected(columns: dict, ids=("a", "b")):
    return pd.DataFrame(columns, index=pd.Index(list(ids), name="customer_id"), dtype="float64")


def test_output_has_every_declared_feature_as_float64_for_every_eligible_customer():
    out = history(transactions([("a", "2024-06-01", 10.0)]))
    assert list(out.columns) == list(FEATURES)
    assert (out.dtypes == "float64").all()
    assert list(out.index) == ["a", "b"]
    assert out.index.name == "customer_id"


def test_refunds_reduce_net_spend():
    out = history(transactions([("a", "2024-06-01", 100.0), ("a", "2024-07-01", -30.0)]))
    pd.testing.assert_frame_equal(
        out[["gross_spend_total", "net_spend_total", "spend_365d", "order_count", "refund_count",
             "refund_share"]],
        expected({"gross_spend_total": [100.0, 0.0], "net_spend_total": [70.0, 0.0],
                  "spend_365d": [70.0, 0.0], "order_count": [1.0, 0.0],
                  "refund_count": [1.0, 0.0], "refund_share": [0.3, np.nan]}),
    )


def test_transactions_on_as_of_are_excluded():
    tx = transactions([("a", "2024-12-31 23:59:59", 10.0), ("a", "2025-01-01", 500.0),
                       ("a", "2025-03-01", 70.0)])
    out = history(tx)
    assert out.loc["a", "net_spend_total"] == 10.0
    assert out.loc["a", "order_count"] == 1.0
    assert out.loc["a", "days_since_last_order"] == pytest.approx(1 / 86400)


def test_customers_signed_up_on_or_after_as_of_are_excluded():
    custs = customers(("a", "b", "c"), ["2024-12-31", "2025-01-01", "2025-02-01"])
    out = history(transactions([("b", "2024-12-01", 10.0)]), custs)
    assert list(out.index) == ["a"]


def test_transactions_of_unknown_customers_are_ignored():
    out = history(transactions([("zzz", "2024-06-01", 10.0), ("a", "2024-06-01", 5.0)]))
    assert out["gross_spend_total"].tolist() == [5.0, 0.0]


def test_customer_without_transactions_has_zero_counts_and_unknown_recency():
    out = history(transactions([("a", "2024-06-01", 10.0)]))
    b = out.loc["b"]
    assert b[["order_count", "gross_spend_total", "net_spend_total", "spend_30d", "spend_365d",
              "refund_count", "orders_per_year", "net_spend_per_year"]].eq(0).all()
    assert b[["days_since_last_order", "days_since_first_order", "order_value_mean",
              "order_value_median", "order_value_max", "purchase_gap_mean_days",
              "refund_share", "spend_trend_180d", "peak_season_spend_share"]].isna().all()
    assert b["tenure_days"] == (AS_OF - pd.Timestamp("2023-01-01")).days


def test_recency_tenure_and_order_value_statistics():
    tx = transactions([("a", "2024-10-02", 10.0), ("a", "2024-11-01", 40.0),
                       ("a", "2024-12-22", 100.0), ("b", "2024-12-01", 7.0)])
    out = history(tx, customers(signups=["2024-01-01", "2024-12-01"]))
    pd.testing.assert_frame_equal(
        out[["tenure_days", "days_since_first_order", "days_since_last_order", "order_value_mean",
             "order_value_median", "order_value_max"]],
        expected({"tenure_days": [366.0, 31.0], "days_since_first_order": [91.0, 31.0],
                  "days_since_last_order": [10.0, 31.0], "order_value_mean": [50.0, 7.0],
                  "order_value_median": [40.0, 7.0], "order_value_max": [100.0, 7.0]}),
    )


def test_median_of_an_even_number_of_orders_is_the_midpoint():
    tx = transactions([("a", "2024-10-01", 10.0), ("a", "2024-10-02", 30.0),
                       ("a", "2024-10-03", 1.0), ("a", "2024-10-04", 1000.0)])
    assert history(tx).loc["a", "order_value_median"] == 20.0


@pytest.mark.parametrize("b_order", ["o1", "o9"], ids=["numbers-per-customer", "global-ids"])
def test_lines_sharing_an_order_id_are_one_order_dated_by_its_first_line(b_order):
    tx = transactions(
        [("a", "2024-12-01", 10.0), ("a", "2024-12-02", 5.0), ("a", "2024-12-21", 20.0),
         ("a", "2024-12-22", -4.0), ("b", "2024-12-01", 3.0)],
        order_id=pd.Series(["o1", "o1", None, "o1", b_order], dtype="str"),
    )
    out = history(tx)
    # o1 of a = 10 + 5 (the refund line is not part of the order value); the line without an
    # order_id is its own order; an order number b shares with a is still b's own order.
    pd.testing.assert_frame_equal(
        out[["order_count", "order_value_mean", "order_value_max", "days_since_first_order",
             "purchase_gap_mean_days"]],
        expected({"order_count": [2.0, 1.0], "order_value_mean": [17.5, 3.0],
                  "order_value_max": [20.0, 3.0], "days_since_first_order": [31.0, 31.0],
                  "purchase_gap_mean_days": [20.0, np.nan]}),
    )


def test_purchase_gaps_mean_and_std_in_days():
    tx = transactions([("a", "2024-01-01", 1.0), ("a", "2024-01-11", 1.0),
                       ("a", "2024-01-31", 1.0), ("b", "2024-05-01", 1.0),
                       ("b", "2024-05-05", 1.0)])
    out = history(tx)
    pd.testing.assert_frame_equal(
        out[["purchase_gap_mean_days", "purchase_gap_std_days"]],
        expected({"purchase_gap_mean_days": [15.0, 4.0],
                  "purchase_gap_std_days": [np.std([10.0, 20.0], ddof=1), np.nan]}),
    )


def test_spend_windows_include_their_first_day_and_exclude_as_of():
    tx = transactions([("a", "2024-12-02", 1.0), ("a", "2024-12-01 23:00", 10.0),
                       ("a", "2024-10-03", 100.0), ("a", "2024-07-05", 1000.0),
                       ("a", "2024-01-02", 10000.0)])
    out = history(tx)
    # 30 days before 2025-01-01 is 2024-12-02 00:00, 90 days is 2024-10-03, 180 days 2024-07-05.
    pd.testing.assert_frame_equal(
        out.loc[["a"], ["spend_30d", "spend_90d", "spend_180d", "spend_365d"]],
        expected({"spend_30d": [1.0], "spend_90d": [111.0], "spend_180d": [1111.0],
                  "spend_365d": [11111.0]}, ids=["a"]),
    )


def test_spend_trend_is_bounded_and_unknown_for_customers_younger_than_both_windows():
    tx = transactions([("a", "2024-12-01", 30.0), ("a", "2024-03-01", 10.0),
                       ("b", "2024-12-01", 30.0)])
    custs = customers(signups=["2023-01-01", "2024-06-01"])
    out = history(tx, custs)
    # a: recent 30 vs prior 10 -> (30 - 10) / 40; b's history does not reach the prior window.
    assert out["spend_trend_180d"].tolist()[0] == 0.5
    assert np.isnan(out.loc["b", "spend_trend_180d"])


def test_spend_trend_floors_net_refunds_at_zero():
    tx = transactions([("a", "2024-12-01", -30.0), ("a", "2024-03-01", 10.0)])
    assert history(tx).loc["a", "spend_trend_180d"] == -1.0


def test_rates_per_year_use_observed_history_with_a_floor():
    tx = transactions([("a", "2020-01-01", 100.0), ("a", "2024-01-01", 100.0),
                       ("b", "2024-12-01", 50.0)])
    # a's first purchase predates the recorded signup: history starts at the purchase.
    custs = customers(signups=["2023-01-01", "2024-12-01"])
    out = history(tx, custs)
    a_years = (AS_OF - pd.Timestamp("2020-01-01")).days / 365.25
    pd.testing.assert_frame_equal(
        out[["orders_per_year", "net_spend_per_year"]],
        expected({"orders_per_year": [2 / a_years, 1 / (90 / 365.25)],
                  "net_spend_per_year": [200 / a_years, 50 / (90 / 365.25)]}),
    )


def test_refund_share_is_capped_at_one_when_refunds_exceed_purchases_in_the_data():
    tx = transactions([("a", "2024-06-01", 10.0), ("a", "2024-06-02", -50.0),
                       ("b", "2024-06-02", -5.0)])
    out = history(tx)
    assert out["refund_share"].tolist()[0] == 1.0
    assert np.isnan(out.loc["b", "refund_share"])
    assert out.loc["b", "refund_count"] == 1.0


def test_optional_column_features_are_nan_when_the_column_is_absent():
    out = history(transactions([("a", "2024-06-01", 10.0)]))
    assert out[["quantity_total", "category_count", "top_category_share", "margin_total"]].isna().all(
        axis=None
    )


def test_quantity_counts_units_bought_and_margin_sums_all_rows():
    tx = transactions([("a", "2024-06-01", 10.0), ("a", "2024-06-02", 20.0),
                       ("a", "2024-06-03", -10.0)],
                      quantity=[2.0, np.nan, -1.0], margin=[3.0, 5.0, -3.0])
    out = history(tx)
    pd.testing.assert_frame_equal(
        out[["quantity_total", "margin_total"]],
        expected({"quantity_total": [2.0, 0.0], "margin_total": [5.0, 0.0]}),
    )


def test_category_mix_counts_categories_and_top_share_of_categorised_spend():
    tx = transactions([("a", "2024-06-01", 30.0), ("a", "2024-06-02", 10.0),
                       ("a", "2024-06-03", 60.0), ("a", "2024-06-04", 500.0),
                       ("a", "2024-06-05", -60.0)],
                      category=pd.Series(["toys", "toys", "books", None, "books"], dtype="str"))
    out = history(tx)
    pd.testing.assert_frame_equal(
        out[["category_count", "top_category_share"]],
        expected({"category_count": [2.0, 0.0], "top_category_share": [0.6, np.nan]}),
    )


@pytest.mark.parametrize("dense_cells", [history_module.DENSE_CATEGORY_CELLS, 0],
                         ids=["dense", "hashed"])
def test_category_mix_is_the_same_for_many_customers_or_categories(monkeypatch, dense_cells):
    monkeypatch.setattr(history_module, "DENSE_CATEGORY_CELLS", dense_cells)
    tx = transactions([("a", "2024-06-01", 30.0), ("a", "2024-06-02", 70.0),
                       ("b", "2024-06-03", 5.0)],
                      category=pd.Series(["toys", "books", "toys"], dtype="str"))
    pd.testing.assert_frame_equal(
        history(tx)[["category_count", "top_category_share"]],
        expected({"category_count": [2.0, 1.0], "top_category_share": [0.7, 1.0]}),
    )


@pytest.mark.parametrize("step_ns", [10**9, 1], ids=["packed-seconds", "nanoseconds-fallback"])
def test_orders_sort_by_customer_then_time_at_any_time_precision(step_ns):
    rng = np.random.default_rng(3)
    n = 2**40  # so large that nanosecond times cannot be packed beside the customer code
    group = rng.integers(0, 50, 2_000)
    t = 1_700_000_000 * 10**9 + rng.integers(0, 10**6, 2_000) * step_ns
    c_sorted, t_sorted = history_module._sorted_by_customer_then_time(group, t, n)
    reference = np.lexsort((t, group))
    assert np.array_equal(c_sorted, group[reference])
    assert np.array_equal(t_sorted, t[reference])


def test_customer_order_sorts_like_lexsort_beyond_16_bit_customer_codes():
    rng = np.random.default_rng(7)
    n = 200_000
    group = rng.integers(0, n, 5_000)
    key = rng.integers(0, 50, 5_000)  # many ties
    order = history_module._customer_order(group, key, n)
    reference = np.lexsort((key, group))
    assert np.array_equal(group[order], group[reference])
    assert np.array_equal(key[order], key[reference])


def test_peak_season_share_uses_configured_months():
    tx = transactions([("a", "2024-11-30", 30.0), ("a", "2024-12-01", 10.0),
                       ("a", "2024-06-01", 60.0)])
    assert history(tx).loc["a", "peak_season_spend_share"] == pytest.approx(0.4)
    june = FeatureConfig(peak_months=(6,))
    assert history(tx, config=june).loc["a", "peak_season_spend_share"] == pytest.approx(0.6)
    none = FeatureConfig(peak_months=())
    assert np.isnan(history(tx, config=none).loc["a", "peak_season_spend_share"])


def test_microsecond_timestamps_give_the_same_features():
    tx = transactions([("a", "2024-06-01", 10.0), ("a", "2024-09-01", 5.0)])
    coarse = tx.assign(timestamp=tx["timestamp"].astype("datetime64[us]"))
    custs = customers()
    custs_us = custs.assign(signup_date=custs["signup_date"].astype("datetime64[us]"))
    pd.testing.assert_frame_equal(history(tx), history(coarse, custs_us))


def test_no_transactions_at_all():
    out = history(transactions([], order_id=pd.Series([], dtype="str"),
                               category=pd.Series([], dtype="str")))
    assert out["order_count"].tolist() == [0.0, 0.0]
    assert out["category_count"].tolist() == [0.0, 0.0]
    assert out["days_since_last_order"].isna().all()


@pytest.mark.parametrize("dtype", ["str", "object", "category"])
def test_customer_codes_find_each_id_in_the_population_whatever_the_id_dtype(dtype):
    population = pd.Index(["a", "b", "c"], dtype="str", name="customer_id")
    ids = pd.Series(["c", None, "zz", "a", "c"], dtype=dtype)
    codes = history_module.customer_codes(population, ids)
    assert codes.tolist() == [2, -1, -1, 0, 2]


def test_spend_horizon_is_net_spend_of_the_horizon_before_as_of_the_last_h_baseline():
    customers = pd.DataFrame({"customer_id": ["a", "b", "c", "d"],
                              "signup_date": pd.to_datetime(["2022-01-01"] * 4).astype("datetime64[ns]")})
    transactions = pd.DataFrame({
        "customer_id": ["a", "a", "a", "b", "b", "c"],
        "timestamp": pd.to_datetime(["2022-12-31", "2023-01-01", "2023-06-01", "2023-12-31", "2024-01-01",
                                     "2023-03-01"]).astype("datetime64[ns]"),
        "amount": [100.0, 10.0, 30.0, 50.0, 999.0, -5.0],
    })
    out = history_features(Tables(customers, transactions), pd.Timestamp("2024-01-01"),
                           FeatureConfig(horizon_days=365))
    # a: 2023-01-01 and 2023-06-01 (2022-12-31 is 366 days back); b: as_of itself is excluded;
    # c: a refund only; d: nothing -> 0.
    assert out["spend_horizon"].tolist() == [40.0, 50.0, -5.0, 0.0]
    shorter = history_features(Tables(customers, transactions), pd.Timestamp("2024-01-01"),
                               FeatureConfig(horizon_days=2))
    assert shorter["spend_horizon"].tolist() == [0.0, 50.0, 0.0, 0.0]
