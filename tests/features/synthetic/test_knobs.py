"""Specification of the world's knobs (features/synthetic/knobs.py): influence, validation."""

from __future__ import annotations

import pandas as pd
import pytest

from features.synthetic.knobs import WorldKnobs
from features.synthetic.world import generate_world

# --- influence knobs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def knobs_on_and_off(tmp_path_factory):
    worlds = {}
    for name, knobs in [
        ("on", WorldKnobs()),
        ("off", WorldKnobs(influence_on_purchases=0.0, influence_on_referrals=0.0)),
    ]:
        out = tmp_path_factory.mktemp(f"influence_{name}")
        generate_world(out, n_customers=20_000, seed=3, knobs=knobs)
        gt = pd.read_parquet(out / "ground_truth.parquet")
        tx = pd.read_parquet(out / "transactions.parquet", columns=["customer_id", "amount"])
        gt["orders"] = (
            tx[tx.amount > 0]
            .groupby("customer_id")
            .size()
            .reindex(gt.customer_id, fill_value=0)
            .to_numpy()
        )
        worlds[name] = gt
    return worlds


def test_knobs_at_zero_make_purchase_and_referral_rates_independent_of_topical_engagement(
    knobs_on_and_off,
):
    off = knobs_on_and_off["off"]
    assert (off.purchase_rate == off.base_purchase_rate).all()
    rho = off[["topical_engagement", "purchase_rate", "referral_propensity"]].corr("spearman")
    assert abs(rho.loc["topical_engagement", "purchase_rate"]) < 0.03
    assert abs(rho.loc["topical_engagement", "referral_propensity"]) < 0.03


def test_default_knobs_raise_purchase_and_referral_rates_with_topical_engagement(knobs_on_and_off):
    on = knobs_on_and_off["on"]
    rho = on[["topical_engagement", "purchase_rate", "referral_propensity"]].corr("spearman")
    assert rho.loc["topical_engagement", "purchase_rate"] > 0.05
    assert rho.loc["topical_engagement", "referral_propensity"] > 0.07
    lift = on.purchase_rate / on.base_purchase_rate
    assert lift.min() == 1.0 and 1.1 < lift[on.has_social_profile].mean() < 1.3  # modest


def test_topically_engaged_customers_order_more_only_when_influence_is_on(knobs_on_and_off):
    def ratio(gt):
        top = gt.topical_engagement >= gt.topical_engagement[gt.has_social_profile].quantile(0.75)
        return gt.orders[top].mean() / gt.orders[~gt.has_social_profile].mean()

    assert ratio(knobs_on_and_off["off"]) == pytest.approx(1.0, abs=0.1)
    assert ratio(knobs_on_and_off["on"]) > ratio(knobs_on_and_off["off"]) + 0.15


def test_knobs_are_validated():
    with pytest.raises(ValueError):
        WorldKnobs(social_share=1.5)
    with pytest.raises(ValueError):
        WorldKnobs(influence_on_purchases=-0.1)
    with pytest.raises(ValueError):
        WorldKnobs(market_topics=())
    assert WorldKnobs(market_topics=["climbing"]).market_topics == ("climbing",)
