"""Specification of the btyd family: lifetimes' own summary, fitted before as_of, the same from batches."""

import warnings
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.build import build_features
from features.config import FeatureConfig
from features.families import btyd
from features.families.btyd import (
    FEATURES,
    BtydSums,
    btyd_features,
    btyd_predictions,
    expected_orders,
    fit_btyd,
    purchase_summary,
)
from features.tables import Tables
from training.baselines import bgnbd_value

AS_OF = pd.Timestamp("2025-01-01")
CONFIG = FeatureConfig(horizon_days=180)


def purchase_log(seed: int, customers: int = 60, rows: int = 600) -> Tables:
    """Customers signing up over two years and buying (and refunding) at random, some on the same day."""
    rng = np.random.default_rng(seed)
    ids = pd.Series([f"c{i:03d}" for i in range(customers)], dtype="str")
    signup = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 800, customers), unit="D")
    who = rng.integers(0, customers, rows)
    when = signup.to_numpy()[who] + pd.to_timedelta(rng.integers(0, 500 * 86400, rows), unit="s").to_numpy()
    amount = np.round(rng.gamma(2.0, 40.0, rows) * np.where(rng.random(rows) < 0.1, -0.5, 1.0), 2)
    transactions = pd.DataFrame({"customer_id": ids.to_numpy()[who], "timestamp": when.astype("datetime64[ns]"),
                                 "amount": amount}).astype({"customer_id": "str"})
    customers_frame = pd.DataFrame({"customer_id": ids, "signup_date": signup.astype("datetime64[ns]")})
    return Tables(customers_frame, transactions)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_the_purchase_summary_is_lifetimes_own(seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifetimes sets a pandas option pandas 3 deprecates
        from lifetimes.utils import summary_data_from_transaction_data

    tables = purchase_log(seed)
    summary = purchase_summary(tables.customers, tables.transactions, AS_OF)
    tx = tables.transactions
    bought = tx.loc[(tx["timestamp"] < AS_OF) & (tx["amount"] > 0)]
    bought = bought[bought["customer_id"].isin(summary.index)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = summary_data_from_transaction_data(
            bought, "customer_id", "timestamp", monetary_value_col="amount",
            observation_period_end=AS_OF - pd.Timedelta(days=1), freq="D")
    buyers = summary[summary["buyer"]]
    assert sorted(buyers.index) == sorted(expected.index)
    expected = expected.reindex(buyers.index)
    for column, theirs in (("frequency", "frequency"), ("recency", "recency"), ("T", "T"),
                           ("monetary", "monetary_value")):
        np.testing.assert_allclose(buyers[column], expected[theirs], rtol=1e-12, atol=1e-9, err_msg=column)
    never = summary[~summary["buyer"]]
    assert (never[["frequency", "recency", "monetary"]] == 0).all(axis=None)
    signup = tables.customers.set_index("customer_id")["signup_date"].reindex(never.index)
    expected_age = ((AS_OF - pd.Timedelta(days=1)).normalize() - signup.dt.normalize()).dt.days.clip(lower=0)
    np.testing.assert_array_equal(never["T"], expected_age.to_numpy(dtype="float64"))


def test_customers_who_signed_up_on_or_after_as_of_have_no_row():
    tables = purchase_log(3)
    summary = purchase_summary(tables.customers, tables.transactions, AS_OF)
    late = tables.customers.loc[tables.customers["signup_date"] >= AS_OF, "customer_id"]
    assert len(late) and not set(late) & set(summary.index)


def test_features_are_the_fitted_models_expectations():
    tables = purchase_log(7, customers=300, rows=4000)
    features = btyd_features(tables, AS_OF, CONFIG)
    assert list(features.columns) == list(FEATURES)
    assert features.notna().all(axis=None)
    assert ((features["btyd_p_alive"] >= 0) & (features["btyd_p_alive"] <= 1)).all()
    np.testing.assert_allclose(features["btyd_expected_value"],
                               features["btyd_expected_orders"] * features["btyd_expected_order_value"])
    # A longer horizon never expects fewer purchases.
    longer = btyd_features(tables, AS_OF, FeatureConfig(horizon_days=365))
    assert (longer["btyd_expected_orders"] >= features["btyd_expected_orders"] - 1e-12).all()


def test_the_bgnbd_baseline_is_the_familys_expected_value():
    tables = purchase_log(11, customers=300, rows=4000)
    features = btyd_features(tables, AS_OF, CONFIG)
    customers = tables.customers[tables.customers["signup_date"] < AS_OF]
    baseline = bgnbd_value(tables.transactions, customers, AS_OF, CONFIG.horizon_days)
    assert baseline.status.startswith("ok")
    np.testing.assert_array_equal(baseline.prediction.reindex(features.index), features["btyd_expected_value"])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), parts=st.integers(2, 5))
