"""Numbers as CRM exports write them: one style per column, detected or given, never a silent partial read."""

from __future__ import annotations

import pandas as pd
import pytest

from features.ingest.contract import ColumnParse, ContractError, add_parsing
from features.ingest.numbers import NumberStyleError, parse_numbers
from features.ingest.source import load_source
from tests.features.ingest.test_contract import valid_tables, write_source


def parsed(values, decimal="auto"):
    return parse_numbers(pd.Series(values, dtype="str"), decimal, column="amount")


@pytest.mark.parametrize(("values", "expected", "mark"), [
    (["1,380.19", "12.50", "7"], [1380.19, 12.5, 7.0], "."),
    (["$1,380.19", "$12.50", "-$3.00", "($4.25)", "5.75-"], [1380.19, 12.5, -3.0, -4.25, -5.75], "."),
    (["1 380,19 EUR", "12,5 EUR", "7 EUR"], [1380.19, 12.5, 7.0], ","),
    (["1.380,19 €", "1.380", "0,99 €"], [1380.19, 1380.0, 0.99], ","),
    (["1'380.50", "CHF 12"], [1380.5, 12.0], "."),
    (["2,000,000", "1,380", "12.5"], [2_000_000.0, 1380.0, 12.5], "."),
    (["1.380", "12.5"], [1.38, 12.5], "."),
], ids=["thousands-comma", "dollar-signs-and-negatives", "euro-space-thousands", "euro-dot-thousands",
        "swiss-apostrophe", "many-groups", "dot-three-decimals-with-evidence"])
def test_a_column_in_one_style_is_read_whole(values, expected, mark):
    numbers, style = parsed(values)
    assert numbers.tolist() == pytest.approx(expected)
    assert style.decimal == mark


def test_plain_numbers_need_no_style_and_stay_fast_path():
    numbers, style = parsed(["12.5", "-3", "1e3", "0.125", None])
    assert numbers.tolist()[:4] == [12.5, -3.0, 1000.0, 0.125] and pd.isna(numbers.iloc[4])
    assert style.decimal is None


def test_a_column_mixing_styles_is_an_error_naming_rows_and_examples():
    with pytest.raises(NumberStyleError) as err:
        parsed(["1,380.19", "5.00", "1.380,19"])
    assert "mixes number styles" in str(err.value)
    assert "'1,380.19'" in str(err.value) and "(rows 2; e.g. '1.380,19')" in str(err.value)


def test_a_column_that_never_tells_the_marks_apart_is_refused_until_the_mark_is_given():
    with pytest.raises(NumberStyleError, match=r"does not show whether .* --decimal"):
        parsed(["1,380", "250"])
    assert parsed(["1,380", "250"], ".")[0].tolist() == [1380.0, 250.0]
    assert parsed(["1,380", "250"], ",")[0].tolist() == [1.38, 250.0]


def test_a_given_mark_refuses_values_written_with_the_other():
    with pytest.raises(NumberStyleError, match=r"read with decimal mark ',' but holds values written with '\.'"):
        parsed(["12,50", "3.25"], ",")


def test_a_column_mixing_currencies_is_refused():
    with pytest.raises(NumberStyleError, match=r"mixes currencies \(\$, EUR\)"):
        parsed(["$5.00", "EUR 5,00"])


def test_text_that_is_no_number_in_the_column_style_is_nan_for_the_contract_to_reject():
    numbers, _ = parsed(["12.50", "abc", "1,2,3", "(5.00", "--5"])
    assert numbers.iloc[0] == 12.5 and numbers.iloc[1:].isna().all()


def test_an_export_with_dollar_amounts_and_thousands_separators_loses_no_row(tmp_path):
    tables = valid_tables(300)
    amounts = pd.to_numeric(tables["transactions"]["amount"]) * 40  # from 200 to 4,000
    tables["transactions"]["amount"] = [f"${a:,.2f}" for a in amounts]
    result = load_source(write_source(tmp_path, tables))
    assert "transactions" not in result.rejects
    assert result.tables.transactions["amount"].tolist() == pytest.approx(amounts.round(2).tolist())


def test_a_european_export_is_read_with_its_decimal_comma(tmp_path):
    tables = valid_tables(300)
    amounts = pd.to_numeric(tables["transactions"]["amount"]) * 40
    tables["transactions"]["amount"] = [f"{a:,.2f} EUR".replace(",", " ").replace(".", ",") for a in amounts]
    result = load_source(write_source(tmp_path, tables))
    assert result.tables.transactions["amount"].tolist() == pytest.approx(amounts.round(2).tolist())


def test_an_export_mixing_styles_stops_before_anything_is_read(tmp_path):
    tables = valid_tables(300)
    tables["transactions"].loc[7, "amount"] = "1.380,19"
    tables["transactions"].loc[8, "amount"] = "1,380.19"
    with pytest.raises(ContractError, match=r"transactions: column 'amount' mixes number styles"):
        load_source(write_source(tmp_path, tables))


def test_the_decimal_option_settles_an_ambiguous_export(tmp_path):
    from features.ingest.export_checks import ExportRules

    tables = valid_tables(30)
    tables["transactions"]["amount"] = ["1,380", "250", "2,500"] * 10
    source = write_source(tmp_path, tables)
    with pytest.raises(ContractError, match="pass the decimal mark"):
        load_source(source)
    loaded = load_source(source, rules=ExportRules(decimal="."))
    assert loaded.tables.transactions["amount"].head(3).tolist() == [1380.0, 250.0, 2500.0]


def test_parts_of_one_table_read_with_different_marks_are_one_column_mixing_styles():
    total: dict = {}
    add_parsing(total, {"amount": ColumnParse("number", 3, 0, decimal=".", decimal_example=(40, "1,380.19"))})
    add_parsing(total, {"amount": ColumnParse("number", 3, 0, decimal=None)}, "transactions")
    with pytest.raises(ContractError, match=r"transactions: column 'amount' mixes number styles.*rows 3, 40"):
        add_parsing(total, {"amount": ColumnParse("number", 3, 0, decimal=",", decimal_example=(3, "12,5"))},
                    "transactions")


def test_in_a_column_that_counts_things_one_separator_before_three_digits_is_a_thousands_separator():
    followers = pd.Series(["12,345", "987", "1,000,000"], dtype="str")
    assert parse_numbers(followers, column="followers", whole=True)[0].tolist() == [12345.0, 987.0, 1e6]
    european = pd.Series(["12.345", "987"], dtype="str")
    assert parse_numbers(european, column="followers", whole=True)[0].tolist() == [12345.0, 987.0]
    with pytest.raises(NumberStyleError):  # an amount could be either
        parse_numbers(followers.head(2), column="amount")


def test_an_export_with_follower_counts_written_with_thousands_separators_is_read(tmp_path):
    tables = valid_tables(30)
    tables["social_profiles"]["followers"] = ["12,345", "50,000", "8"]
    result = load_source(write_source(tmp_path, tables))
    assert result.tables.social_profiles["followers"].tolist() == [12345.0, 50000.0, 8.0]
