"""Social reach and engagement: what each customer's own profiles say about their audience.

Also home of the profile helpers the other social families share (which profiles a customer
owns, each profile's latest snapshot), so that every family maps profiles the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.tables import Tables

FAMILY = "social"
FEATURES = {
    "followers_log": "log1p of followers summed over the customer's profiles (latest snapshots)",
    "follower_growth_90d": "log1p(followers) minus log1p(followers on a snapshot >= 90 days older)",
    "follower_growth_365d": "log1p(followers) minus log1p(followers on a snapshot >= 365d older)",
    "posts": "posts summed over the customer's profiles (latest snapshot each)",
    "engagement_rate": "engagements / (followers + 100), latest snapshots; shrinks tiny accounts",
    "influence_score_max": "vendor influence score (0-100), max over networks; NaN if not supplied",
    "n_networks": "number of distinct networks the customer has a profile on",
    "days_since_last_snapshot": "days from the customer's most recent profile snapshot to as_of",
}
FILL: dict[str, float] = {}
POPULATION_WIDE = False

# Followers added to the denominator of engagement_rate. Without it a 3-follower account with
# 10 likes would look 30x more engaging than a brand; with it, accounts far below ~100 followers
# are pulled towards zero and large accounts keep (almost) their raw rate.
ENGAGEMENT_PSEUDO_FOLLOWERS = 100.0
GROWTH_WINDOWS_DAYS = (90, 365)

_DAY = pd.Timedelta(days=1)


def empty_features(columns) -> pd.DataFrame:
    """A zero-row feature frame with the family's float64 columns and a str customer_id index."""
    index = pd.Index([], dtype="str", name="customer_id")
    return pd.DataFrame({c: pd.Series([], dtype="float64", index=index) for c in columns})


def profile_snapshots(
    social_profiles: pd.DataFrame, as_of: pd.Timestamp, lookback_days: tuple[int, ...] = ()
) -> pd.DataFrame:
    """One row per profile with a snapshot before as_of: its owner and its latest snapshot.

    Index ``profile_id``; columns ``customer_id`` (owner, NaN for non-customer profiles),
    ``network``, ``snapshot_date`` and the metrics of the latest snapshot (``followers``,
    ``following``, ``posts``, ``engagements``, ``influence_score`` when supplied), plus
    ``followers_{d}d_before`` for each d in lookback_days: followers on the latest snapshot dated
    at least d days before the latest one (NaN when the profile has no such history).

    The owner is the customer_id of the latest snapshot that carries one: identity resolution
    re-links profiles when it corrects itself, and the newest link known at as_of wins. Among
    snapshots of one profile on the same date, the later row of the table wins.
    """
    # Leakage: only snapshots strictly before as_of exist at scoring time.
    snaps = social_profiles.loc[
        (social_profiles["snapshot_date"] < as_of) & social_profiles["profile_id"].notna()
    ]
    codes, profile_ids = pd.factorize(snaps["profile_id"])
    n_profiles = len(profile_ids)
    dates = snaps["snapshot_date"].to_numpy("datetime64[ns]").view("int64")
    everything = np.ones(len(snaps), dtype=bool)
    latest_rows = _latest_rows(codes, dates, everything, n_profiles)

    metrics = ["network", "snapshot_date", "followers", "following", "posts", "engagements"]
    if "influence_score" in snaps.columns:
        metrics.append("influence_score")
    out = snaps[metrics].iloc[latest_rows]
    out.index = pd.Index(profile_ids, name="profile_id")

    owner_rows = _latest_rows(codes, dates, snaps["customer_id"].notna().to_numpy(), n_profiles)
    owners = snaps["customer_id"].iloc[np.maximum(owner_rows, 0)].where(owner_rows >= 0)
    out.insert(0, "customer_id", owners.array)

    followers = snaps["followers"].to_numpy("float64")
    for d in lookback_days:
        cutoff = dates[latest_rows] - pd.Timedelta(days=d).value
        reference_rows = _latest_rows(codes, dates, dates <= cutoff[codes], n_profiles)
        out[f"followers_{d}d_before"] = np.where(
            reference_rows >= 0, followers[reference_rows], np.nan
        )
    return out


