"""Specification of the world's customers (features/synthetic/customers.py): sign-ups, referrals."""

from __future__ import annotations

import pandas as pd


def test_signups_grow_year_over_year(world):
    per_year = world["customers"].signup_date.dt.year.value_counts().sort_index()
    assert list(per_year.index) == [2021, 2022, 2023, 2024, 2025]
    assert per_year.is_monotonic_increasing and per_year[2025] > 1.5 * per_year[2021]


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
