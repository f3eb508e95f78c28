"""Specification of the synthetic world (features/synthetic/world.py), checked on small generated worlds."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.synthetic import world as synthetic
from features.synthetic.world import WorldKnobs, generate_world

END = pd.Timestamp("2025-12-31")
TRUTH_START = END + pd.Timedelta(days=1)
MARKET = ("outdoor", "hiking")
CONTRACT_FILES = (
    "customers",
    "transactions",
    "social_profiles",
    "social_interactions",
    "referrals",
)
ALL_FILES = CONTRACT_FILES + ("ground_truth", "ground_truth_profiles")

STR, TS, F64 = "str", "datetime64[ns]", "float64"
CONTRACT_DTYPES = {
    "customers": {
        "customer_id": STR,
        "signup_date": TS,
        "region": "category",
        "acquisition_channel": "category",
        "age": F64,
    },
    "transactions": {
        "customer_id": STR,
        "timestamp": TS,
        "amount": F64,
        "order_id": STR,
        "quantity": F64,
        "category": STR,
        "channel": STR,
        "margin": F64,
    },
    "social_profiles": {
        "profile_id": STR,
        "customer_id": STR,
        "network": STR,
        "snapshot_date": TS,
        "followers": F64,
        "following": F64,
        "posts": F64,
        "engagements": F64,
        "influence_score": F64,
    },
    "social_interactions": {
        "source_profile_id": STR,
        "target_profile_id": STR,
        "timestamp": TS,
        "kind": STR,
        "topic": STR,
    },
    "referrals": {"referrer_id": STR, "referred_id": STR, "timestamp": TS},
}


def read_world(path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(path / f"{name}.parquet") for name in ALL_FILES}


def top_decile_share(values: pd.Series) -> float:
    v = np.sort(values.to_numpy())[::-1]
    return v[: len(v) // 10].sum() / v.sum()


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    summary = generate_world(out, n_customers=20_000, seed=42)
    return out, summary


@pytest.fixture(scope="module")
def world(world_dir):
    return read_world(world_dir[0])


@pytest.fixture(scope="module")
def last_snapshot(world):
    sp = world["social_profiles"]
    last = sp[sp.snapshot_date == sp.snapshot_date.max()]
    return last.merge(
        world["ground_truth_profiles"].drop(columns=["customer_id", "network"]), on="profile_id"
    )


# --- files, determinism, contract -----------------------------------------------------------------


def file_digests(path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def test_same_seed_writes_byte_identical_files_and_another_seed_does_not(tmp_path):
    generate_world(tmp_path / "a", n_customers=2_000, seed=7)
    generate_world(tmp_path / "b", n_customers=2_000, seed=7)
    generate_world(tmp_path / "c", n_customers=2_000, seed=8)
    a, b, c = (file_digests(tmp_path / x) for x in "abc")
    assert sorted(a) == sorted(f"{n}.parquet" for n in ALL_FILES) + ["world.json"]
    assert a == b
    assert all(a[name] != c[name] for name in a if name.endswith(".parquet"))


def test_multi_chunk_worlds_are_deterministic_with_one_row_group_per_chunk(tmp_path, monkeypatch):
    # Smaller chunks exercise the chunked path (RNG stream per chunk, background encoding order).
    monkeypatch.setattr(synthetic, "CHUNK_SIZE", 700)
    monkeypatch.setattr(synthetic, "PROFILE_CHUNK_SIZE", 900)
    generate_world(tmp_path / "a", n_customers=2_000, seed=5)
    generate_world(tmp_path / "b", n_customers=2_000, seed=5)
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")
    assert pq.ParquetFile(tmp_path / "a" / "transactions.parquet").num_row_groups == 3
    assert pq.ParquetFile(tmp_path / "a" / "social_interactions.parquet").num_row_groups > 1
    customers = pd.read_parquet(tmp_path / "a" / "customers.parquet")
    assert customers.customer_id.is_unique and len(customers) == 2_000
    orders = pd.read_parquet(tmp_path / "a" / "transactions.parquet").query("amount > 0")
    assert orders.order_id.is_unique


def test_every_contract_column_is_present_with_the_contract_dtype(world):
    for table, dtypes in CONTRACT_DTYPES.items():
        frame = world[table]
        assert list(frame.columns) == list(dtypes), table
        assert {c: str(frame[c].dtype) for c in frame} == dtypes, table


def test_ids_are_zero_padded_and_keys_resolve(world):
    customers, tx = world["customers"], world["transactions"]
    assert customers.customer_id.iloc[0] == "C0000001" and customers.customer_id.is_unique
    assert world["social_profiles"].profile_id.str.fullmatch(r"P\d{7}").all()
    assert tx.customer_id.isin(customers.customer_id).all()
    ref = world["referrals"]
    assert ref.referrer_id.isin(customers.customer_id).all() and ref.referred_id.is_unique
    sp, si = world["social_profiles"], world["social_interactions"]
    assert sp.customer_id.dropna().isin(customers.customer_id).all()
    profiles = (
        sp.profile_id.unique()
    )  # isin on pyarrow strings is slow with a large, repetitive lookup set
    assert si.source_profile_id.isin(profiles).all() and si.target_profile_id.isin(profiles).all()
    assert (si.source_profile_id != si.target_profile_id).all()


def test_numbers_are_finite_and_social_counts_non_negative(world):
    assert np.isfinite(world["transactions"].amount).all()
    sp = world["social_profiles"]
    for col in ("followers", "following", "posts", "engagements"):
        assert (sp[col] >= 0).all(), col
    assert sp.influence_score.between(0, 100).all()


def test_nothing_in_the_contract_tables_is_dated_after_end_date(world):
    dated = {
        "customers": "signup_date",
        "transactions": "timestamp",
        "social_profiles": "snapshot_date",
        "social_interactions": "timestamp",
        "referrals": "timestamp",
    }
    for table, column in dated.items():
        assert world[table][column].max() < TRUTH_START, (
            table
        )  # on or before end_date (any time that day)
    assert world["social_profiles"].snapshot_date.max() == END
    assert world["customers"].signup_date.min() >= pd.Timestamp("2021-01-01")


def test_world_json_and_summary_describe_the_files(world_dir, world):
    out, summary = world_dir
    meta = json.loads((out / "world.json").read_text())
    assert meta["seed"] == 42 and meta["n_customers"] == 20_000 and meta["end_date"] == "2025-12-31"
    assert meta["market_topics"] == list(MARKET) and meta["knobs"]["influence_on_purchases"] == 0.2
    assert meta["truth_window"] == ["2026-01-01", "2027-01-01"]
    assert meta["rows"] == summary["rows"] == {name: len(world[name]) for name in ALL_FILES}
    assert summary["out_dir"] == str(out) and summary["seconds"] > 0
    assert not [f for f in out.iterdir() if f.name.startswith(".")]  # temp files were renamed away


# --- buying ---------------------------------------------------------------------------------------


def test_about_ten_transactions_per_customer(world):
    assert 7 <= len(world["transactions"]) / len(world["customers"]) <= 13


def test_signups_grow_year_over_year(world):
    per_year = world["customers"].signup_date.dt.year.value_counts().sort_index()
    assert list(per_year.index) == [2021, 2022, 2023, 2024, 2025]
    assert per_year.is_monotonic_increasing and per_year[2025] > 1.5 * per_year[2021]


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


# --- referrals ------------------------------------------------------------------------------------


def test_ten_to_twenty_percent_of_customers_were_referred_by_live_customers(world):
    ref, customers, gt = world["referrals"], world["customers"], world["ground_truth"]
    assert 0.10 <= len(ref) / len(customers) <= 0.20
    signup = customers.set_index("customer_id").signup_date
    churn = gt.set_index("customer_id").churn_date
    assert (ref.timestamp == signup[ref.referred_id].to_numpy()).all()
    assert (signup[ref.referrer_id].to_numpy() < ref.timestamp).all()
    referrer_churn = churn[ref.referrer_id].to_numpy()
    assert (pd.isna(referrer_churn) | (referrer_churn >= ref.timestamp)).all()
    channel = customers.set_index("customer_id").acquisition_channel
    assert (channel[ref.referred_id] == "referral").all()
    assert (channel == "referral").sum() == len(ref)


def test_offline_influencers_have_no_social_trace_and_refer_more(world):
    gt = world["ground_truth"]
    offline = gt[gt.is_offline_influencer]
    assert len(offline) > 20 and not offline.has_social_profile.any()
    assert not offline.customer_id.isin(
        world["social_profiles"].customer_id.dropna().unique()
    ).any()
    assert offline.referrals_made.mean() > 5 * gt[~gt.is_offline_influencer].referrals_made.mean()
    counts = world["referrals"].referrer_id.value_counts()
    assert (
        counts.reindex(gt.customer_id, fill_value=0).to_numpy() == gt.referrals_made.to_numpy()
    ).all()


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


def test_custom_market_topics_and_end_date_shape_the_world(tmp_path):
    knobs = WorldKnobs(market_topics=("climbing", "tech"))
    generate_world(
        tmp_path,
        n_customers=1_500,
        seed=1,
        end_date="2024-06-30",
        years=3,
        knobs=knobs,
        progress=True,
    )
    tx = pd.read_parquet(tmp_path / "transactions.parquet")
    si = pd.read_parquet(tmp_path / "social_interactions.parquet")
    customers = pd.read_parquet(tmp_path / "customers.parquet")
    assert tx.timestamp.max() < pd.Timestamp("2024-07-01")
    assert customers.signup_date.min() >= pd.Timestamp("2021-07-01")
    assert {"climbing", "tech"} < set(si.topic.dropna())
    assert json.loads((tmp_path / "world.json").read_text())["market_topics"] == [
        "climbing",
        "tech",
    ]
