import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features import build
from features.build import (
    FAMILIES,
    FAMILY_NAMES,
    build_features,
    feature_family_of,
    population_features,
    select_families,
)
from features.catalog import SOCIAL_FAMILIES, FeatureFamily
from features.config import FeatureConfig
from features.tables import Tables

AS_OF = pd.Timestamp("2025-01-01")
CONFIG = FeatureConfig()


def ts(*values):
    return pd.to_datetime(list(values), format="ISO8601").astype("datetime64[ns]")


CUSTOMERS = pd.DataFrame({
    "customer_id": ["c", "a", "b", "late"],
    "signup_date": ts("2024-01-01", "2023-01-01", "2024-06-01", "2025-01-01"),
    "tier": pd.Categorical(["gold", "silver", "gold", "gold"]),
})
TX = pd.DataFrame({
    "customer_id": ["a", "a", "b"],
    "timestamp": ts("2024-03-01", "2024-09-01", "2024-12-01"),
    "amount": [10.0, 20.0, 5.0],
})
REFERRALS = pd.DataFrame({"referrer_id": ["a"], "referred_id": ["b"], "timestamp": ts("2024-06-01")})
TABLES = Tables(CUSTOMERS, TX, referrals=REFERRALS)
INDEX = pd.Index(["a", "b", "c"], name="customer_id")


def fake_family(name="fake", frame=None, **kwargs):
    """A family computing a fixed frame, to specify how build_features treats family output."""
    def compute(tables, as_of, config):
        return frame.copy()

    return FeatureFamily(name=name, features={"x": "x", "y": "y"}, compute=compute, **kwargs)


def test_registry_order_is_crm_families_then_social_ones():
    assert FAMILY_NAMES == ("history", "btyd", "season", "attributes", "referral", "coverage", "social",
                            "network", "topical")
    assert {f.name for f in FAMILIES if f.is_social} == set(SOCIAL_FAMILIES)
    assert {f.name for f in FAMILIES if f.population_wide} == {"btyd", "referral", "network", "topical"}


def test_one_sorted_row_per_customer_signed_up_before_as_of_and_every_feature_in_order():
    out = build_features(TABLES, AS_OF, CONFIG)
    assert out.index.equals(INDEX)
    expected_columns = []
    for family in FAMILIES:
        if family.dynamic_prefix:
            expected_columns.append("attr_tier")
        else:
            expected_columns += list(family.features)
    assert list(out.columns) == expected_columns


def test_numbers_are_float64_and_text_attributes_category():
    out = build_features(TABLES, AS_OF, CONFIG)
    assert out["attr_tier"].dtype == "category"
    assert (out.drop(columns="attr_tier").dtypes == "float64").all()


def test_selected_families_come_back_in_registry_order():
    out = build_features(TABLES, AS_OF, CONFIG, families=["referral", "history"])
    assert list(out.columns[:3]) == ["tenure_days", "days_since_first_order",
                                     "days_since_last_order"]
    assert list(out.columns[-4:]) == ["referrals_made", "referrals_made_365d",
                                      "referred_revenue", "was_referred"]


def test_unknown_family_is_an_error():
    with pytest.raises(ValueError, match="unknown feature family 'histry'"):
        build_features(TABLES, AS_OF, CONFIG, families=["histry"])


def test_fill_applies_only_to_customers_absent_from_a_family():
    frame = pd.DataFrame({"x": [np.nan, 2.0], "y": [1, 3]},
                         index=pd.Index(["a", "zzz"], name="customer_id"))
    family = fake_family(frame=frame, fill={"x": 0.0})
    out = build_features(TABLES, AS_OF, CONFIG, families=[family])
    expected = pd.DataFrame({"x": [np.nan, 0.0, 0.0], "y": [1.0, np.nan, np.nan]}, index=INDEX)
    pd.testing.assert_frame_equal(out, expected)


