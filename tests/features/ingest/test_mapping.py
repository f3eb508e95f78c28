"""A source directory whose files and columns carry the export's own names, read through a mapping.

What is specified here: with ``tables`` and ``columns`` mapped, an export validates exactly as its
contract-named copy does (same typed tables, same rejects, same counts), in CSV and Parquet, whole or
in batches; the run's fingerprint names the files actually read; a mapping that names what the
contract or the file does not have is one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from features.ingest.contract import ContractError
from features.ingest.database import DatabaseMapping
from features.ingest.mapping import SourceMapping, as_mapping
from features.ingest.partition import iter_batches
from features.ingest.source import load_source, table_files
from tests.features.ingest.test_contract import valid_tables, write_source

# How a CRM export might name the contract's tables and columns.
MAPPING = {
    "tables": {"customers": "clients", "transactions": "orders", "social_profiles": "accounts",
               "social_interactions": "activity", "referrals": "invites"},
    "columns": {
        "customers": {"customer_id": "client_no", "signup_date": "joined"},
        "transactions": {"customer_id": "client_no", "timestamp": "placed_at", "amount": "total"},
        "social_profiles": {"profile_id": "handle", "customer_id": "client_no"},
        "social_interactions": {"source_profile_id": "from_handle", "target_profile_id": "to_handle"},
        "referrals": {"referrer_id": "sponsor", "referred_id": "newcomer"},
    },
}
MAPPING_TOML = """
[tables]
customers = "clients"
transactions = "orders"
social_profiles = "accounts"
social_interactions = "activity"
referrals = "invites"

[columns.customers]
customer_id = "client_no"
signup_date = "joined"

[columns.transactions]
customer_id = "client_no"
timestamp = "placed_at"
amount = "total"

[columns.social_profiles]
profile_id = "handle"
customer_id = "client_no"

[columns.social_interactions]
source_profile_id = "from_handle"
target_profile_id = "to_handle"