def test_batches_of_customers_give_the_whole_table_features_exactly(seed, parts):
    tables = purchase_log(seed, customers=200, rows=2500)
    whole = btyd_features(tables, AS_OF, CONFIG)
    rng = np.random.default_rng(seed)
    bucket = pd.Series(rng.integers(0, parts, len(tables.customers)), index=tables.customers["customer_id"])
    sums = BtydSums(AS_OF)
    for b in range(parts):
        mine = bucket.index[bucket.to_numpy() == b]
        customers = tables.customers[tables.customers["customer_id"].isin(mine)]
        transactions = tables.transactions[tables.transactions["customer_id"].isin(mine)]
        sums.add(purchase_summary(customers, transactions, AS_OF))
    pd.testing.assert_frame_equal(sums.finish(CONFIG), whole, check_exact=True)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), parts=st.integers(2, 6), most=st.sampled_from([10, 30, 60, 1000]))
def test_a_fit_only_sum_keeps_few_buyers_and_fits_exactly_the_whole_tables_fit(seed, parts, most):
    """Fed chunk by chunk, a fit-only BtydSums holds at most FIT_MAX_BUYERS buyers and one chunk's,
    and fits on exactly the buyers, in the order, that fit_btyd picks from the whole table."""
    from features.families import btyd

    tables = purchase_log(seed, customers=200, rows=2500)
    summary = purchase_summary(tables.customers, tables.transactions, AS_OF)
    rng = np.random.default_rng(seed)
    bucket = rng.integers(0, parts, len(summary))
    fitted = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(btyd, "FIT_MAX_BUYERS", most)
        patch.setattr(btyd, "fit_btyd", lambda s, penalizer: fitted.append(s) or fit_btyd(s, penalizer))
        whole = BtydSums(AS_OF)
        whole.add(summary)
        expected = whole.fitted(CONFIG)
        sums = BtydSums(AS_OF, fit_only=True)
        for b in range(parts):
            sums.add(summary.loc[bucket == b])
            assert sum(map(len, sums._summaries)) <= most + int((bucket == b).sum())
        got = sums.fitted(CONFIG)
    assert got.status == expected.status and got.params == expected.params

    def picked(frame):  # the buyers fit_btyd fits on, as it picks them
        buyers = frame.loc[frame["buyer"].to_numpy()]
        return buyers.iloc[np.sort(np.argsort(btyd.id_hashes(buyers.index), kind="stable")[:most])]

    pd.testing.assert_frame_equal(picked(fitted[1]), picked(fitted[0]), check_exact=True)
    with pytest.raises(ValueError, match="fit-only"):
        sums.finish(CONFIG)


def test_the_fit_uses_the_same_buyers_whatever_the_order(monkeypatch):
    monkeypatch.setattr("features.families.btyd.FIT_MAX_BUYERS", 50)
    tables = purchase_log(5, customers=200, rows=2500)
    summary = purchase_summary(tables.customers, tables.transactions, AS_OF)
    reversed_summary = summary.iloc[::-1].sort_index(kind="stable")
    first, second = fit_btyd(summary, 0.001), fit_btyd(reversed_summary, 0.001)
    assert first.status == second.status and "50 buyers" in first.status
    assert first.params == second.params


def test_too_few_buyers_leave_every_customer_unknown_and_say_why():
    tables = purchase_log(1, customers=5, rows=8)
    summary = purchase_summary(tables.customers, tables.transactions, AS_OF)
    assert "failed" in fit_btyd(summary, 0.001).status
    out = build_features(tables, AS_OF, CONFIG, families=["btyd"])
    assert len(out) and out.isna().all(axis=None)


@pytest.mark.parametrize("horizon", [30, 365])
def test_a_customer_seen_buying_often_and_lately_is_worth_more_than_one_gone_quiet(horizon):
    tables = purchase_log(9, customers=300, rows=4000)
    extra = pd.DataFrame({
        "customer_id": ["fresh"] * 12 + ["quiet"] * 12,
        "timestamp": list(pd.date_range("2024-01-05", periods=12, freq="28D"))
        + list(pd.date_range("2023-01-05", periods=12, freq="7D")),
        "amount": [80.0] * 24,
    }).astype({"customer_id": "str", "timestamp": "datetime64[ns]"})
    people = pd.DataFrame({"customer_id": ["fresh", "quiet"],
                           "signup_date": pd.to_datetime(["2023-01-01"] * 2).astype("datetime64[ns]")})
    tables = Tables(pd.concat([tables.customers, people], ignore_index=True),
                    pd.concat([tables.transactions, extra], ignore_index=True))
    out = btyd_features(tables, AS_OF, FeatureConfig(horizon_days=horizon))
    assert out.loc["fresh", "btyd_p_alive"] > out.loc["quiet", "btyd_p_alive"]
    assert out.loc["fresh", "btyd_expected_value"] > out.loc["quiet", "btyd_expected_value"]


