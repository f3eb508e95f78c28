"""Specification of the coverage family: which customers we can see on social media."""

import pandas as pd
import pytest

from features.config import FeatureConfig
from features.families.coverage import FILL, coverage_features
from features.tables import Tables

AS_OF = pd.Timestamp("2024-07-01")
CONFIG = FeatureConfig()


def snapshots(rows):
    return (
        pd.DataFrame(rows, columns=["profile_id", "customer_id", "snapshot_date"])
        .assign(
            network="x",
            followers=1.0,
            following=1.0,
            posts=1.0,
            engagements=1.0,
        )
        .astype(
            {
                "profile_id": "str",
                "customer_id": "str",
                "snapshot_date": "datetime64[ns]",
                "network": "str",
            }
        )
    )


def tables(social_profiles):
    customers = pd.DataFrame(
        {
            "customer_id": pd.Series(["c1", "c2", "c3"], dtype="str"),
            "signup_date": pd.to_datetime(["2020-01-01"] * 3).astype("datetime64[ns]"),
        }
    )
    transactions = pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype="str"),
            "timestamp": pd.Series([], dtype="datetime64[ns]"),
            "amount": pd.Series([], dtype="float64"),
        }
    )
    return Tables(customers=customers, transactions=transactions, social_profiles=social_profiles)


def covered(customers):
    return pd.DataFrame(
        {"has_social_profile": [1.0] * len(customers)},
        index=pd.Index(customers, dtype="str", name="customer_id"),
    )


def test_customers_with_a_profile_snapshot_before_as_of_are_covered():
    result = coverage_features(
        tables(
            snapshots(
                [
                    ("p2", "c2", "2024-01-01"),
                    ("p1", "c1", "2023-05-01"),
                    ("p3", "c1", "2024-02-01"),  # a second profile does not add a row
                ]
            )
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(result, covered(["c1", "c2"]))


def test_snapshot_on_or_after_as_of_does_not_cover():
    result = coverage_features(
        tables(
            snapshots(
                [
                    ("p1", "c1", "2024-06-30"),
                    ("p2", "c2", "2024-07-01"),
                    ("p3", "c3", "2024-09-01"),
                ]
            )
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(result, covered(["c1"]))


def test_profiles_without_customer_are_not_mapped():
    result = coverage_features(
        tables(
            snapshots(
                [
                    ("p1", "c1", "2024-01-01"),
                    ("p9", None, "2024-01-01"),
                ]
            )
        ),
        AS_OF,
        CONFIG,
    )
    pd.testing.assert_frame_equal(result, covered(["c1"]))


@pytest.mark.parametrize("social_profiles", [None, snapshots([("p9", None, "2024-01-01")])])
def test_missing_social_tables_give_empty_frames(social_profiles):
    result = coverage_features(tables(social_profiles), AS_OF, CONFIG)
    pd.testing.assert_frame_equal(result, covered([]))


def test_customers_without_a_profile_are_filled_with_zero_not_nan():
    assert FILL == {"has_social_profile": 0.0}
