"""Customers: latent buying state and attributes, drawn chunk by chunk, and who referred whom.

Each referred customer picks a referrer among the customers alive at their sign-up.
"""

from __future__ import annotations

import math

import numpy as np

from features.synthetic.knobs import (
    ACQUISITION_RATE_LIFT,
    CATEGORY_SHARE,
    CHANNEL_SHARE,
    FIRST_ORDER_AT_SIGNUP,
    NETWORKS_PER_LINKED_CUSTOMER,
    ORGANIC_ACQUISITION_SHARE,
    REFERRAL_MIN_SIGNUP_DAY,
    REGION_SHARE,
    REGION_SPEND,
    SPEND_SHAPE,
    WorldKnobs,
)
from features.synthetic.sampling import draw_codes
from features.synthetic.timeline import Calendar


def draw_customer_chunk(rng: np.random.Generator, n: int, cal: Calendar, knobs: WorldKnobs) -> dict:
    """n customers' sign-up time, latent rates and attributes (arrays by name)."""
    u = rng.random(n) * cal.cum_signup[-1]
    t0 = np.interp(u, cal.cum_signup, np.arange(cal.h_end + 1, dtype=np.float64))
    t0 = np.minimum(t0, np.nextafter(cal.h_end, 0))
    base_rate = rng.gamma(
        knobs.purchase_rate_shape, knobs.purchase_rate_mean / knobs.purchase_rate_shape, n
    )
    dropout = rng.gamma(
        knobs.dropout_rate_shape, knobs.dropout_rate_mean / knobs.dropout_rate_shape, n
    )
    life_draw = rng.exponential(1.0, n)  # lifetime in years = life_draw / dropout rate
    region = draw_codes(rng, REGION_SHARE, n)
    # Gamma-Gamma: the customer's mean spend is inverse-Gamma around mean_order_value.
    spend = (
        knobs.mean_order_value
        * (SPEND_SHAPE - 1)
        / rng.gamma(SPEND_SHAPE, 1.0, n)
        * REGION_SPEND[region]
    )
    age = np.clip(np.round(18 + rng.gamma(4.0, 5.5, n)), 18, 90)
    age_missing = rng.random(n) < 0.08
    # Younger customers are likelier to be on social media; age has no effect on value, so social
    # presence stays independent of buying behaviour.
    p_social = np.full(n, knobs.social_share)
    if 0 < knobs.social_share < 1:
        logit = math.log(knobs.social_share / (1 - knobs.social_share)) - 0.04 * (age - 40)
        p_social = np.where(age_missing, p_social, 1 / (1 + np.exp(-logit)))
    has_social = rng.random(n) < p_social
    n_networks = (draw_codes(rng, NETWORKS_PER_LINKED_CUSTOMER, n) + 1) * has_social
    acquisition = draw_codes(rng, ORGANIC_ACQUISITION_SHARE, n)
    pref_category = draw_codes(rng, CATEGORY_SHARE, n)
    pref_channel = draw_codes(rng, CHANNEL_SHARE, n)
    first_order = rng.random(n) < FIRST_ORDER_AT_SIGNUP
    referral_base = rng.gamma(0.5, 2.0, n)  # heterogeneous word-of-mouth, mean 1
    offline = ~has_social & (rng.random(n) < knobs.offline_influencer_share)
    referral_candidate = (rng.random(n) < knobs.referred_share) & (t0 >= REFERRAL_MIN_SIGNUP_DAY)
    return {
        "t0": t0,
        "base_rate": base_rate * ACQUISITION_RATE_LIFT[acquisition],
        "dropout": dropout,
        "life_draw": life_draw,
        "region": region,
        "spend": spend,
        "age": np.where(age_missing, np.nan, age),
        "n_networks": n_networks.astype(np.int8),
        "acquisition": acquisition,
        "pref_category": pref_category,
        "pref_channel": pref_channel,
        "first_order": first_order,
        "referral_base": referral_base,
        "offline": offline,
        "referral_candidate": referral_candidate,
    }


def link_referrals(
    rng: np.random.Generator, cust: dict, weight: np.ndarray, death: np.ndarray
) -> np.ndarray:
    """Referrer index per customer (-1 = organic); referrers are drawn with probability ~ weight
    among customers who signed up before the referred customer's sign-up day and are still alive."""
    t0 = cust["t0"]
    referrer = np.full(len(t0), -1, dtype=np.int64)
    referred = np.flatnonzero(cust["referral_candidate"])
    if len(referred) == 0:
        return referrer
    day = np.floor(t0[referred])
    order = np.argsort(t0, kind="stable")
    cum_weight = np.cumsum(weight[order])
    n_before = np.searchsorted(t0[order], day, side="left")
    pending = np.flatnonzero(n_before > 0)
    for _ in range(64):  # rejection rounds (vectorised over all pending referrals)
        if len(pending) == 0:
            break
        k = n_before[pending]
        pos = np.searchsorted(
            cum_weight, rng.random(len(pending)) * cum_weight[k - 1], side="right"
        )
        candidate = order[np.minimum(pos, k - 1)]
        alive = death[candidate] > day[pending]
        referrer[referred[pending[alive]]] = candidate[alive]
        pending = pending[~alive]
    return referrer