def _bgnbd(r, alpha, a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes import BetaGeoFitter
    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series({"r": r, "alpha": alpha, "a": a, "b": b})
    return fitter


def _simulated_new_customer_orders(r, alpha, a, b, t, n=100_000, seed=0):
    """Monte Carlo of BG/NBD for a customer born now: Poisson purchases, dropping out after each one."""
    rng = np.random.default_rng(seed)
    rate, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    clock, count, active = np.zeros(n), np.zeros(n), np.ones(n, dtype=bool)
    while active.any():
        clock = clock + rng.exponential(1 / np.maximum(rate, 1e-12))
        active &= clock <= t
        count += active
        active &= rng.random(n) >= p
    return count.mean()


def test_expected_orders_are_finite_and_right_when_lifetimes_log_form_fails():
    # a + b < 1, as fitted on a young business: lifetimes returns NaN for customers without repeats.
    young = _bgnbd(0.647, 42.38, 0.028, 0.3615)
    none = np.zeros(1)
    orders = expected_orders(young, 91.0, none, none, none)
    assert np.isfinite(orders).all()
    assert orders[0] == pytest.approx(_simulated_new_customer_orders(0.647, 42.38, 0.028, 0.3615, 91.0), rel=0.03)
    # Where lifetimes' form works, it is used as is.
    usual = _bgnbd(0.25, 4.0, 0.8, 2.5)
    f, r, T = np.array([0.0, 3.0, 10.0]), np.array([0.0, 40.0, 300.0]), np.array([20.0, 100.0, 320.0])
    assert np.array_equal(expected_orders(usual, 91.0, f, r, T),
                          usual.conditional_expected_number_of_purchases_up_to_time(91.0, f, r, T))


def test_a_pickled_fit_predicts_exactly_what_the_fitted_models_do(monkeypatch):
    """The chunked scorer hands the population's fit to its worker processes as a pickle."""
    import pickle

    monkeypatch.setattr(btyd, "_FITS", OrderedDict())  # fitted here, not an earlier test's parameters
    tables = purchase_log(3, customers=300, rows=3000)
    summary = purchase_summary(tables.customers, tables.transactions, AS_OF)
    fit = fit_btyd(summary, CONFIG.btyd_penalizer)
    assert fit.bgnbd is not None
    again = pickle.loads(pickle.dumps(fit))
    assert again.status == fit.status and again.params == fit.params
    pd.testing.assert_frame_equal(btyd_predictions(summary, again, 365), btyd_predictions(summary, fit, 365),
                                  check_exact=True)


def test_numbers_fitted_again_are_not_fitted_again_and_predict_the_same(monkeypatch):
    """A training run's baseline fits the summary its last refit window fitted: the second fit is the
    first's parameters, which predict exactly what the fitted models do. Other numbers, another
    penalizer, are fitted; customers who never bought are not in the models' numbers."""
    monkeypatch.setattr(btyd, "_FITS", OrderedDict())
    tables = purchase_log(5, customers=300, rows=3000)
    summary = purchase_summary(tables.customers, tables.transactions, AS_OF)
    first = fit_btyd(summary, CONFIG.btyd_penalizer)
    assert first.bgnbd is not None
    fitted = []
    real = btyd._fitted
    monkeypatch.setattr(btyd, "_fitted", lambda fitter, *args: fitted.append(fitter.__name__) or real(fitter, *args))

    again = fit_btyd(summary.copy(), CONFIG.btyd_penalizer)
    assert fitted == []
    assert again.status == first.status and again.params == first.params
    pd.testing.assert_frame_equal(btyd_predictions(summary, again, 365), btyd_predictions(summary, first, 365),
                                  check_exact=True)

    never = summary.loc[~summary["buyer"]].index[:1]
    assert len(never)
    assert fit_btyd(summary.drop(never), CONFIG.btyd_penalizer).params == first.params and fitted == []
    later = summary.copy()
    later.loc[later.index[later["buyer"]][0], "T"] += 1.0  # one buyer a day older
    assert fit_btyd(later, CONFIG.btyd_penalizer).params != first.params
    assert fitted == ["BetaGeoFitter", "GammaGammaFitter"]
    assert fit_btyd(summary, CONFIG.btyd_penalizer + 0.01).params != first.params
    assert len(fitted) == 4


def test_only_the_latest_fits_are_kept(monkeypatch):
    monkeypatch.setattr(btyd, "_FITS", OrderedDict())
    monkeypatch.setattr(btyd, "FIT_CACHE_SIZE", 2)
    summaries = [purchase_summary(t.customers, t.transactions, AS_OF)
                 for t in (purchase_log(seed, customers=150, rows=1500) for seed in (1, 2, 3))]
    for summary in summaries:
        fit_btyd(summary, CONFIG.btyd_penalizer)
    assert len(btyd._FITS) == 2
    fitted = []
    real = btyd._fitted
    monkeypatch.setattr(btyd, "_fitted", lambda fitter, *args: fitted.append(fitter.__name__) or real(fitter, *args))
    fit_btyd(summaries[2], CONFIG.btyd_penalizer)
    assert fitted == []
    fit_btyd(summaries[0], CONFIG.btyd_penalizer)  # the oldest, dropped
    assert fitted == ["BetaGeoFitter", "GammaGammaFitter"]
