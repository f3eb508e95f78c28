"""Synthetic CLV world: a buy-till-you-die customer base with a social layer, written as contract tables.

The world exists to develop and test the pipeline against a known truth (ground_truth.parquet). Social
influence acts ONLY through topical engagement (engagement received x share of content on the market
topics): it raises a customer's own purchase rate and the referrals they make, by the two influence
knobs. Reach and the vendor influence score have no direct effect. See docs/synthetic-world.md.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# Customers per chunk (one Parquet row group each) and profiles per snapshot/interaction chunk. Fixed
# constants, so the same seed gives byte-identical files on any machine.
CHUNK_SIZE = 100_000
PROFILE_CHUNK_SIZE = 200_000

YEAR_DAYS = 365.25
WINDOW_DAYS = 365  # ground-truth year
N_SNAPSHOTS = 12  # quarterly social snapshots: social monitoring covers the last three years

# Demand by calendar month for an outdoor-gear retailer: summer season, holiday peak in Nov-Dec.
MONTHLY_SEASONALITY = (0.75, 0.7, 0.85, 0.95, 1.05, 1.1, 1.05, 0.95, 0.85, 0.9, 1.45, 1.9)
# Sign-ups follow the season too, more weakly (exponent on the monthly factor).
SIGNUP_SEASONALITY_EXPONENT = 0.5
FIRST_ORDER_AT_SIGNUP = 0.8  # share of customers whose account is created with a first order

ORDER_VALUE_SIGMA = 0.55  # lognormal spread of one order around the customer's mean
SPEND_SHAPE = 4.0  # Gamma-Gamma heterogeneity of customers' mean spend (lower = heavier tail)
PREFERRED_CATEGORY_SHARE = 0.5
PREFERRED_CHANNEL_SHARE = 0.75
FULL_REFUND_SHARE = 0.6  # other refunds are partial: uniform 20-90% of the order
REFUND_DELAY_MIN_DAYS = 3.0
REFUND_DELAY_MEAN_DAYS = 12.0  # exponential on top of the minimum
MEAN_REFUND_FRACTION = FULL_REFUND_SHARE + (1 - FULL_REFUND_SHARE) * 0.55

CATEGORIES = ("apparel", "footwear", "camping", "climbing", "packs", "accessories")
CATEGORY_SHARE = np.array([0.30, 0.20, 0.12, 0.08, 0.10, 0.20])
_PRICE = np.array([0.8, 1.2, 1.6, 1.3, 1.1, 0.4])
CATEGORY_PRICE = _PRICE / (CATEGORY_SHARE @ _PRICE)  # order value multiplier, mean 1 over orders
_RETURNS = np.array([1.4, 1.5, 0.6, 0.5, 0.8, 0.5])
CATEGORY_RETURNS = _RETURNS / (CATEGORY_SHARE @ _RETURNS)  # refund-probability multiplier, mean 1
CATEGORY_MARGIN = np.array([0.50, 0.42, 0.35, 0.38, 0.40, 0.55])

CHANNELS = ("web", "store", "app")
CHANNEL_SHARE = np.array([0.5, 0.3, 0.2])

REGIONS = ("northeast", "southeast", "midwest", "southwest", "west")
REGION_SHARE = np.array([0.20, 0.22, 0.20, 0.13, 0.25])
REGION_SPEND = np.array([1.08, 0.95, 0.94, 0.97, 1.06])

ACQUISITION_CHANNELS = ("search", "social_ads", "store", "email", "marketplace", "referral")
ORGANIC_ACQUISITION_SHARE = np.array([0.32, 0.20, 0.22, 0.12, 0.14, 0.0])
ACQUISITION_RATE_LIFT = np.array([1.0, 0.9, 1.1, 1.05, 0.85, 1.0])
# Referred customers churn more slowly (the referral-programme literature's most robust finding).
REFERRED_DROPOUT_FACTOR = 0.75
REFERRAL_MIN_SIGNUP_DAY = 30  # nobody is referred before the first month's customers exist

NETWORKS = ("instagram", "x", "tiktok")
NETWORK_SHARE = np.array([0.5, 0.3, 0.2])
NETWORKS_PER_LINKED_CUSTOMER = np.array([0.55, 0.32, 0.13])  # P(1, 2, 3 networks)
OTHER_TOPICS = ("music", "sports", "food", "tech", "fashion", "celebrity")
INTERACTION_KINDS = ("mention", "share", "reply", "like")
KIND_SHARE = np.array([0.15, 0.20, 0.25, 0.40])
MISSING_TOPIC_SHARE = 0.03  # the vendor's topic classifier abstains

FOLLOWER_SCALE = 200.0  # Lomax (Pareto II) followers: median ~ 125, tail index FOLLOWER_TAIL
FOLLOWER_TAIL = 1.4
FOLLOWER_CAP = (
    3e6  # ordinary accounts stop here (truncated tail); beyond it there are only celebrities
)
CELEBRITY_FOLLOWERS_LOG10 = (6.0, 7.7)
# Engagements per post = ENGAGEMENT_PER_POST x followers ** ENGAGEMENT_EXPONENT (x per-profile noise).
ENGAGEMENT_PER_POST = 0.3
ENGAGEMENT_EXPONENT = 0.7  # sublinear: big accounts get fewer engagements per follower
INTERACTIONS_PER_PROFILE = 5.0
TARGET_REACH_EXPONENT = 0.6  # preferential attachment: P(target) ~ (followers + 10) ** this
# Topical engagement = log1p(expected topical engagements per quarter / TOPICAL_ENGAGEMENT_REF): about
# 1 for the average social customer, 0 without a social profile.
TOPICAL_ENGAGEMENT_REF = 15.0


@dataclass(frozen=True)
class WorldKnobs:
    """What shapes the world; logged whole in world.json. Defaults: a mid-size outdoor-gear retailer.

    Influence (the only social effects on value): a customer's purchase rate is multiplied by
    ``1 + influence_on_purchases * topical_engagement`` and their referral propensity by
    ``1 + influence_on_referrals * topical_engagement``; both 0 = social data carries no signal.
    """

    influence_on_purchases: float = 0.2
    influence_on_referrals: float = 0.5
    market_topics: tuple[str, ...] = ("outdoor", "hiking")
    social_share: float = 0.5  # customers linked to >= 1 social profile
    non_customer_profile_ratio: float = 1.0  # non-customer profiles per customer profile
    n_celebrities: int | None = None  # non-customer celebrities; None = max(5, n_customers // 5000)
    customer_celebrities: int = 2  # customers whose main profile has celebrity reach
    referred_share: float = 0.15  # customers acquired through a referral
    offline_influencer_share: float = 0.01  # of customers without social profiles
    offline_influencer_boost: float = 15.0  # their referral propensity multiplier
    purchase_rate_mean: float = 5.5  # orders per year while alive (before season and influence)
    purchase_rate_shape: float = 0.7  # Gamma shape: lower = more heterogeneous buyers
    dropout_rate_mean: float = 0.3  # per year (exponential lifetimes, Pareto/NBD)
    dropout_rate_shape: float = 1.2
    mean_order_value: float = 85.0
    refund_rate: float = 0.065  # share of orders later (partly) refunded
    acquisition_growth: float = 0.3  # yearly growth of new sign-ups

    def __post_init__(self):
        object.__setattr__(self, "market_topics", tuple(self.market_topics))
        if not self.market_topics:
            raise ValueError("market_topics must name at least one topic")
        for name in ("social_share", "referred_share", "offline_influencer_share", "refund_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and value < 0:
                raise ValueError(f"{f.name} must be >= 0")
        for name in ("purchase_rate_shape", "dropout_rate_shape", "mean_order_value"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")

    def to_dict(self) -> dict:
        """Plain-JSON view (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# --------------------------------------------------------------------------------------------------
# Calendar: time is float days since history start; the history is [0, h_end), the truth year after.


@dataclass(frozen=True)
class _Calendar:
    start: pd.Timestamp  # first day of the history
    h_end: int  # days; history is [0, h_end), i.e. up to and including end_date
    season: np.ndarray  # demand factor per day over [0, h_end + WINDOW_DAYS)
    cum_season: np.ndarray  # cumulative demand at day boundaries (len = days + 1)
    cum_signup: np.ndarray  # cumulative sign-up intensity over the history's day boundaries
    snapshot_days: np.ndarray  # day index of each social snapshot (quarterly, last = end_date)

    @property
    def start_ns(self) -> int:
        return int(self.start.value)

    def demand(self, t: np.ndarray) -> np.ndarray:
        """Cumulative seasonal demand (in demand-days) at times t."""
        return np.interp(t, np.arange(len(self.cum_season), dtype=np.float64), self.cum_season)

    def at_demand(self, c: np.ndarray) -> np.ndarray:
        """Inverse of ``demand``: the time at which cumulative demand reaches c."""
        return np.interp(c, self.cum_season, np.arange(len(self.cum_season), dtype=np.float64))

    @staticmethod
    def seconds(days: np.ndarray) -> np.ndarray:
        """Float days since start -> whole seconds since start (int64)."""
        return np.floor(np.asarray(days) * 86_400.0).astype(np.int64)

    def to_ns(self, days: np.ndarray) -> np.ndarray:
        """Float days -> int64 epoch ns, truncated to whole seconds."""
        return self.start_ns + self.seconds(days) * 1_000_000_000


def _calendar(end_date, years: int, growth: float) -> _Calendar:
    end = pd.Timestamp(end_date).normalize()
    start = end - pd.DateOffset(years=years) + pd.Timedelta(days=1)
    h_end = int((end + pd.Timedelta(days=1) - start).days)
    n_days = h_end + WINDOW_DAYS
    months = pd.date_range(start, periods=n_days, freq="D").month.to_numpy() - 1
    days_in_month = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    monthly = np.asarray(MONTHLY_SEASONALITY)
    monthly = monthly / (monthly @ days_in_month / 365.0)  # mean demand per day over a year = 1
    season = monthly[months]
    cum_season = np.concatenate([[0.0], np.cumsum(season)])
    day_mid = np.arange(h_end) + 0.5
    signup = (
        np.exp(np.log1p(growth) * day_mid / YEAR_DAYS)
        * season[:h_end] ** SIGNUP_SEASONALITY_EXPONENT
    )
    cum_signup = np.concatenate([[0.0], np.cumsum(signup)])
    snaps = [end - pd.DateOffset(months=3 * k) for k in range(N_SNAPSHOTS - 1, -1, -1)]
    snapshot_days = np.array([(s - start).days for s in snaps if s >= start], dtype=np.int64)
    return _Calendar(start, h_end, season, cum_season, cum_signup, snapshot_days)


def _choice(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    """n draws of category codes with the given probabilities (int8)."""
    cum = np.cumsum(probs / probs.sum())
    return np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(probs) - 1).astype(
        np.int8
    )


# --------------------------------------------------------------------------------------------------
# Customers: latent buying state and static attributes, drawn chunk by chunk.


def _draw_customer_chunk(
    rng: np.random.Generator, n: int, cal: _Calendar, knobs: WorldKnobs
) -> dict:
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
    region = _choice(rng, REGION_SHARE, n)
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
    n_networks = (_choice(rng, NETWORKS_PER_LINKED_CUSTOMER, n) + 1) * has_social
    acquisition = _choice(rng, ORGANIC_ACQUISITION_SHARE, n)
    pref_category = _choice(rng, CATEGORY_SHARE, n)
    pref_channel = _choice(rng, CHANNEL_SHARE, n)
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


# --------------------------------------------------------------------------------------------------
# Social profiles: latent reach, activity and topical share per profile; snapshots drawn later.


def _draw_profiles(
    rng: np.random.Generator, cust: dict, cal: _Calendar, knobs: WorldKnobs, n_customers: int
) -> dict:
    n_networks = cust["n_networks"]
    linked = np.flatnonzero(n_networks > 0)
    # Distinct networks per customer: weighted sampling without replacement by exponential races.
    keys = rng.exponential(1.0, (len(linked), len(NETWORKS))) / NETWORK_SHARE
    ranked = np.argsort(keys, axis=1).astype(np.int8)
    take = np.arange(len(NETWORKS))[None, :] < n_networks[linked][:, None]
    cust_owner = np.broadcast_to(linked[:, None], ranked.shape)[take]
    cust_network = ranked[take]
    n_cust_profiles = len(cust_owner)
    n_plain = round(knobs.non_customer_profile_ratio * n_cust_profiles)
    n_celebs = (
        knobs.n_celebrities if knobs.n_celebrities is not None else max(5, n_customers // 5000)
    )

    owner = np.concatenate([cust_owner, np.full(n_plain + n_celebs, -1)]).astype(np.int64)
    network = np.concatenate([cust_network, _choice(rng, NETWORK_SHARE, n_plain + n_celebs)])
    celeb = np.zeros(len(owner), dtype=bool)
    celeb[n_cust_profiles + n_plain :] = True
    # A couple of customers are celebrities themselves (their first profile).
    first_profile = (
        np.flatnonzero(np.r_[True, cust_owner[1:] != cust_owner[:-1]])
        if n_cust_profiles
        else np.array([], int)
    )
    n_cust_celebs = min(knobs.customer_celebrities, len(first_profile))
    celeb[rng.choice(first_profile, n_cust_celebs, replace=False)] = True

    n = len(owner)
    u_min = (1 + FOLLOWER_CAP / FOLLOWER_SCALE) ** -FOLLOWER_TAIL
    u = u_min + (1 - u_min) * rng.random(n)
    followers = FOLLOWER_SCALE * (u ** (-1.0 / FOLLOWER_TAIL) - 1.0)
    followers = np.where(celeb, 10 ** rng.uniform(*CELEBRITY_FOLLOWERS_LOG10, n), followers)
    # Log-growth of followers per quarter: most accounts grow slowly, many shrink.
    growth = np.where(celeb, rng.normal(0.02, 0.03, n), rng.normal(0.03, 0.05, n))
    following = np.exp(rng.normal(math.log(300), 0.8, n))
    following = np.minimum(np.where(celeb, following * 2, following), 7500.0)
    post_rate = np.where(celeb, rng.gamma(4.0, 15.0, n), rng.gamma(0.8, 15.0, n))  # per quarter
    per_post = ENGAGEMENT_PER_POST * np.exp(rng.normal(0.0, 0.5, n))
    topical_share = np.where(celeb, rng.beta(0.5, 40.0, n), rng.beta(0.6, 3.4, n))
    created = np.where(
        celeb,
        cal.h_end - rng.exponential(10 * YEAR_DAYS, n) - 3 * YEAR_DAYS,
        cal.h_end - 1 - rng.exponential(6 * YEAR_DAYS, n),
    )
    activity = rng.gamma(1.0, 1.0, n)  # how much the profile interacts with others

    # Profile ids are assigned in a random order so an id says nothing about the profile's kind.
    perm = rng.permutation(n)
    prof = {
        "owner": owner,
        "network": network,
        "celeb": celeb,
        "followers": followers,
        "growth": growth,
        "following": following,
        "post_rate": post_rate,
        "per_post": per_post,
        "topical_share": topical_share,
        "created": created,
        "activity": activity,
    }
    prof = {k: v[perm] for k, v in prof.items()}
    # Expected engagements received per quarter at end_date, and the topical part of it.
    prof["engagement_rate"] = (
        prof["post_rate"] * prof["per_post"] * prof["followers"] ** ENGAGEMENT_EXPONENT
    )
    return prof


def _topical_engagement(prof: dict, n_customers: int) -> np.ndarray:
    """Per customer: log1p(expected topical engagements per quarter over their profiles / reference)."""
    own = prof["owner"] >= 0
    topical = np.bincount(
        prof["owner"][own],
        weights=(prof["engagement_rate"] * prof["topical_share"])[own],
        minlength=n_customers,
    )
    return np.log1p(topical / TOPICAL_ENGAGEMENT_REF)


# --------------------------------------------------------------------------------------------------
# Referrals: each referred customer picks a referrer among customers alive at their sign-up.


def _link_referrals(
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


# --------------------------------------------------------------------------------------------------
# Transactions and ground truth for one chunk of customers.


def _refund_delay_cdf(days: np.ndarray) -> np.ndarray:
    x = np.maximum(np.asarray(days, dtype=np.float64) - REFUND_DELAY_MIN_DAYS, 0.0)
    return -np.expm1(-x / REFUND_DELAY_MEAN_DAYS)


def _expected_value(
    cal: _Calendar, cutoff: int, refund_rate: float, c: dict, alive: np.ndarray
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


def _simulate_chunk(
    rng: np.random.Generator, c: dict, cal: _Calendar, knobs: WorldKnobs
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
    category = np.where(pref, c["pref_category"][cust], _choice(rng, CATEGORY_SHARE, m))
    pref = rng.random(m) < PREFERRED_CHANNEL_SHARE
    channel = np.where(pref, c["pref_channel"][cust], _choice(rng, CHANNEL_SHARE, m))
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


# --------------------------------------------------------------------------------------------------
# Arrow helpers and atomic Parquet writers.


def _format_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Zero-padded ids ("C0000001") built as fixed-width bytes (no per-row Python)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    size = len(head) + width
    buf = np.empty((len(numbers), size), dtype=np.uint8)
    buf[:, : len(head)] = head
    rest = numbers.copy()
    for j in range(size - 1, len(head) - 1, -1):  # one pass per digit position
        buf[:, j] = 48 + rest % 10
        rest //= 10
    offsets = np.arange(0, (len(numbers) + 1) * size, size, dtype=np.int32)
    return pa.StringArray.from_buffers(
        len(numbers), pa.py_buffer(offsets), pa.py_buffer(buf.tobytes())
    )


def _take(ids: pa.Array, index: np.ndarray) -> pa.Array:
    """ids[index], null where index < 0."""
    index = np.asarray(index, dtype=np.int64)
    missing = index < 0
    return ids.take(pa.array(np.where(missing, 0, index), mask=missing if missing.any() else None))


def _text(codes: np.ndarray, labels, mask: np.ndarray | None = None) -> pa.Array:
    """Plain string column from small integer codes."""
    dictionary = pa.DictionaryArray.from_arrays(
        pa.array(codes, pa.int32(), mask=mask), pa.array(list(labels))
    )
    return dictionary.cast(pa.string())


def _category(codes: np.ndarray, labels) -> pa.Array:
    """Dictionary column (read back by pandas as category, with all labels as categories)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), pa.array(list(labels)))


def _ts(ns: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(ns, dtype=np.int64).view("datetime64[ns]"), pa.timestamp("ns"))


def _ts_or_null(ns: np.ndarray, valid: np.ndarray) -> pa.Array:
    return pa.array(
        np.where(valid, ns, 0).astype(np.int64).view("datetime64[ns]"),
        pa.timestamp("ns"),
        mask=~valid,
    )


# Statistics only where readers filter (time ranges, customer ranges); zstd-1 is as fast as snappy here
# and a third smaller.
_STATISTICS = ["customer_id", "timestamp", "signup_date", "snapshot_date"]


class _AtomicParquet:
    """Row groups into ``.<name>.parquet.tmp`` in the output dir, renamed onto the final name on commit.

    Encoding runs on ``encoder`` (one background thread shared by all writers) so that it overlaps
    with generating the next chunk; one thread keeps each file's row groups in submission order.
    """

    def __init__(self, out_dir: Path, name: str, schema: pa.Schema, encoder: ThreadPoolExecutor):
        self.final = out_dir / f"{name}.parquet"
        self.tmp = out_dir / f".{name}.parquet.tmp"
        self.schema, self.encoder, self.rows = schema, encoder, 0
        self.writer = pq.ParquetWriter(
            self.tmp,
            schema,
            compression="zstd",
            compression_level=1,
            write_statistics=[c for c in _STATISTICS if c in schema.names],
        )
        self.pending: Future | None = None

    def write(self, columns: dict) -> None:
        table = pa.Table.from_arrays([columns[f.name] for f in self.schema], schema=self.schema)
        self._wait()  # at most one table in flight per file keeps memory bounded
        self.pending = self.encoder.submit(
            self.writer.write_table, table, row_group_size=max(len(table), 1)
        )
        self.rows += len(table)

    def _wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def commit(self) -> None:
        self._wait()
        self.writer.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        try:
            if self.pending is not None:
                self.pending.exception()
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


STR, TS, F64 = pa.string(), pa.timestamp("ns"), pa.float64()
SCHEMAS = {
    "customers": pa.schema(
        [
            ("customer_id", STR),
            ("signup_date", TS),
            ("region", pa.dictionary(pa.int8(), STR)),
            ("acquisition_channel", pa.dictionary(pa.int8(), STR)),
            ("age", F64),
        ]
    ),
    "transactions": pa.schema(
        [
            ("customer_id", STR),
            ("timestamp", TS),
            ("amount", F64),
            ("order_id", STR),
            ("quantity", F64),
            ("category", STR),
            ("channel", STR),
            ("margin", F64),
        ]
    ),
    "social_profiles": pa.schema(
        [
            ("profile_id", STR),
            ("customer_id", STR),
            ("network", STR),
            ("snapshot_date", TS),
            ("followers", F64),
            ("following", F64),
            ("posts", F64),
            ("engagements", F64),
            ("influence_score", F64),
        ]
    ),
    "social_interactions": pa.schema(
        [
            ("source_profile_id", STR),
            ("target_profile_id", STR),
            ("timestamp", TS),
            ("kind", STR),
            ("topic", STR),
        ]
    ),
    "referrals": pa.schema([("referrer_id", STR), ("referred_id", STR), ("timestamp", TS)]),
    "ground_truth": pa.schema(
        [
            ("customer_id", STR),
            ("expected_value_next_year", F64),
            ("realised_value_next_year", F64),
            ("expected_value_last_year", F64),
            ("realised_value_last_year", F64),
            ("alive_at_end", pa.bool_()),
            ("purchase_rate", F64),
            ("base_purchase_rate", F64),
            ("dropout_rate", F64),
            ("churn_date", TS),
            ("mean_order_value", F64),
            ("topical_engagement", F64),
            ("has_social_profile", pa.bool_()),
            ("is_celebrity", pa.bool_()),
            ("is_offline_influencer", pa.bool_()),
            ("was_referred", pa.bool_()),
            ("referral_propensity", F64),
            ("referrals_made", pa.int64()),
        ]
    ),
    "ground_truth_profiles": pa.schema(
        [
            ("profile_id", STR),
            ("customer_id", STR),
            ("network", STR),
            ("is_celebrity", pa.bool_()),
            ("topical_share", F64),
            ("engagement_rate", F64),
            ("created_date", TS),
        ]
    ),
}


def _influence_score(
    rng: np.random.Generator, followers: np.ndarray, engagements: np.ndarray
) -> np.ndarray:
    """Vendor (Klout-style) score: reach and engagement on a logistic 0-100 scale; blind to topic."""
    raw = 0.55 * np.log10(1 + followers) + 0.45 * np.log10(1 + engagements)
    score = 100 / (1 + np.exp(-1.4 * (raw - 3.0))) + rng.normal(0, 1.5, len(raw))
    return np.round(np.clip(score, 0, 100), 1)


def _snapshot_chunk(
    rng: np.random.Generator,
    prof: dict,
    lo: int,
    hi: int,
    cal: _Calendar,
    profile_ids: pa.Array,
    customer_ids: pa.Array,
) -> dict:
    """Quarterly snapshots of profiles lo..hi-1 (only snapshots on or after the profile's creation)."""
    sl = slice(lo, hi)
    n, k = hi - lo, len(cal.snapshot_days)
    quarters_before_end = (k - 1 - np.arange(k))[None, :]
    followers = prof["followers"][sl, None] * np.exp(
        -prof["growth"][sl, None] * quarters_before_end + rng.normal(0, 0.03, (n, k))
    )
    followers = np.round(followers)
    following = np.round(
        prof["following"][sl, None]
        * np.exp(-0.01 * quarters_before_end + rng.normal(0, 0.02, (n, k)))
    )
    exists = cal.snapshot_days[None, :] >= prof["created"][sl, None]
    new_posts = rng.poisson(np.broadcast_to(prof["post_rate"][sl, None], (n, k))) * exists
    quarters_alive = np.maximum(cal.snapshot_days[0] - prof["created"][sl], 0) / (YEAR_DAYS / 4)
    posts = rng.poisson(prof["post_rate"][sl] * quarters_alive)[:, None] + np.cumsum(
        new_posts, axis=1
    )  # cumulative, like the platforms' post counts
    p, q = np.nonzero(exists)
    followers, new_posts = followers[exists], new_posts[exists]
    # Engagements received over the quarter: sublinear in followers, noisy, randomly rounded.
    expected = new_posts * prof["per_post"][lo + p] * followers**ENGAGEMENT_EXPONENT
    engagements = np.floor(expected * rng.lognormal(-0.03, 0.25, len(p)) + rng.random(len(p)))
    return {
        "profile_id": profile_ids.take(pa.array(lo + p)),
        "customer_id": _take(customer_ids, prof["owner"][lo + p]),
        "network": _text(prof["network"][lo + p], NETWORKS),
        "snapshot_date": _ts(cal.start_ns + cal.snapshot_days[q] * 86_400 * 1_000_000_000),
        "followers": pa.array(followers),
        "following": pa.array(following[exists]),
        "posts": pa.array(posts[exists].astype(np.float64)),
        "engagements": pa.array(engagements),
        "influence_score": pa.array(_influence_score(rng, followers, engagements)),
    }


def _interaction_chunk(
    rng: np.random.Generator,
    prof: dict,
    lo: int,
    hi: int,
    targets: list,
    cal: _Calendar,
    knobs: WorldKnobs,
    profile_ids: pa.Array,
) -> dict:
    """Interactions sourced by profiles lo..hi-1; targets within the source's network, drawn by reach
    and topical fit (market-topic interactions go to topical profiles, others to the rest)."""
    n_out = rng.poisson(INTERACTIONS_PER_PROFILE * prof["activity"][lo:hi])
    src = np.repeat(np.arange(lo, hi), n_out)
    m = len(src)
    on_topic = rng.random(m) < prof["topical_share"][src]
    u = rng.random(m)
    tgt = np.empty(m, dtype=np.int64)
    net = prof["network"][src]
    for k in range(len(NETWORKS)):
        for topical in (True, False):
            rows = np.flatnonzero((net == k) & (on_topic == topical))
            members, cum = targets[k][topical]
            if len(cum) == 0 or cum[-1] <= 0:
                tgt[rows] = src[rows]  # nobody to talk to: dropped below as a self-loop
                continue
            pos = np.searchsorted(cum, u[rows] * cum[-1], side="right")
            tgt[rows] = members[np.minimum(pos, len(members) - 1)]
    keep = tgt != src
    src, tgt, on_topic = src[keep], tgt[keep], on_topic[keep]
    m = len(src)
    market = list(knobs.market_topics)
    other = [t for t in OTHER_TOPICS if t not in market]
    labels = market + other
    topic = np.where(
        on_topic, rng.integers(0, len(market), m), len(market) + rng.integers(0, len(other), m)
    )
    # Talk aimed at celebrities is mostly about celebrity itself.
    if "celebrity" in other:
        to_celeb = ~on_topic & prof["celeb"][tgt] & (rng.random(m) < 0.6)
        topic = np.where(to_celeb, labels.index("celebrity"), topic)
    topic_missing = rng.random(m) < MISSING_TOPIC_SHARE
    kind = _choice(rng, KIND_SHARE, m)
    start = np.maximum(np.maximum(prof["created"][src], prof["created"][tgt]), 0.0)
    seconds = cal.seconds(start + rng.random(m) * (cal.h_end - start))
    order = np.argsort((src << 40) | seconds, kind="stable")  # by source, then time
    return {
        "source_profile_id": profile_ids.take(pa.array(src[order])),
        "target_profile_id": profile_ids.take(pa.array(tgt[order])),
        "timestamp": _ts(cal.start_ns + seconds[order] * 1_000_000_000),
        "kind": _text(kind[order], INTERACTION_KINDS),
        "topic": _text(topic[order], labels, mask=topic_missing[order]),
    }


# --------------------------------------------------------------------------------------------------


@contextmanager
def _progress_bar(enabled: bool):
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bar:
        yield bar


def _chunks(n: int, size: int):
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def generate_world(
    out_dir,
    *,
    n_customers: int = 50_000,
    seed: int = 0,
    end_date: str = "2025-12-31",
    years: int = 5,
    knobs: WorldKnobs | None = None,
    progress: bool = False,
) -> dict:
    """Generate a synthetic world into out_dir (contract tables + ground truth + world.json).

    Same arguments => byte-identical files. Returns {"out_dir", "seconds", "rows": {table: n}}.
    """
    started = time.perf_counter()
    if n_customers < 1:
        raise ValueError("n_customers must be >= 1")
    if years < 2:
        raise ValueError(
            "years must be >= 2 (the last-year truth needs a year of history before it)"
        )
    knobs = knobs if knobs is not None else WorldKnobs()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cal = _calendar(end_date, years, knobs.acquisition_growth)
    s_customers, s_social, s_referrals, s_snapshots, s_interactions, s_transactions = (
        np.random.SeedSequence(seed).spawn(6)
    )
    customer_chunks = _chunks(n_customers, CHUNK_SIZE)

    with _progress_bar(progress) as bar, ExitStack() as stack:

        def task(name, total):
            return bar.add_task(name, total=total) if bar is not None else None

        def advance(t):
            if bar is not None:
                bar.advance(t)

        writers: dict[str, _AtomicParquet] = {}
        encoder = stack.enter_context(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet")
        )

        def open_writer(name):
            w = _AtomicParquet(out, name, SCHEMAS[name], encoder)
            writers[name] = w
            stack.callback(lambda: w.abort() if w.tmp.exists() else None)
            return w

        # 1. Customers' latent state, chunk by chunk.
        t_cust = task("customers", len(customer_chunks))
        parts = []
        for (lo, hi), ss in zip(customer_chunks, s_customers.spawn(len(customer_chunks))):
            parts.append(_draw_customer_chunk(np.random.default_rng(ss), hi - lo, cal, knobs))
            advance(t_cust)
        cust = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        del parts

        # 2. Social profiles and each customer's topical engagement (the only channel of influence).
        prof = _draw_profiles(np.random.default_rng(s_social), cust, cal, knobs, n_customers)
        n_profiles = len(prof["owner"])
        te = _topical_engagement(prof, n_customers)
        cust["topical_engagement"] = te
        cust["is_celebrity"] = np.zeros(n_customers, dtype=bool)
        cust["is_celebrity"][prof["owner"][prof["celeb"] & (prof["owner"] >= 0)]] = True
        cust["rate"] = cust["base_rate"] * (1 + knobs.influence_on_purchases * te)
        cust["referral_weight"] = (
            cust["referral_base"]
            * (1 + knobs.influence_on_referrals * te)
            * np.where(cust["offline"], knobs.offline_influencer_boost, 1.0)
        )

        # 3. Referrals: referred customers are more loyal; referrers must be alive at the sign-up.
        cust["dropout"] = cust["dropout"] * np.where(
            cust["referral_candidate"], REFERRED_DROPOUT_FACTOR, 1.0
        )
        cust["death"] = cust["t0"] + cust["life_draw"] / cust["dropout"] * YEAR_DAYS
        referrer = _link_referrals(
            np.random.default_rng(s_referrals), cust, cust["referral_weight"], cust["death"]
        )
        cust["referrer"] = referrer
        cust["acquisition"] = np.where(
            referrer >= 0, ACQUISITION_CHANNELS.index("referral"), cust["acquisition"]
        )
        cust["referrals_made"] = np.bincount(referrer[referrer >= 0], minlength=n_customers)

        cid_width = max(7, len(str(n_customers)))
        pid_width = max(7, len(str(n_profiles)))
        customer_ids = _format_ids("C", np.arange(1, n_customers + 1), cid_width)
        profile_ids = _format_ids("P", np.arange(1, n_profiles + 1), pid_width)

        w = open_writer("referrals")
        referred = np.flatnonzero(referrer >= 0)
        referred = referred[np.lexsort((referred, np.floor(cust["t0"][referred])))]
        w.write(
            {
                "referrer_id": customer_ids.take(pa.array(referrer[referred])),
                "referred_id": customer_ids.take(pa.array(referred)),
                "timestamp": _ts(cal.to_ns(np.floor(cust["t0"][referred]))),
            }
        )

        w = open_writer("ground_truth_profiles")
        w.write(
            {
                "profile_id": profile_ids,
                "customer_id": _take(customer_ids, prof["owner"]),
                "network": _text(prof["network"], NETWORKS),
                "is_celebrity": pa.array(prof["celeb"]),
                "topical_share": pa.array(prof["topical_share"]),
                "engagement_rate": pa.array(prof["engagement_rate"]),
                "created_date": _ts(cal.to_ns(np.floor(prof["created"]))),
            }
        )

        # 4. Social snapshots and interactions, in fixed-size profile chunks.
        profile_chunks = _chunks(n_profiles, PROFILE_CHUNK_SIZE)
        t_social = task("social", 2 * len(profile_chunks))
        w = open_writer("social_profiles")
        for (lo, hi), ss in zip(profile_chunks, s_snapshots.spawn(len(profile_chunks))):
            w.write(
                _snapshot_chunk(
                    np.random.default_rng(ss), prof, lo, hi, cal, profile_ids, customer_ids
                )
            )
            advance(t_social)
        reach = (prof["followers"] + 10.0) ** TARGET_REACH_EXPONENT
        targets = []
        for k in range(len(NETWORKS)):
            members = np.flatnonzero(prof["network"] == k)
            share = prof["topical_share"][members]
            targets.append(
                {
                    True: (members, np.cumsum(reach[members] * share)),
                    False: (members, np.cumsum(reach[members] * (1 - share))),
                }
            )
        w = open_writer("social_interactions")
        for (lo, hi), ss in zip(profile_chunks, s_interactions.spawn(len(profile_chunks))):
            w.write(
                _interaction_chunk(
                    np.random.default_rng(ss), prof, lo, hi, targets, cal, knobs, profile_ids
                )
            )
            advance(t_social)
        del targets, reach

        # 5. Customers, transactions and ground truth, chunk by chunk.
        t_tx = task("transactions", len(customer_chunks))
        w_cust, w_tx, w_truth = (
            open_writer("customers"),
            open_writer("transactions"),
            open_writer("ground_truth"),
        )
        order_offset = 0
        last = cal.h_end - WINDOW_DAYS
        for (lo, hi), ss in zip(customer_chunks, s_transactions.spawn(len(customer_chunks))):
            c = {k: v[lo:hi] for k, v in cust.items()}
            ids = customer_ids.slice(lo, hi - lo)
            history, truth = _simulate_chunk(np.random.default_rng(ss), c, cal, knobs)
            w_cust.write(
                {
                    "customer_id": ids,
                    "signup_date": _ts(cal.to_ns(np.floor(c["t0"]))),
                    "region": _category(c["region"], REGIONS),
                    "acquisition_channel": _category(c["acquisition"], ACQUISITION_CHANNELS),
                    "age": pa.array(c["age"]),
                }
            )
            w_tx.write(
                {
                    "customer_id": ids.take(pa.array(history["cust"])),
                    "timestamp": _ts(history["ns"]),
                    "amount": pa.array(history["amount"]),
                    "order_id": _format_ids("O", order_offset + history["order_number"] + 1, 10),
                    "quantity": pa.array(history["quantity"]),
                    "category": _text(history["category"], CATEGORIES),
                    "channel": _text(history["channel"], CHANNELS),
                    "margin": pa.array(history["margin"]),
                }
            )
            order_offset += history["n_orders"]

            alive_end = c["death"] > cal.h_end
            alive_last = (c["death"] > last) & (c["t0"] < last)
            expected = (
                _expected_value(cal, cal.h_end, knobs.refund_rate, c, alive_end) + truth["pending"]
            )
            expected_last = (
                _expected_value(cal, last, knobs.refund_rate, c, alive_last) + truth["pending_last"]
            )
            signed_before_last = c["t0"] < last
            churn_in_reach = c["death"] < cal.h_end + WINDOW_DAYS
            mix_price = PREFERRED_CATEGORY_SHARE * CATEGORY_PRICE + (1 - PREFERRED_CATEGORY_SHARE)
            w_truth.write(
                {
                    "customer_id": ids,
                    "expected_value_next_year": pa.array(expected),
                    "realised_value_next_year": pa.array(np.round(truth["realised"], 2)),
                    "expected_value_last_year": pa.array(
                        np.where(signed_before_last, expected_last, np.nan)
                    ),
                    "realised_value_last_year": pa.array(
                        np.where(signed_before_last, np.round(truth["realised_last"], 2), np.nan)
                    ),
                    "alive_at_end": pa.array(alive_end),
                    "purchase_rate": pa.array(c["rate"]),
                    "base_purchase_rate": pa.array(c["base_rate"]),
                    "dropout_rate": pa.array(c["dropout"]),
                    "churn_date": _ts_or_null(
                        cal.to_ns(np.where(churn_in_reach, c["death"], 0.0)), churn_in_reach
                    ),
                    "mean_order_value": pa.array(c["spend"] * mix_price[c["pref_category"]]),
                    "topical_engagement": pa.array(c["topical_engagement"]),
                    "has_social_profile": pa.array(c["n_networks"] > 0),
                    "is_celebrity": pa.array(c["is_celebrity"]),
                    "is_offline_influencer": pa.array(c["offline"]),
                    "was_referred": pa.array(c["referrer"] >= 0),
                    "referral_propensity": pa.array(c["referral_weight"]),
                    "referrals_made": pa.array(c["referrals_made"].astype(np.int64)),
                }
            )
            advance(t_tx)

        for name in SCHEMAS:
            writers[name].commit()

    rows = {name: writers[name].rows for name in SCHEMAS}
    world = {
        "seed": seed,
        "n_customers": n_customers,
        "end_date": str(pd.Timestamp(end_date).date()),
        "years": years,
        "history_start": str(cal.start.date()),
        "truth_window": [
            str((cal.start + pd.Timedelta(days=cal.h_end)).date()),
            str((cal.start + pd.Timedelta(days=cal.h_end + WINDOW_DAYS)).date()),
        ],
        "last_year_window": [
            str((cal.start + pd.Timedelta(days=last)).date()),
            str((cal.start + pd.Timedelta(days=cal.h_end)).date()),
        ],
        "market_topics": list(knobs.market_topics),
        "knobs": knobs.to_dict(),
        "chunk_size": CHUNK_SIZE,
        "rows": rows,
    }
    tmp = out / ".world.json.tmp"
    tmp.write_text(json.dumps(world, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / "world.json")
    return {"out_dir": str(out), "seconds": round(time.perf_counter() - started, 3), "rows": rows}