def _latest_rows(
    codes: np.ndarray, dates: np.ndarray, eligible: np.ndarray, n_groups: int
) -> np.ndarray:
    """Row position of each group's latest eligible row (-1 if none); the later row wins a date tie.

    Two scatter-max passes instead of a sort: linear in the number of rows.
    """
    latest_date = np.full(n_groups, np.iinfo(np.int64).min)
    np.maximum.at(latest_date, codes[eligible], dates[eligible])
    is_latest = eligible & (dates == latest_date[codes])
    rows = np.full(n_groups, -1, dtype=np.int64)
    np.maximum.at(rows, codes[is_latest], np.flatnonzero(is_latest))
    return rows


def customer_profiles(
    social_profiles: pd.DataFrame | None, as_of: pd.Timestamp, lookback_days: tuple[int, ...] = ()
) -> pd.DataFrame:
    """profile_snapshots of the profiles owned by a customer (empty when there is no table)."""
    if social_profiles is None:
        return pd.DataFrame(
            columns=["customer_id"], index=pd.Index([], dtype="str", name="profile_id")
        )
    profiles = profile_snapshots(social_profiles, as_of, lookback_days)
    return profiles.loc[profiles["customer_id"].notna()]


def customer_codes(customer_ids: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer code of each row's customer and the sorted customer_id index the codes point into.

    Aggregating with np.bincount on these codes hashes the ids once instead of once per groupby.
    """
    codes, customers = pd.factorize(customer_ids, sort=True)
    return codes, pd.Index(customers, dtype="str", name="customer_id")


def social_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Per-customer reach, growth and engagement from profile snapshots dated before as_of.

    Across a customer's profiles (one per network, usually): followers, posts and engagements
    are summed (one audience reached through several channels), the vendor score is the max
    (vendors score each network on its own scale of fame), staleness uses the freshest profile.
    """
    profiles = customer_profiles(tables.social_profiles, as_of, GROWTH_WINDOWS_DAYS)
    if profiles.empty:
        return empty_features(FEATURES)

    codes, customers = customer_codes(profiles["customer_id"])
    k = len(customers)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=values, minlength=k)

    followers = profiles["followers"].to_numpy("float64")
    followers_total = total(followers)
    out = pd.DataFrame(index=customers)
    out["followers_log"] = np.log1p(followers_total)
    for d in GROWTH_WINDOWS_DAYS:
        # Growth over the profiles that have history that far back; others neither add nor dilute.
        before = profiles[f"followers_{d}d_before"].to_numpy("float64")
        has_history = ~np.isnan(before)
        growth = np.log1p(total(np.where(has_history, followers, 0.0))) - np.log1p(
            total(np.where(has_history, before, 0.0))
        )
        out[f"follower_growth_{d}d"] = np.where(total(has_history) > 0, growth, np.nan)
    out["posts"] = total(profiles["posts"].to_numpy("float64"))
    out["engagement_rate"] = total(profiles["engagements"].to_numpy("float64")) / (
        followers_total + ENGAGEMENT_PSEUDO_FOLLOWERS
    )
    score_max = np.full(k, np.nan)
    if "influence_score" in profiles.columns:
        np.fmax.at(score_max, codes, profiles["influence_score"].to_numpy("float64"))  # skips NaN
    out["influence_score_max"] = score_max
    network_codes, networks = pd.factorize(profiles["network"])
    customer_networks = np.unique(codes * (len(networks) + 1) + network_codes + 1)
    out["n_networks"] = np.bincount(customer_networks // (len(networks) + 1), minlength=k)
    latest = np.full(k, np.iinfo(np.int64).min)
    np.maximum.at(latest, codes, profiles["snapshot_date"].to_numpy("datetime64[ns]").view("int64"))
    out["days_since_last_snapshot"] = (as_of.value - latest) / _DAY.value
    return out[list(FEATURES)].astype("float64")
