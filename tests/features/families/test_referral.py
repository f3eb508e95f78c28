import numpy as np
import pandas as pd

from features.build import build_features
from features.config import FeatureConfig
from features.families.referral import FEATURES, referral_features, revenue_rows
from features.tables import Tables

AS_OF = pd.Timestamp("2025-01-01")


def ts(*values):
    return pd.to_datetime(list(values), format="ISO8601").astype("datetime64[ns]")


CUSTOMERS = pd.DataFrame({
    "customer_id": ["a", "b", "c", "d", "late"],
    "signup_date": ts("2022-01-01", "2023-01-01", "2024-03-01", "2024-06-01", "2025-02-01"),
})
TX = pd.DataFrame({
    "customer_id": ["b", "b", "c", "c", "d"],
    "timestamp": ts("2023-02-01", "2023-03-01", "2024-04-01", "2025-01-01", "2024-07-01"),
    "amount": [100.0, -20.0, 50.0, 1000.0, 7.0],
})


def referrals(rows):
    referrer, referred, when = zip(*rows)
    return pd.DataFrame({"referrer_id": list(referrer), "referred_id": list(referred),
                         "timestamp": ts(*when)})


def referral(refs, as_of=AS_OF):
    return referral_features(Tables(CUSTOMERS, TX, referrals=refs), as_of, FeatureConfig())


def expected(columns):
    return pd.DataFrame(columns, index=pd.Index(["a", "b", "c", "d"], name="customer_id"),
                        dtype="float64")


def test_counts_revenue_of_referred_customers_and_referred_status():
    refs = referrals([("a", "b", "2023-01-01"), ("a", "c", "2024-03-01"),
                      ("b", "d", "2024-06-01")])
    pd.testing.assert_frame_equal(
        referral(refs),
        expected({
            "referrals_made": [2.0, 1.0, 0.0, 0.0],
            "referrals_made_365d": [1.0, 1.0, 0.0, 0.0],
            # b: 100 - 20; c: only the 50 before as_of; d: 7.
            "referred_revenue": [130.0, 7.0, 0.0, 0.0],
            "was_referred": [0.0, 1.0, 1.0, 1.0],
        }),
    )


def test_referrals_dated_on_or_after_as_of_do_not_count():
    refs = referrals([("a", "b", "2024-12-31"), ("a", "c", "2025-01-01"),
                      ("d", "late", "2025-03-01")])
    out = referral(refs)
    assert out["referrals_made"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert out["was_referred"].tolist() == [0.0, 1.0, 0.0, 0.0]


def test_repeated_invitations_count_once_dated_by_the_first():
    refs = referrals([("a", "b", "2023-01-01"), ("a", "b", "2024-12-01")])
    out = referral(refs)
    assert out.loc["a", "referrals_made"] == 1.0
    assert out.loc["a", "referrals_made_365d"] == 0.0
    assert out.loc["a", "referred_revenue"] == 80.0


def test_unknown_without_a_referrals_table():
    out = build_features(Tables(CUSTOMERS, TX), AS_OF, FeatureConfig(), families=["referral"])
    assert list(out.columns) == list(FEATURES)
    assert out.isna().all(axis=None)  # unknown, not the family's fill of 0
    assert list(out.index) == ["a", "b", "c", "d"]


def test_referrer_who_signed_up_after_as_of_gets_no_row():
    refs = referrals([("late", "a", "2024-01-01")])
    out = referral(refs)
    assert "late" not in out.index
    assert out.loc["a", "was_referred"] == 1.0
    assert np.all(out["referrals_made"] == 0.0)


def test_revenue_rows_give_the_same_features_as_the_transactions():
    """The batch scorer hands the family one summarised row per referred customer."""
    refs = referrals([("a", "b", "2023-01-01"), ("a", "c", "2024-03-01"), ("b", "d", "2024-06-01")])
    summary = revenue_rows(TX, AS_OF)
    # b's refund is netted; c's transaction on as_of is not revenue before as_of.
    assert summary.set_index("customer_id")["amount"].to_dict() == {"b": 80.0, "c": 50.0, "d": 7.0}
    assert (summary["timestamp"] < AS_OF).all()
    from_rows = referral_features(Tables(CUSTOMERS, summary, referrals=refs), AS_OF, FeatureConfig())
    pd.testing.assert_frame_equal(from_rows, referral(refs), check_exact=True)
