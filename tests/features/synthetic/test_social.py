"""Specification of the world's social layer (features/synthetic/social.py): profiles, snapshots,
the vendor score and interactions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.features.synthetic.conftest import END, MARKET

# --- social ---------------------------------------------------------------------------------------


def test_about_half_of_customers_have_one_to_three_networks(world):
    sp = world["social_profiles"]
    linked = sp.dropna(subset=["customer_id"]).drop_duplicates("profile_id")
    networks = linked.groupby("customer_id").network.agg(["size", "nunique"])
    assert 0.4 <= len(networks) / len(world["customers"]) <= 0.6
    assert networks["size"].between(1, 3).all() and (networks["size"] == networks["nunique"]).all()
    assert (networks["size"] > 1).mean() > 0.2
    customer_profiles = linked.profile_id.nunique()
    non_customer = sp[sp.customer_id.isna()].profile_id.nunique()
    assert 0.8 <= non_customer / customer_profiles <= 1.25


def test_profiles_are_snapshotted_quarterly_at_most_twelve_times(world):
    sp = world["social_profiles"]
    dates = np.sort(sp.snapshot_date.unique())
    assert len(dates) == 12 and dates[-1] == END
    gaps = pd.Series(dates).diff().dt.days.dropna()
    assert gaps.between(89, 93).all()
    assert sp.groupby("profile_id").size().max() <= 12
    assert not sp.duplicated(["profile_id", "snapshot_date"]).any()
    # followers move between snapshots, both up and down
    change = sp.sort_values("snapshot_date").groupby("profile_id").followers.diff().dropna()
    assert (change > 0).mean() > 0.2 and (change < 0).mean() > 0.1
    # posts is the platform's running count; engagements are per quarter and come and go
    by_profile = sp.sort_values("snapshot_date").groupby("profile_id")
    assert (by_profile.posts.diff().dropna() >= 0).all()
    assert (by_profile.engagements.diff().dropna() < 0).mean() > 0.2


def test_followers_are_heavy_tailed(last_snapshot):
    followers = last_snapshot.followers
    top_percent = (
        np.sort(followers.to_numpy())[::-1][: len(followers) // 100].sum() / followers.sum()
    )
    assert top_percent > 0.5
    assert followers.max() > 1e4 * followers.median()
    ordinary = last_snapshot[~last_snapshot.is_celebrity].followers
    assert ordinary.quantile(0.99) > 20 * ordinary.median()  # power law even without celebrities


def test_engagement_grows_sublinearly_with_followers(last_snapshot):
    active = last_snapshot[(last_snapshot.engagements > 0) & (last_snapshot.followers > 0)]
    slope = np.polyfit(np.log(active.followers), np.log(active.engagements), 1)[0]
    assert 0.4 < slope < 0.95


def test_celebrities_have_huge_off_topic_reach(world, last_snapshot):
    celebs = last_snapshot[last_snapshot.is_celebrity]
    assert len(celebs) >= 5 and celebs.customer_id.notna().sum() == 2
    assert (celebs.followers > 5e5).all()
    assert (
        celebs.topical_share.max()
        < 0.1
        < last_snapshot[~last_snapshot.is_celebrity].topical_share.mean()
    )
    assert world["ground_truth"].is_celebrity.sum() == 2


def test_vendor_score_tracks_reach_and_engagement_but_ignores_topic(last_snapshot):
    rho = last_snapshot[["influence_score", "followers", "engagements", "topical_share"]].corr(
        "spearman"
    )
    assert rho.loc["influence_score", "followers"] > 0.6
    assert rho.loc["influence_score", "engagements"] > 0.6
    assert abs(rho.loc["influence_score", "topical_share"]) < 0.05


def test_about_five_interactions_per_profile_on_many_topics(world):
    si, sp = world["social_interactions"], world["social_profiles"]
    assert 4 <= len(si) / sp.profile_id.nunique() <= 6
    assert set(si.kind) == {"mention", "share", "reply", "like"}
    topics = set(si.topic.dropna())
    assert set(MARKET) < topics and {"music", "sports", "celebrity"} < topics
    assert 0 < si.topic.isna().mean() < 0.1


def test_topical_profiles_interact_on_market_topics_more(world):
    si, truth = world["social_interactions"], world["ground_truth_profiles"]
    share = truth.set_index("profile_id").topical_share
    on_topic = si.topic.isin(MARKET)
    source_share = share[si.source_profile_id].to_numpy()
    high = source_share > np.quantile(source_share, 0.75)
    low = source_share < np.quantile(source_share, 0.25)
    assert on_topic[high].mean() > 4 * on_topic[low].mean()
    # market-topic interactions land on topical profiles
    target_share = share[si.target_profile_id].to_numpy()
    assert target_share[on_topic].mean() > 2 * target_share[~on_topic].mean()


def test_interactions_prefer_targets_with_reach(world, last_snapshot):
    in_degree = world["social_interactions"].target_profile_id.value_counts()
    snap = last_snapshot.set_index("profile_id")
    in_degree = in_degree.reindex(snap.index, fill_value=0)
    pair = pd.DataFrame({"followers": snap.followers.to_numpy(), "in_degree": in_degree.to_numpy()})
    assert pair.corr("spearman").loc["followers", "in_degree"] > 0.2
    assert in_degree[snap.is_celebrity].mean() > 100 * in_degree[~snap.is_celebrity].mean()
