"""Specification of the world's purchases and ground truth (features/synthetic/purchases.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.features.synthetic.conftest import TRUTH_START


def top_decile_share(values: pd.Series) -> float:
    v = np.sort(values.to_numpy())[::-1]
    return v[: len(v) // 10].sum() / v.sum()


# --- buying ---------------------------------------------------------------------------------------


def test_about_ten_transactions_per_customer(world):
    assert 7 <= len(world["transactions"]) / len(world["customers"]) <= 13


def test_demand_peaks_in_november_and_december(world):
    tx = world["transactions"]
    month_share = tx[tx.amount > 0].timestamp.dt.month.value_counts(normalize=True)
    assert month_share[[11, 12]].sum() > 0.25  # vs 0.167 without a season
    assert month_share.idxmax() == 12


def test_refunds_are_later_negative_transactions_for_part_or_all_of_an_order(world):
    tx = world["transactions"]
    orders, refunds = tx[tx.amount > 0], tx[tx.amount < 0]
    assert orders.order_id.is_unique
    assert 0.04 <= refunds.order_id.nunique() / len(orders) <= 0.09
    pair = refunds.merge(
        orders, on="order_id", suffixes=("_refund", "_order"), validate="one_to_one"
    )
    assert (pair.customer_id_refund == pair.customer_id_order).all()
    assert (pair.timestamp_refund > pair.timestamp_order).all()
    assert (-pair.amount_refund <= pair.amount_order).all()
    assert (
        (-pair.amount_refund) == pair.amount_order
    ).mean() > 0.4  # most refunds are full returns
    assert (pair.margin_refund < 0).all() and (pair.quantity_refund < 0).all()


def test_order_values_are_heavy_tailed_with_margins_as_a_fraction(world):
    orders = world["transactions"].query("amount > 0")
    assert orders.amount.mean() > 1.3 * orders.amount.median()
    assert orders.amount.quantile(0.99) > 5 * orders.amount.median()
    assert ((orders.margin > 0) & (orders.margin < orders.amount)).all()
    assert 5 <= orders.category.nunique() <= 8 and set(orders.channel) == {"web", "store", "app"}


# --- ground truth ---------------------------------------------------------------------------------


def test_about_half_of_customers_buy_nothing_in_the_truth_year(world):
    zero = (world["ground_truth"].realised_value_next_year == 0).mean()
    assert 0.35 <= zero <= 0.65


def test_top_decile_holds_over_40_percent_of_next_year_value(world):
    gt = world["ground_truth"]
    assert top_decile_share(gt.realised_value_next_year) > 0.4
    assert top_decile_share(gt.expected_value_next_year) > 0.4


def test_expected_value_is_the_mean_of_realised_value(world):
    gt = world["ground_truth"]
    for expected, realised in [
        ("expected_value_next_year", "realised_value_next_year"),
        ("expected_value_last_year", "realised_value_last_year"),
    ]:
        g = gt[[expected, realised]].dropna()
        assert g[realised].mean() == pytest.approx(g[expected].mean(), rel=0.06)
        # calibrated across the range, not just on average
        top = g[expected] >= g[expected].quantile(0.9)
        assert g.loc[top, realised].mean() == pytest.approx(g.loc[top, expected].mean(), rel=0.1)


def test_dead_customers_expect_nothing_but_pending_refunds(world):
    gt = world["ground_truth"]
    dead = gt[~gt.alive_at_end]
    assert (dead.expected_value_next_year <= 0).all() and (dead.realised_value_next_year <= 0).all()
    assert (dead.churn_date < TRUTH_START).all()


def test_last_year_truth_covers_exactly_the_customers_signed_up_before_it(world):
    gt = world["ground_truth"].merge(world["customers"], on="customer_id")
    cutoff = TRUTH_START - pd.Timedelta(days=365)
    assert (gt.expected_value_last_year.notna() == (gt.signup_date < cutoff)).all()
    tx = world["transactions"]
    in_year = tx[tx.timestamp >= cutoff].groupby("customer_id").amount.sum()
    known = gt.set_index("customer_id").realised_value_last_year.dropna()
    expected = in_year.reindex(known.index, fill_value=0.0).round(2)
    np.testing.assert_allclose(known.to_numpy(), expected.to_numpy(), atol=1e-6)
