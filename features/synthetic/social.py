"""The social layer: profiles, topical engagement, quarterly snapshots and interactions.

Each customer's topical engagement (engagement received on the market topics) is the only channel
through which the social layer influences value; snapshots carry the vendor's influence score.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from features.synthetic.columns import take_ids, text_column, ts_column
from features.synthetic.knobs import (
    CELEBRITY_FOLLOWERS_LOG10,
    ENGAGEMENT_EXPONENT,
    ENGAGEMENT_PER_POST,
    FOLLOWER_CAP,
    FOLLOWER_SCALE,
    FOLLOWER_TAIL,
    INTERACTION_KINDS,
    INTERACTIONS_PER_PROFILE,
    KIND_SHARE,
    MISSING_TOPIC_SHARE,
    NETWORK_SHARE,
    NETWORKS,
    OTHER_TOPICS,
    TARGET_REACH_EXPONENT,
    TOPICAL_ENGAGEMENT_REF,
    YEAR_DAYS,
    WorldKnobs,
)
from features.synthetic.sampling import draw_codes
from features.synthetic.timeline import Calendar

# --------------------------------------------------------------------------------------------------
# Profiles: latent reach, activity and topical share per profile; snapshots drawn later.


def draw_profiles(
    rng: np.random.Generator, cust: dict, cal: Calendar, knobs: WorldKnobs, n_customers: int
) -> dict:
    """All profiles (customers' on 1-3 distinct networks, non-customers', celebrities') with their
    latent traits, as arrays by name in profile-id order; ``owner`` is the customer index or -1."""
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
    network = np.concatenate([cust_network, draw_codes(rng, NETWORK_SHARE, n_plain + n_celebs)])
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


def topical_engagement(prof: dict, n_customers: int) -> np.ndarray:
    """Per customer: log1p(expected topical engagements per quarter over their profiles / reference)."""
    own = prof["owner"] >= 0
    topical = np.bincount(
        prof["owner"][own],
        weights=(prof["engagement_rate"] * prof["topical_share"])[own],
        minlength=n_customers,
    )
    return np.log1p(topical / TOPICAL_ENGAGEMENT_REF)


# --------------------------------------------------------------------------------------------------
# Snapshots: what the social-monitoring vendor reports each quarter.


def _influence_score(
    rng: np.random.Generator, followers: np.ndarray, engagements: np.ndarray
) -> np.ndarray:
    """Vendor (Klout-style) score: reach and engagement on a logistic 0-100 scale; blind to topic."""
    raw = 0.55 * np.log10(1 + followers) + 0.45 * np.log10(1 + engagements)
    score = 100 / (1 + np.exp(-1.4 * (raw - 3.0))) + rng.normal(0, 1.5, len(raw))
    return np.round(np.clip(score, 0, 100), 1)


def snapshot_chunk(
    rng: np.random.Generator,
    prof: dict,
    lo: int,
    hi: int,
    cal: Calendar,
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
        "customer_id": take_ids(customer_ids, prof["owner"][lo + p]),
        "network": text_column(prof["network"][lo + p], NETWORKS),
        "snapshot_date": ts_column(cal.start_ns + cal.snapshot_days[q] * 86_400 * 1_000_000_000),
        "followers": pa.array(followers),
        "following": pa.array(following[exists]),
        "posts": pa.array(posts[exists].astype(np.float64)),
        "engagements": pa.array(engagements),
        "influence_score": pa.array(_influence_score(rng, followers, engagements)),
    }


# --------------------------------------------------------------------------------------------------
# Interactions: targets within the source's network, by reach and topical fit.


def interaction_targets(prof: dict) -> list:
    """Per network, for on-topic (True) and off-topic (False) interactions: the member profiles and
    the cumulative target weights (reach x topical share, or reach x the rest)."""
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
    return targets


def interaction_chunk(
    rng: np.random.Generator,
    prof: dict,
    lo: int,
    hi: int,
    targets: list,
    cal: Calendar,
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
    kind = draw_codes(rng, KIND_SHARE, m)
    start = np.maximum(np.maximum(prof["created"][src], prof["created"][tgt]), 0.0)
    seconds = cal.seconds(start + rng.random(m) * (cal.h_end - start))
    order = np.argsort((src << 40) | seconds, kind="stable")  # by source, then time
    return {
        "source_profile_id": profile_ids.take(pa.array(src[order])),
        "target_profile_id": profile_ids.take(pa.array(tgt[order])),
        "timestamp": ts_column(cal.start_ns + seconds[order] * 1_000_000_000),
        "kind": text_column(kind[order], INTERACTION_KINDS),
        "topic": text_column(topic[order], labels, mask=topic_missing[order]),
    }
