"""The data contract: every bad-input rule, each with a real malformed file on disk."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.ingest.contract import ContractError
from features.ingest.source import load_source, write_rejects


def valid_tables(n_tx: int = 300) -> dict[str, pd.DataFrame]:
    """A small valid source: 3 customers, n_tx transactions, two profiles with interactions, a referral."""
    return {
        "customers": pd.DataFrame({
            "customer_id": ["C1", "C2", "C3"],
            "signup_date": ["2023-01-05", "2023-02-10", "2023-03-15"],
            "region": ["north", "south", "north"],
            "age": ["34", "51", "27"],
        }),
        "transactions": pd.DataFrame({
            "customer_id": (["C1", "C2", "C3"] * n_tx)[:n_tx],
            "timestamp": pd.date_range("2023-04-01", periods=n_tx, freq="D").strftime("%Y-%m-%d"),
            "amount": np.round(np.linspace(5, 100, n_tx), 2).astype(str),
        }),
        "social_profiles": pd.DataFrame({
            "profile_id": ["P1", "P2", "P3"],
            "customer_id": ["C1", "", "C3"],
            "network": ["instagram", "x", "x"],
            "snapshot_date": ["2023-06-30"] * 3,
            "followers": ["120", "50000", "8"],
            "following": ["80", "10", "3"],
            "posts": ["40", "900", "1"],
            "engagements": ["300", "12000", "0"],
            "influence_score": ["31", "77", ""],
        }),
        "social_interactions": pd.DataFrame({
            "source_profile_id": ["P1", "P3", "P2"],
            "target_profile_id": ["P2", "P1", "P1"],
            "timestamp": ["2023-05-01", "2023-05-02", "2023-05-03"],
            "kind": ["mention", "share", "reply"],
            "topic": ["outdoor", "music", ""],
        }),
        "referrals": pd.DataFrame({
            "referrer_id": ["C1"], "referred_id": ["C3"], "timestamp": ["2023-03-15"],
        }),
    }


def write_source(tmp_path: Path, tables: dict[str, pd.DataFrame], fmt: str = "csv") -> Path:
    src = tmp_path / "source"
    src.mkdir(exist_ok=True)
    for name, frame in tables.items():
        if fmt == "parquet":
            frame.to_parquet(src / f"{name}.parquet", index=False)
        else:
            frame.to_csv(src / f"{name}.csv", index=False)
    return src


def test_a_valid_source_loads_every_row_with_contract_dtypes(tmp_path):
    result = load_source(write_source(tmp_path, valid_tables()))
    t = result.tables
    assert t.customers["customer_id"].dtype == "str"
    assert t.customers["signup_date"].dtype == "datetime64[ns]"
    assert isinstance(t.customers["region"].dtype, pd.CategoricalDtype)
    assert t.customers["age"].dtype == "float64"
    assert t.transactions["amount"].dtype == "float64"
    assert t.transactions["timestamp"].dtype == "datetime64[ns]"
    assert t.social_profiles["customer_id"].isna().tolist() == [False, True, False]
    assert np.isnan(t.social_profiles["influence_score"].iloc[2])
    assert t.social_interactions["topic"].isna().tolist() == [False, False, True]
    assert result.rejects == {}
    assert (result.summary["rows_in"] == result.summary["rows_kept"]).all()


def test_optional_tables_may_be_absent(tmp_path):
    tables = valid_tables()
    src = write_source(tmp_path, {k: tables[k] for k in ("customers", "transactions")})
    t = load_source(src).tables
    assert t.social_profiles is None and t.social_interactions is None and t.referrals is None


def test_parquet_and_gzipped_csv_are_read(tmp_path):
    tables = valid_tables()
    src = write_source(tmp_path, {"customers": tables["customers"]}, fmt="parquet")
    with gzip.open(src / "transactions.csv.gz", "wt") as fh:
        tables["transactions"].to_csv(fh, index=False)
    t = load_source(src).tables
    assert len(t.transactions) == 300


def test_timezone_aware_timestamps_are_converted_to_utc(tmp_path):
    tables = valid_tables(3)
    tables["transactions"]["timestamp"] = ["2023-05-01T23:30:00+02:00", "2023-05-01 08:00", "2023-05-02"]
    t = load_source(write_source(tmp_path, tables)).tables
    assert t.transactions["timestamp"].tolist() == [
        pd.Timestamp("2023-05-01 21:30"), pd.Timestamp("2023-05-01 08:00"), pd.Timestamp("2023-05-02")]


def test_numeric_ids_in_parquet_become_strings(tmp_path):
    tables = valid_tables(3)
    tables = {"customers": tables["customers"].assign(customer_id=[101, 102, 103]),
              "transactions": tables["transactions"].assign(customer_id=[101, 102, 103])}
    t = load_source(write_source(tmp_path, tables, fmt="parquet")).tables
    assert t.transactions["customer_id"].tolist() == ["101", "102", "103"]


# ------------------------------------------------------------------ structural problems stop the run

def test_missing_required_table_stops(tmp_path):
    src = write_source(tmp_path, {"customers": valid_tables()["customers"]})
    with pytest.raises(ContractError, match="transactions: required table is missing"):
        load_source(src)


def test_missing_required_column_names_table_and_column(tmp_path):
    tables = valid_tables()
    tables["transactions"] = tables["transactions"].drop(columns="amount")
    with pytest.raises(ContractError, match=r"transactions: missing required column 'amount'"):
        load_source(write_source(tmp_path, tables))


def test_column_that_cannot_be_parsed_at_all_stops_with_rows_and_values(tmp_path):
    tables = valid_tables(5)
    tables["transactions"]["amount"] = ["ten", "eleven", "x", "y", "z"]
    with pytest.raises(ContractError) as err:
        load_source(write_source(tmp_path, tables))
    message = str(err.value)
    assert "transactions: column 'amount' cannot be parsed as number at all" in message
    assert "rows 0, 1, 2, 3, 4" in message and "'ten'" in message


def test_duplicate_customer_id_stops_naming_rows_and_ids(tmp_path):
    tables = valid_tables()
    tables["customers"].loc[2, "customer_id"] = "C1"
    with pytest.raises(ContractError, match=r"customers: column 'customer_id' has 1 duplicated values \(rows 0, 2; e.g. 'C1'\)"):
        load_source(write_source(tmp_path, tables))


def test_two_files_for_one_table_is_ambiguous(tmp_path):
    tables = valid_tables()
    src = write_source(tmp_path, tables)
    tables["customers"].to_parquet(src / "customers.parquet")
    with pytest.raises(ContractError, match="customers: more than one file"):
        load_source(src)


def test_too_many_rejected_rows_stop_the_run(tmp_path):
    tables = valid_tables(100)
    tables["transactions"].loc[[3, 7], "timestamp"] = "2023-13-45"
    with pytest.raises(ContractError, match=r"transactions: 2 of 100 rows \(2.0%\) are invalid.*unparsable timestamp"):
        load_source(write_source(tmp_path, tables))
    assert len(load_source(write_source(tmp_path, tables), reject_threshold=0.05).rejects["transactions"]) == 2


# ------------------------------------------------------------------ row-level problems go to rejects

@pytest.mark.parametrize(
    "table, column, row, bad, reason",
    [
        ("transactions", "timestamp", 17, "2024-13-01", "unparsable timestamp '2024-13-01'"),
        ("transactions", "amount", 42, "inf", "amount is not a finite number"),
        ("transactions", "amount", 43, "", "missing amount"),
        ("transactions", "customer_id", 99, "C404", "customer_id refers to an unknown customer"),
        ("customers", "signup_date", 1, "someday", "unparsable signup_date 'someday'"),
        ("social_profiles", "followers", 0, "-5", "followers is negative"),
        ("social_profiles", "influence_score", 1, "140", "influence_score is outside 0-100"),
        ("social_profiles", "customer_id", 2, "C404", "customer_id refers to an unknown customer"),
        ("social_interactions", "target_profile_id", 1, "P404", "target_profile_id refers to an unknown profile"),
        ("referrals", "referred_id", 0, "C404", "referred_id refers to an unknown customer"),
        ("referrals", "referred_id", 0, "C1", "self-referral"),
        ("transactions", "amount", 7, "1e30", "implausible amount '1e30'"),
        ("transactions", "timestamp", 8, "2052-03-01", "timestamp in the future '2052-03-01'"),
        ("social_profiles", "snapshot_date", 0, "2099-01-01", "snapshot_date in the future"),
        ("social_interactions", "timestamp", 0, "2099-01-01", "timestamp in the future"),
    ],
)
def test_bad_rows_are_rejected_with_a_reason_and_nothing_is_lost(tmp_path, table, column, row, bad, reason):
    tables = valid_tables()
    tables[table].loc[row, column] = bad
    src = write_source(tmp_path, tables)
    result = load_source(src, reject_threshold=1.0)  # the threshold has its own test
    rejects = result.rejects[table]
    assert rejects["row"].tolist() == [row]
    assert reason in rejects["reason"].iloc[0]
    summary = result.summary.set_index("table")
    assert (summary["rows_in"] == summary["rows_kept"] + summary["rows_rejected"]).all()
    assert summary.loc[table, "rows_rejected"] == 1
    written = write_rejects(result.rejects, tmp_path / "rejects")
    on_disk = pd.read_csv(written[0], dtype=str, keep_default_na=False)
    assert on_disk.loc[0, column] == bad and reason in on_disk.loc[0, "reason"]


def test_exact_duplicate_transactions_are_rejected_and_the_first_is_kept(tmp_path):
    tables = valid_tables(300)
    tx = tables["transactions"]
    tables["transactions"] = pd.concat([tx, tx.iloc[[5, 5, 9]]], ignore_index=True)  # rows 300-302
    # A repeated line that differs in one column (here the amount) is a real line, not a duplicate.
    tables["transactions"].loc[len(tables["transactions"])] = [tx.loc[11, "customer_id"], tx.loc[11, "timestamp"], "1.00"]
    result = load_source(write_source(tmp_path, tables), reject_threshold=1.0)
    rejects = result.rejects["transactions"]
    assert rejects["row"].tolist() == [300, 301, 302]
    assert set(rejects["reason"]) == {"duplicate row"}
    assert len(result.tables.transactions) == 301


def test_a_customer_who_signs_up_in_the_future_is_rejected_with_their_transactions(tmp_path, monkeypatch):
    from features.ingest import export_checks

    monkeypatch.setattr(export_checks, "today", lambda: pd.Timestamp("2023-03-01"))
    tables = valid_tables(30)
    result = load_source(write_source(tmp_path, tables), reject_threshold=1.0)
    # C3 signed up on 2023-03-15; every transaction (from 2023-04-01) is after "today" too.
    assert result.rejects["customers"]["reason"].tolist() == ["signup_date in the future '2023-03-15'"]
    assert (result.rejects["transactions"]["reason"].str.contains("timestamp in the future")).all()


@pytest.mark.parametrize("name", ["loyalty {tier}", "$\\foo$", "a:b", 'say "hi"', "list[0]", " "])
def test_a_customers_column_whose_name_cannot_be_a_feature_stops_at_validation(tmp_path, name):
    tables = valid_tables()
    tables["customers"][name] = ["x", "y", "z"]
    with pytest.raises(ContractError, match=r"customers: column name .* cannot become a feature name"):
        load_source(write_source(tmp_path, tables))


def test_a_rejected_customer_takes_their_transactions_along_as_unknown(tmp_path):
    tables = valid_tables(300)
    tables["customers"].loc[1, "signup_date"] = "not a date"
    result = load_source(write_source(tmp_path, tables), reject_threshold=0.5)
    assert "C2" not in set(result.tables.customers["customer_id"])
    assert (result.rejects["transactions"]["customer_id"] == "C2").all()
    assert len(result.rejects["transactions"]) == 100


def test_parse_counts_of_parts_name_the_tables_first_failed_rows_whatever_the_part_order():
    from features.ingest.contract import ColumnParse, add_parsing, check_parsing

    total: dict = {}
    add_parsing(total, {"amount": ColumnParse("number", 3, 3, [40, 41, 42], ["x40", "x41", "x42"])})
    add_parsing(total, {"amount": ColumnParse("number", 4, 4, [2, 7, 9, 11], ["x2", "x7", "x9", "x11"])})
    with pytest.raises(ContractError) as err:
        check_parsing("transactions", total)
    assert "(rows 2, 7, 9, 11, 40, ...; e.g. 'x2', 'x7', 'x9', 'x11', 'x40')" in str(err.value)
    add_parsing(total, {"amount": ColumnParse("number", 5, 0)})  # another part parses: no error
    check_parsing("transactions", total)


def test_ids_written_differently_in_two_tables_are_named_with_the_normalisation_that_would_match(tmp_path):
    tables = valid_tables(30)
    tables["customers"]["customer_id"] = ["0000001", "0000002", "0000003"]
    tables["transactions"]["customer_id"] = (["1.0", "2.0", "3"] * 10)[:30]
    for name in ("social_profiles", "referrals", "social_interactions"):
        tables.pop(name)
    with pytest.raises(ContractError) as err:
        load_source(write_source(tmp_path, tables))
    message = str(err.value)
    assert "transactions: 30 of 30 rows (100.0%) are invalid" in message
    assert "customer_id values not in customers: '1.0', '2.0', '3'" in message
    assert "100% of them match a customer id once leading zeros, a trailing .0 and blanks are removed" in message
    assert "'0000001'" in message


def test_an_unknown_id_is_named_in_its_reject_reason(tmp_path):
    tables = valid_tables()
    tables["transactions"].loc[99, "customer_id"] = "C404"
    rejects = load_source(write_source(tmp_path, tables), reject_threshold=1.0).rejects["transactions"]
    assert rejects["reason"].tolist() == ["customer_id refers to an unknown customer 'C404'"]


def test_a_new_run_leaves_no_stale_rejects_file_and_never_deletes_an_export(tmp_path):
    tables = valid_tables()
    tables["transactions"].loc[99, "customer_id"] = "C404"
    rejects_dir = tmp_path / "rejects"
    first = load_source(write_source(tmp_path, tables), reject_threshold=1.0)
    assert [p.name for p in write_rejects(first.rejects, rejects_dir)] == ["transactions.csv"]
    (rejects_dir / "customers.csv").write_text("customer_id,signup_date\nC1,2023-01-05\n")  # a real export
    (tmp_path / "clean").mkdir()
    clean = load_source(write_source(tmp_path / "clean", valid_tables()), reject_threshold=1.0)
    assert write_rejects(clean.rejects, rejects_dir) == []
    assert not (rejects_dir / "transactions.csv").exists()
    assert (rejects_dir / "customers.csv").read_text().startswith("customer_id,signup_date")


def test_transactions_before_signup_are_kept_and_named_in_the_notes_with_the_largest_amounts(tmp_path):
    tables = valid_tables(30)
    tables["transactions"].loc[[0, 3], "timestamp"] = "2022-12-01"  # C1 signed up on 2023-01-05
    tables["transactions"].loc[5, "amount"] = "25000.00"
    result = load_source(write_source(tmp_path, tables))
    assert len(result.tables.transactions) == 30
    assert result.notes[0].startswith("largest amounts kept: 25,000.00, ")
    assert result.notes[1].startswith("2 transactions of 1 customers are dated before the customer's signup_date (kept")
