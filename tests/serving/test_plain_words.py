"""Plain words: every feature has a label a marketing VP reads, and reasons read as sentences."""

from __future__ import annotations

import pytest

from features.build import FAMILIES
from serving.plain_words import LABELS, label, money, plain_reason


def catalogued_features() -> list[str]:
    """Every feature name the catalogue can produce (a dynamic family by an example of its pattern)."""
    names = []
    for family in FAMILIES:
        for name in family.features:
            names.append(name.replace("<column>", "region") if family.dynamic_prefix else name)
    return names


def test_every_catalogued_feature_has_its_own_plain_label():
    unlabelled = [name for name in catalogued_features() if name not in LABELS and not name.startswith("attr_")]
    assert unlabelled == []


def test_labels_hold_no_column_names_or_jargon():
    for name in catalogued_features():
        text = label(name)
        assert "_" not in text and "SHAP" not in text and "log1p" not in text and "Gini" not in text, (name, text)
        assert text[0].isupper(), (name, text)


def test_labels_are_the_words_a_marketing_team_uses():
    assert label("net_spend_per_year") == "Net spend per year"
    assert label("btyd_p_alive") == "Chance still active"
    assert label("followers_log") == "Social media followers"
    assert label("attr_acquisition_channel") == "Acquisition channel (customer attribute)"


def test_two_features_never_share_a_label():
    labels = [label(name) for name in catalogued_features()]
    assert len(labels) == len(set(labels))


def test_a_positive_reason_raises_the_value_in_the_currency():
    assert plain_reason("net_spend_per_year=1380.19: +210.50", "EUR") == (
        "Net spend per year of EUR 1,380.19 raises the value by EUR 210.50")


def test_a_negative_reason_lowers_the_value():
    assert plain_reason("days_since_last_order=412: -1234.56", None) == (
        "Days since last order of 412 lowers the value by 1,234.56")


def test_a_missing_value_is_said_to_be_unknown():
    assert plain_reason("influence_score_max=missing: -3.20", "USD") == (
        "Influence score (vendor, 0-100) not known lowers the value by USD 3.20")


def test_values_read_as_shares_yes_no_counts_and_categories():
    assert plain_reason("btyd_p_alive=0.853: +12.00", None) == "Chance still active of 85% raises the value by 12.00"
    assert plain_reason("was_referred=1: +4.00", None) == "Came through a referral: yes raises the value by 4.00"
    assert plain_reason("followers_log=6.90875: +5.00", None) == "Social media followers of 1,000 raises the value by 5.00"
    assert plain_reason("attr_region=north east: +3.10", None) == (
        "Region (customer attribute): north east raises the value by 3.10")


@pytest.mark.parametrize("reason", [None, float("nan")])
def test_no_reason_stays_no_reason(reason):
    assert plain_reason(reason, "EUR") is None


def test_money_has_thousands_separators_and_the_currency_in_front():
    assert money(1234.4, "EUR") == "EUR 1,234"
    assert money(1234.4, None) == "1,234"
    assert money(-0.2, "EUR") == "EUR 0"
    assert money(float("nan"), "EUR") == "–"
    assert money(1234.567, "GBP", digits=2) == "GBP 1,234.57"


def test_every_feature_family_has_a_plain_name():
    from serving.plain_words import FAMILY_LABELS

    assert sorted(FAMILY_LABELS) == sorted(family.name for family in FAMILIES)