[columns.referrals]
referrer_id = "sponsor"
referred_id = "newcomer"
"""
REJECT_THRESHOLD = 0.5  # the malformed tables below reject up to a third of a small table


def malformed_tables() -> dict[str, pd.DataFrame]:
    """The small valid source with bad rows: a customer (whose transactions follow it), transactions
    and an interaction."""
    tables = valid_tables()
    tables["customers"].loc[1, "signup_date"] = "2023-02-30"
    tables["transactions"].loc[17, "amount"] = "ten"
    tables["transactions"].loc[40, "customer_id"] = "C404"
    tables["social_interactions"].loc[2, "target_profile_id"] = "P404"
    return tables


def as_exported(tables: dict[str, pd.DataFrame], mapping: dict = MAPPING) -> dict[str, pd.DataFrame]:
    """The same tables under the export's names: file stem -> frame with the export's column names."""
    return {mapping["tables"].get(table, table):
            frame.rename(columns={c: s for c, s in mapping["columns"].get(table, {}).items()})
            for table, frame in tables.items()}


def write_export(directory: Path, frames: dict[str, pd.DataFrame], fmt: str = "csv") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        if fmt == "parquet":
            frame.to_parquet(directory / f"{name}.parquet", index=False)
        else:
            frame.to_csv(directory / f"{name}.csv", index=False)
    return directory


def assert_same_load(got, expected) -> None:
    for (name, a), (_, b) in zip(got.tables.items(), expected.tables.items()):
        pd.testing.assert_frame_equal(a, b, obj=name)
    assert [name for name, _ in got.tables.items()] == [name for name, _ in expected.tables.items()]
    pd.testing.assert_frame_equal(got.summary, expected.summary)
    assert set(got.rejects) == set(expected.rejects)
    for table, frame in expected.rejects.items():
        pd.testing.assert_frame_equal(got.rejects[table], frame, obj=f"rejects of {table}")


# ---------------------------------------------------------------------------------------------
# The same tables and rejects as the contract-named copy


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_renamed_export_validates_exactly_like_its_contract_named_copy(tmp_path, fmt):
    tables = malformed_tables()
    expected = load_source(write_source(tmp_path, tables, fmt), reject_threshold=REJECT_THRESHOLD)
    export = write_export(tmp_path / "export", as_exported(tables), fmt)

    got = load_source(export, mapping=MAPPING, reject_threshold=REJECT_THRESHOLD)

    assert_same_load(got, expected)
    assert set(got.rejects) == {"customers", "transactions", "social_interactions"}
    assert "unparsable amount 'ten'" in " | ".join(got.rejects["transactions"]["reason"])


def test_a_mapping_file_in_toml_or_json_reads_the_export_the_same(tmp_path):
    export = write_export(tmp_path / "export", as_exported(malformed_tables()))
    (tmp_path / "m.toml").write_text(MAPPING_TOML)
    (tmp_path / "m.json").write_text(json.dumps(MAPPING))
    from_dict = load_source(export, mapping=MAPPING, reject_threshold=REJECT_THRESHOLD)
    for path in (tmp_path / "m.toml", tmp_path / "m.json"):
        assert_same_load(load_source(export, mapping=path, reject_threshold=REJECT_THRESHOLD), from_dict)


def test_only_the_names_that_differ_need_mapping(tmp_path):
    tables = valid_tables()
    expected = load_source(write_source(tmp_path, tables))
    partial = {"tables": {"transactions": "orders"}, "columns": {"transactions": {"amount": "total"}}}
    export = write_export(tmp_path / "export", as_exported(tables, partial))
    assert "orders.csv" in [p.name for p in export.iterdir()]
    assert_same_load(load_source(export, mapping=partial), expected)


def test_customer_attributes_may_be_renamed_too(tmp_path):
    tables = valid_tables()
    expected = load_source(write_source(tmp_path, tables))
    mapping = {"columns": {"customers": {"region": "Region Name"}}}
    export = write_export(tmp_path / "export", as_exported(tables, {"tables": {}, **mapping}))
    got = load_source(export, mapping=mapping)
    assert list(got.tables.customers.columns) == ["customer_id", "signup_date", "region", "age"]
    assert_same_load(got, expected)


def test_a_file_column_named_like_a_mapped_contract_column_is_ignored_as_in_a_database(tmp_path):
    tables = valid_tables()
    expected = load_source(write_source(tmp_path, tables))
    frames = as_exported(tables)
    frames["orders"]["amount"] = "not the amount"  # the export's own column; the mapping says 'total'
    got = load_source(write_export(tmp_path / "export", frames), mapping=MAPPING)
    assert_same_load(got, expected)


def test_batches_read_for_the_chunked_engines_carry_the_contract_names(tmp_path):
    tables = malformed_tables()
    contract = write_source(tmp_path, tables, "parquet")
    export = write_export(tmp_path / "export", as_exported(tables), "parquet")
    renaming = SourceMapping.from_dict(MAPPING).renaming("transactions")

    got = pa.Table.from_batches(iter_batches(export / "orders.parquet", table="transactions", renaming=renaming))
    expected = pa.Table.from_batches(iter_batches(contract / "transactions.parquet", table="transactions"))

    assert got.equals(expected)


# ---------------------------------------------------------------------------------------------
# What a run records


def test_the_fingerprint_names_the_files_read_and_the_columns_renamed(tmp_path):
    export = write_export(tmp_path / "export", as_exported(valid_tables()))
    prints = load_source(export, mapping=MAPPING).fingerprint
    assert {table: entry["files"] for table, entry in prints.items()} == {
        "customers": ["clients.csv"], "transactions": ["orders.csv"], "social_profiles": ["accounts.csv"],
        "social_interactions": ["activity.csv"], "referrals": ["invites.csv"]}
    assert prints["transactions"]["columns"] == {"customer_id": "client_no", "timestamp": "placed_at",
                                                 "amount": "total"}


def test_a_contract_named_file_is_not_read_when_the_mapping_names_another(tmp_path):
    tables = valid_tables()
    export = write_export(tmp_path / "export", as_exported(tables, {"tables": {"transactions": "orders"},
                                                                   "columns": {}}))
    tables["transactions"].head(3).to_csv(export / "transactions.csv", index=False)  # an older export
    files = table_files(export, as_mapping({"tables": {"transactions": "orders"}}))
    assert [p.name for p in files["transactions"]] == ["orders.csv"]


# ---------------------------------------------------------------------------------------------
# A mapping that cannot apply is one line


def test_a_mapping_names_only_contract_tables_and_columns():
    with pytest.raises(ContractError, match=r"^mapping: transactions has no contract column 'total' "
                                            r"\(columns are amount, category, .*\)$"):
        SourceMapping.from_dict({"columns": {"transactions": {"total": "amount"}}})
    with pytest.raises(ContractError, match="unknown contract table.*'orders'"):
        SourceMapping.from_dict({"tables": {"orders": "transactions"}})


def test_two_contract_tables_cannot_read_the_same_file():
    with pytest.raises(ContractError, match="customers and transactions would both be read from 'customers'"):
        SourceMapping.from_dict({"tables": {"transactions": "customers"}})


def test_a_mapped_column_missing_from_the_file_names_the_file_and_its_columns(tmp_path):
    export = write_export(tmp_path / "export", as_exported(valid_tables()))
    wrong = {**MAPPING, "columns": {**MAPPING["columns"], "transactions": {"amount": "amount_eur"}}}
    with pytest.raises(ContractError, match=r"^transactions: mapped column 'amount' -> 'amount_eur' not found "
                                            r"in orders.csv \(columns present: client_no, placed_at, total\)$"):
        load_source(export, mapping=wrong)


def test_a_required_table_the_mapping_points_elsewhere_is_missing(tmp_path):
    source = write_source(tmp_path, valid_tables())
    with pytest.raises(ContractError, match="^transactions: required table is missing"):
        load_source(source, mapping={"tables": {"transactions": "orders"}})


def test_the_database_mapping_is_the_same_mapping():
    assert DatabaseMapping is SourceMapping
