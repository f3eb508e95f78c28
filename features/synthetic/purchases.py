"""Purchases: a chunk of customers' orders and refunds, and the expected net revenue of a year.

The expected value is the ground truth: what a perfect model would predict.
"""

from __future__ import annotations

import numpy as np

from features.synthetic.knobs import (
    CATEGORY_MARGIN,
    CATEGORY_PRICE,
    CATEGORY_RETURNS,
    CATEGORY_SHARE,
    CHANNEL_SHARE,
    FULL_REFUND_SHARE,
    MEAN_REFUND_FRACTION,
    ORDER_VALUE_SIGMA,
    PREFERRED_CATEGORY_SHARE,
    PREFERRED_CHANNEL_SHARE,
    REFUND_DELAY_MEAN_DAYS,
    REFUND_DELAY_MIN_DAYS,
    WINDOW_DAYS,
    YEAR_DAYS,
    WorldKnobs,
)
from features.synthetic.sampling import draw_codes
from features.synthetic.timeline import Calendar


def _refund_delay_cdf(days: np.ndarray) -> np.ndarray:
    """P(a refund lands within ``days`` of its order)."""
    x = np.maximum(np.asarray(days, dtype=np.float64) - REFUND_DELAY_MIN_DAYS, 0.0)
    return -np.expm1(-x / REFUND_DELAY_MEAN_DAYS)


def expected_value(
    cal: Calendar, cutoff: int, refund_rate: float, c: dict, alive: np.ndarray
) -> np.ndarray:
    """E[net revenue of new orders in [cutoff, cutoff + 365 days) | alive at cutoff, latent state].

    Orders arrive at rate * season(t) while alive (exponential survival at the dropout rate); an order
    of category c is refunded with probability refund_c, at a delay that may fall after the window.
    Exact for daily piecewise-constant seasonality (refund-delay CDF taken at each day's midpoint).
    """
    season = cal.season[cutoff : cutoff + WINDOW_DAYS]
    d = np.arange(WINDOW_DAYS)
    refund_in_window = _refund_delay_cdf(WINDOW_DAYS - d - 0.5)
    mu = c["dropout"] / YEAR_DAYS
    x = np.exp(-mu)
    safe_mu = np.where(mu > 1e-12, mu, 1.0)
    # Survival integrated over each day: integral of exp(-mu u) for u in [d, d + 1] = x**d * within_day.
    within_day = np.where(mu > 1e-12, -np.expm1(-mu) / safe_mu, 1.0)
    demand = np.polyval(season[::-1], x) * within_day
    refunded_demand = np.polyval((season * refund_in_window)[::-1], x) * within_day
    mix_price = PREFERRED_CATEGORY_SHARE * CATEGORY_PRICE + (1 - PREFERRED_CATEGORY_SHARE)
    base_refund = CATEGORY_SHARE @ (CATEGORY_PRICE * CATEGORY_RETURNS)
    mix_refund = (
        PREFERRED_CATEGORY_SHARE * CATEGORY_PRICE * CATEGORY_RETURNS
        + (1 - PREFERRED_CATEGORY_SHARE) * base_refund
    )
    pref = c["pref_category"]
    per_order = (
        mix_price[pref] * demand
        - MEAN_REFUND_FRACTION * refund_rate * mix_refund[pref] * refunded_demand
    )
    return np.where(alive, c["rate"] / YEAR_DAYS * c["spend"] * per_order, 0.0)