def test_family_output_columns_are_put_in_declared_order_and_checked():
    frame = pd.DataFrame({"y": [1.0], "x": [2.0]}, index=pd.Index(["a"], name="customer_id"))
    out = build_features(TABLES, AS_OF, CONFIG, families=[fake_family(frame=frame)])
    assert list(out.columns) == ["x", "y"]
    with pytest.raises(ValueError, match=r"missing \['y'\], extra \['z'\]"):
        bad = frame.rename(columns={"y": "z"})
        build_features(TABLES, AS_OF, CONFIG, families=[fake_family(frame=bad)])
    with pytest.raises(ValueError, match="indexed by customer_id"):
        build_features(TABLES, AS_OF, CONFIG,
                       families=[fake_family(frame=frame.rename_axis("id"))])


def test_text_feature_becomes_category_and_bool_float():
    frame = pd.DataFrame({"x": [True, False], "y": pd.array(["b", "a"], dtype="str")},
                         index=pd.Index(["a", "b"], name="customer_id"))
    out = build_features(TABLES, AS_OF, CONFIG, families=[fake_family(frame=frame)])
    expected = pd.DataFrame(
        {"x": [1.0, 0.0, np.nan], "y": pd.Categorical(["b", "a", np.nan], categories=["a", "b"])},
        index=INDEX,
    )
    pd.testing.assert_frame_equal(out, expected)


def test_precomputed_population_wide_features_are_joined_to_a_chunk():
    everyone = population_features(TABLES, AS_OF, CONFIG, families=["history", "referral"])
    assert set(everyone) == {"referral"}
    # The chunk holds only customer a: its tables no longer show that b (a's referral) spent 5.
    chunk = Tables(CUSTOMERS[CUSTOMERS.customer_id == "a"], TX[TX.customer_id == "a"],
                   referrals=REFERRALS)
    alone = build_features(chunk, AS_OF, CONFIG, families=["referral"])
    joined = build_features(chunk, AS_OF, CONFIG, families=["referral"], precomputed=everyone)
    assert alone.loc["a", "referred_revenue"] == 0.0
    assert joined.loc["a", "referred_revenue"] == 5.0
    assert list(joined.index) == ["a"]


def test_precomputed_features_for_another_cutoff_are_refused():
    everyone = population_features(TABLES, pd.Timestamp("2024-07-01"), CONFIG, families=["referral"])
    with pytest.raises(ValueError, match="as of 2024-07-01"):
        build_features(TABLES, AS_OF, CONFIG, families=["referral"], precomputed=everyone)


def test_on_family_hears_every_family_with_its_seconds():
    heard = []
    build_features(TABLES, AS_OF, CONFIG, on_family=lambda name, s: heard.append((name, s)))
    assert [name for name, _ in heard] == list(FAMILY_NAMES)
    assert all(isinstance(s, float) and s >= 0 for _, s in heard)


def test_same_inputs_give_identical_outputs():
    pd.testing.assert_frame_equal(build_features(TABLES, AS_OF, CONFIG),
                                  build_features(TABLES, AS_OF, CONFIG), check_exact=True)


def test_no_eligible_customers_gives_an_empty_frame_with_every_column():
    out = build_features(TABLES, pd.Timestamp("2020-01-01"), CONFIG)
    assert len(out) == 0
    assert list(out.columns) == list(build_features(TABLES, AS_OF, CONFIG).columns)


def test_a_cutoff_is_a_naive_timestamp_never_parsed_here():
    for value in ("2025-01-01", dt.date(2025, 1, 1), pd.Timestamp("2025-01-01", tz="UTC")):
        with pytest.raises(TypeError, match="as_of must be a naive pd.Timestamp"):
            build_features(TABLES, value, CONFIG)


def test_feature_family_of_resolves_dynamic_names_by_prefix():
    assert feature_family_of("spend_90d") == "history"
    assert feature_family_of("attr_region") == "attributes"
    assert feature_family_of("pagerank") == "network"
    with pytest.raises(KeyError):
        feature_family_of("nope")


def test_select_families_accepts_names_and_family_objects():
    history = FAMILIES[0]
    assert select_families(["network", history]) == (history, FAMILIES[FAMILY_NAMES.index("network")])
    assert select_families("history") == (history,)
    assert select_families(None) is build.FAMILIES
