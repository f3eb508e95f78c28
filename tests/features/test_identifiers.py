"""Which customer attributes count as identifiers and stay out of the features (features.identifiers)."""

import pandas as pd
import pytest

from features.config import FeatureConfig
from features.errors import UserError
from features.identifiers import identifier_columns, identifier_reason, resolve_attributes


def customers(n: int, **columns) -> pd.DataFrame:
    base = {"customer_id": [f"C{i}" for i in range(n)], "signup_date": pd.Timestamp("2024-01-01")}
    return pd.DataFrame({**base, **columns})


def test_email_addresses_are_identifiers_even_on_a_tiny_table():
    frame = customers(3, email=["ann@example.org", "bob@example.org", "cy@mail.example.com"])
    assert identifier_columns(frame) == {"email": "e-mail addresses"}


def test_phone_numbers_are_identifiers_in_the_usual_notations():
    frame = customers(3, phone=["+44 20 7946 0958", "(555) 123-4567", "555.987.6543"])
    assert identifier_columns(frame) == {"phone": "phone numbers"}


def test_dates_written_as_text_are_not_phone_numbers():
    frame = customers(3, last_store_visit=["2024-01-05", "2024-03-17", "05/06/2024"])
    assert identifier_columns(frame) == {}


def test_text_with_a_value_per_customer_is_an_identifier():
    frame = customers(500, account=[f"acct-{i}" for i in range(500)])
    assert identifier_columns(frame)["account"].startswith("nearly unique text (500 distinct values")


def test_categorical_text_is_judged_by_its_levels():
    frame = customers(500, account=pd.Categorical([f"acct-{i}" for i in range(500)]))
    assert "account" in identifier_columns(frame)


def test_segments_short_codes_and_numbers_are_not_identifiers():
    frame = customers(
        600,
        region=pd.Categorical(["north", "south", "east"] * 200),
        postcode=[f"{i % 90 + 10:05d}" for i in range(600)],  # a few digits: a code, not a phone
        age=range(600),  # numeric: never judged, however distinct
        spend=[i * 1.5 for i in range(600)],
    )
    assert identifier_columns(frame) == {}


def test_a_few_distinct_values_on_a_small_table_are_a_segment():
    assert identifier_reason(pd.Series([f"team-{i}" for i in range(50)]), rows=60) is None


def test_a_few_stray_values_do_not_hide_an_email_column():
    values = pd.Series([f"user{i}@example.org" for i in range(90)] + ["n/a"] * 10)
    assert identifier_reason(values, rows=100) == "e-mail addresses"


def test_without_an_allow_list_every_attribute_but_the_identifiers_is_used():
    config, excluded = resolve_attributes(FeatureConfig(), ["region", "email", "age"],
                                          {"email": "e-mail addresses"})
    assert config.attributes == ("region", "age")
    assert excluded == {"email": "e-mail addresses"}


def test_an_allow_list_is_the_users_decision_and_is_kept_as_given():
    config, excluded = resolve_attributes(FeatureConfig(attributes=("email",)), ["region", "email"],
                                          {"email": "e-mail addresses"})
    assert config.attributes == ("email",)
    assert excluded == {}


def test_an_allow_list_naming_a_missing_column_stops_the_run_naming_it():
    with pytest.raises(UserError, match="features.attributes names customers column the source lacks: tier"):
        resolve_attributes(FeatureConfig(attributes=("region", "tier")), ["region"], {})