def simulate_chunk(
    rng: np.random.Generator, c: dict, cal: Calendar, knobs: WorldKnobs
) -> tuple[dict, dict]:
    """All orders and refunds of a chunk's customers from sign-up to the end of the truth year.

    Returns (history rows before h_end, per-customer truth arrays).
    """
    n = len(c["t0"])
    w_end = cal.h_end + WINDOW_DAYS
    t0, death, rate = c["t0"], c["death"], c["rate"]
    stop = np.minimum(death, w_end)
    d0, d1 = cal.demand(t0), cal.demand(np.maximum(stop, t0))
    n_repeat = rng.poisson(rate / YEAR_DAYS * (d1 - d0))
    cust = np.repeat(np.arange(n), n_repeat)
    t = cal.at_demand(d0[cust] + rng.random(len(cust)) * (d1 - d0)[cust])
    first = np.flatnonzero(c["first_order"])
    cust = np.concatenate([first, cust])
    t = np.concatenate([t0[first], t])
    m = len(cust)

    pref = rng.random(m) < PREFERRED_CATEGORY_SHARE
    category = np.where(pref, c["pref_category"][cust], draw_codes(rng, CATEGORY_SHARE, m))
    pref = rng.random(m) < PREFERRED_CHANNEL_SHARE
    channel = np.where(pref, c["pref_channel"][cust], draw_codes(rng, CHANNEL_SHARE, m))
    value = c["spend"][cust] * CATEGORY_PRICE[category]
    amount = np.round(value * rng.lognormal(-(ORDER_VALUE_SIGMA**2) / 2, ORDER_VALUE_SIGMA, m), 2)
    amount = np.maximum(amount, 0.01)
    quantity = 1.0 + rng.poisson(0.4, m)
    margin_rate = CATEGORY_MARGIN[category] * rng.uniform(0.9, 1.1, m)

    refunded = rng.random(m) < knobs.refund_rate * CATEGORY_RETURNS[category]
    full = rng.random(m) < FULL_REFUND_SHARE
    fraction = np.where(full, 1.0, rng.uniform(0.2, 0.9, m))
    delay = REFUND_DELAY_MIN_DAYS + rng.exponential(REFUND_DELAY_MEAN_DAYS, m)
    r = np.flatnonzero(refunded)
    r_t = t[r] + delay[r]
    r_amount = -np.round(fraction[r] * amount[r], 2)
    r_quantity = -np.where(full[r], quantity[r], np.ceil(fraction[r] * quantity[r]))

    # Truth: net revenue (orders + refunds) dated in the window, per customer.
    def net_in(lo: float, hi: float) -> np.ndarray:
        o = (t >= lo) & (t < hi)
        f = (r_t >= lo) & (r_t < hi)
        return np.bincount(cust[o], weights=amount[o], minlength=n) + np.bincount(
            cust[r][f], weights=r_amount[f], minlength=n
        )

    def pending_refunds(cutoff: float) -> np.ndarray:
        # Refunds already decided for orders before the cutoff that land in the window.
        f = (t[r] < cutoff) & (r_t >= cutoff) & (r_t < cutoff + WINDOW_DAYS)
        return np.bincount(cust[r][f], weights=r_amount[f], minlength=n)

    last = cal.h_end - WINDOW_DAYS
    truth = {
        "realised": net_in(cal.h_end, w_end),
        "pending": pending_refunds(cal.h_end),
        "realised_last": net_in(last, cal.h_end),
        "pending_last": pending_refunds(last),
    }

    # History: orders and refunds before h_end, sorted by customer then time; order ids follow that order.
    keep_o = np.flatnonzero(t < cal.h_end)
    o_sec = cal.seconds(t[keep_o])
    sort_o = np.argsort((cust[keep_o] << 40) | o_sec, kind="stable")
    keep_o, o_sec = keep_o[sort_o], o_sec[sort_o]
    order_number = np.full(m, -1, dtype=np.int64)
    order_number[keep_o] = np.arange(len(keep_o))
    keep_r = np.flatnonzero(r_t < cal.h_end)
    src = np.concatenate([keep_o, r[keep_r]])
    rows_cust = cust[src]
    rows_sec = np.concatenate([o_sec, cal.seconds(r_t[keep_r])])
    order = np.argsort((rows_cust << 40) | rows_sec, kind="stable")
    src = src[order]
    rows_amount = np.concatenate([amount[keep_o], r_amount[keep_r]])[order]
    history = {
        "cust": rows_cust[order],
        "ns": cal.start_ns + rows_sec[order] * 1_000_000_000,
        "amount": rows_amount,
        "order_number": order_number[src],
        "quantity": np.concatenate([quantity[keep_o], r_quantity[keep_r]])[order],
        "category": category[src],
        "channel": channel[src],
        "margin": np.round(rows_amount * margin_rate[src], 2),
        "n_orders": len(keep_o),
    }
    return history, truth
