import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.families.attributes import attributes_features
from features.tables import Tables

AS_OF = pd.Timestamp("2025-01-01")
NO_TX = pd.DataFrame({"customer_id": pd.Series([], dtype="str"),
                      "timestamp": pd.Series([], dtype="datetime64[ns]"),
                      "amount": pd.Series([], dtype="float64")})


def attributes(customers):
    return attributes_features(Tables(customers, NO_TX), AS_OF, FeatureConfig())


def customers(**columns):
    base = {"customer_id": ["b", "a", "c"],
            "signup_date": pd.to_datetime(["2024-01-01", "2024-02-01", "2025-01-01"])}
    return pd.DataFrame({**base, **columns})


def test_static_columns_become_prefixed_features_for_eligible_customers_sorted_by_id():
    tier = pd.Categorical(["gold", "silver", "bronze"], categories=["bronze", "gold", "silver"])
    out = attributes(customers(tier=tier, age=[30, 41, 50], vip=[True, False, True]))
    expected = pd.DataFrame(
        {"attr_tier": pd.Categorical(["silver", "gold"], categories=["bronze", "gold", "silver"]),
         "attr_age": [41.0, 30.0], "attr_vip": [0.0, 1.0]},
        index=pd.Index(["a", "b"], name="customer_id"),
    )
    pd.testing.assert_frame_equal(out, expected)


def test_loaded_category_levels_are_kept_even_when_unused():
    # The loader sets levels from the whole table: they must not vary with the window or chunk.
    tier = pd.Categorical(["gold", "gold", "platinum"])
    out = attributes(customers(tier=tier))
    assert list(out["attr_tier"].cat.categories) == ["gold", "platinum"]


def test_plain_text_gets_sorted_levels_from_eligible_customers_only():
    out = attributes(customers(region=pd.Series(["west", None, "zz-later"], dtype="str")))
    expected = pd.Series(pd.Categorical([np.nan, "west"], categories=["west"]),
                         index=pd.Index(["a", "b"], name="customer_id"), name="attr_region")
    pd.testing.assert_series_equal(out["attr_region"], expected)


def test_date_columns_are_left_out():
    out = attributes(customers(birthday=pd.to_datetime(["1990-01-01"] * 3), age=[1, 2, 3]))
    assert list(out.columns) == ["attr_age"]


def test_no_attribute_columns_gives_an_empty_frame_over_eligible_customers():
    out = attributes(customers())
    assert out.shape == (2, 0)
    assert list(out.index) == ["a", "b"]


def test_identifier_like_text_columns_are_not_features():
    out = attributes(customers(email=["a@x.org", "b@x.org", "c@x.org"], phone=["+1 555 0100 001"] * 3,
                               age=[1, 2, 3]))
    assert list(out.columns) == ["attr_age"]


def test_an_allow_list_picks_exactly_its_columns_in_table_order():
    frame = customers(tier=["gold", "silver", "gold"], age=[1, 2, 3], vip=[True, False, True])
    out = attributes_features(Tables(frame, NO_TX), AS_OF, FeatureConfig(attributes=("vip", "tier")))
    assert list(out.columns) == ["attr_tier", "attr_vip"]


def test_an_empty_allow_list_keeps_every_attribute_out():
    out = attributes_features(Tables(customers(age=[1, 2, 3]), NO_TX), AS_OF, FeatureConfig(attributes=()))
    assert out.shape == (2, 0)
