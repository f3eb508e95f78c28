"""PostgreSQL as a source: the same tables, rejects and features as files, against a real server."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import psycopg
import pytest

from features.build import build_features
from features.config import FeatureConfig
from features.ingest.contract import ContractError
from features.ingest.database import (
    DatabaseMapping,
    SourceUnavailableError,
    export_database,
    mask_url,
    read_database,
)
from features.ingest.database_load import load_source_to_database
from features.ingest.source import load_source
from features.synthetic.world import generate_world
from tests.clv_process import run_clv
from tests.features.ingest.test_contract import valid_tables, write_source

UNTIL = pd.Timestamp("2024-07-01")
CLV = str(Path(sys.executable).with_name("clv"))


def in_row_order(frame: pd.DataFrame) -> pd.DataFrame:
    """A table sorted by every column: a database returns rows in its own order, files in theirs."""
    return frame.sort_values(list(frame.columns), ignore_index=True)


def assert_same_tables(left, right) -> None:
    assert [name for name, _ in left.items()] == [name for name, _ in right.items()]
    for (name, a), (_, b) in zip(left.items(), right.items()):
        pd.testing.assert_frame_equal(in_row_order(a), in_row_order(b), check_exact=True, obj=name)


def run_sql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def query(url: str, statement: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(statement).fetchall()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A small generated world on disk (300 customers, every table)."""
    out = tmp_path_factory.mktemp("world")
    generate_world(out, n_customers=300, seed=3, end_date="2025-12-31")
    return out


@pytest.fixture(scope="module")
def world_url(world, postgres_server) -> str:
    """The same world loaded into schema ``crm`` of a database, addressed with ``?schema=crm``."""
    base = postgres_server.create_database("world")
    load_source_to_database(world, base, schema="crm")
    return base + "?schema=crm"


# ---------------------------------------------------------------- URLs and mappings (no server)

def test_mask_url_replaces_the_password_and_keeps_the_rest():
    assert mask_url("postgresql://clv:s3cr%40t@db.internal:5432/crm?schema=sales") == \
        "postgresql://clv:***@db.internal:5432/crm?schema=sales"
    assert mask_url("postgresql://clv@db:5432/crm?password=s3cret&sslmode=require") == \
        "postgresql://clv@db:5432/crm?password=***&sslmode=require"


def test_a_driver_message_loses_the_password_but_no_other_word():
    from features.ingest.database import DatabaseTarget

    target = DatabaseTarget.parse("postgresql://u:p@127.0.0.1:1/db")
    message = 'connection to server at "127.0.0.1", port 1 failed: password "p" rejected; is it accepting?'
    assert target.cause(RuntimeError(message)) == (
        'connection to server at "127.0.0.1", port 1 failed: password "***" rejected; is it accepting?')


def test_mask_url_leaves_paths_and_urls_without_password_alone():
    assert mask_url("data/world") == "data/world"
    assert mask_url(Path("/srv/crm")) == "/srv/crm"
    assert mask_url("postgresql://clv@db:5432/crm") == "postgresql://clv@db:5432/crm"


def test_a_mapping_file_in_toml_or_json_gives_the_same_mapping(tmp_path):
    expected = DatabaseMapping(tables={"transactions": "orders"},
                               columns={"transactions": {"amount": "total", "customer_id": "client"}})
    (tmp_path / "m.toml").write_text('[tables]\ntransactions = "orders"\n\n'
                                     '[columns.transactions]\namount = "total"\ncustomer_id = "client"\n')
    (tmp_path / "m.json").write_text(json.dumps({"tables": {"transactions": "orders"},
                                                 "columns": {"transactions": {"amount": "total",
                                                                              "customer_id": "client"}}}))
    assert DatabaseMapping.from_file(tmp_path / "m.toml") == expected
    assert DatabaseMapping.from_file(tmp_path / "m.json") == expected


def test_a_mapping_names_only_contract_tables_and_columns():
    with pytest.raises(ContractError, match="unknown contract table.*'orders'"):
        DatabaseMapping(tables={"orders": "transactions"})
    with pytest.raises(ContractError, match="transactions has no contract column 'total'"):
        DatabaseMapping(columns={"transactions": {"total": "amount"}})


# ---------------------------------------------------------------- same tables and features as files

def test_a_generated_world_reads_the_same_from_files_and_from_postgres(world, world_url):
    from_files, from_db = load_source(world), load_source(world_url)
    assert_same_tables(from_files.tables, from_db.tables)
    pd.testing.assert_frame_equal(from_files.summary, from_db.summary)
    assert from_db.rejects == {}


def test_a_generated_world_gives_the_same_features_from_files_and_from_postgres(world, world_url):
    config = FeatureConfig(market_topics=("outdoor", "hiking"))
    as_of = pd.Timestamp("2025-01-01")
    from_files = build_features(load_source(world).tables, as_of, config)
    from_db = build_features(load_source(world_url).tables, as_of, config)
    assert len(from_files) > 100
    pd.testing.assert_frame_equal(from_files, from_db)


def test_the_fingerprint_names_each_table_its_rows_columns_and_latest_date_without_password(
        world_url, postgres_server):
    prints = load_source(world_url).fingerprint
    rows = query(world_url.split("?")[0], "SELECT count(*), max(timestamp) FROM crm.transactions")[0]
    assert prints["transactions"]["rows"] == rows[0]
    assert prints["transactions"]["max_timestamp"] == pd.Timestamp(rows[1]).isoformat()
    assert prints["transactions"]["relation"] == "crm.transactions"
    assert prints["transactions"]["columns"][:3] == ["customer_id", "timestamp", "amount"]
    assert prints["customers"]["source"] == mask_url(world_url)
    assert postgres_server.password not in json.dumps(prints)


def test_reading_in_chunks_gives_the_same_frames(world_url):
    whole = read_database(world_url)
    chunked = read_database(world_url, chunk_rows=250)  # several chunks per table
    for name, frame in whole.raw.items():
        pd.testing.assert_frame_equal(frame, chunked.raw[name], obj=name)
    assert whole.fingerprint == chunked.fingerprint


def test_exporting_chunk_by_chunk_gives_a_source_directory_with_the_same_tables(tmp_path, world_url):
    prints = export_database(world_url, tmp_path / "export", chunk_rows=1000)
    assert len(list((tmp_path / "export" / "transactions").glob("part-*.parquet"))) == 4  # 3,730 rows
    from_db = load_source(world_url)
    assert_same_tables(load_source(tmp_path / "export").tables, from_db.tables)
    assert prints == from_db.fingerprint


def test_rows_dated_on_or_after_until_are_not_read(world_url):
    raw = read_database(world_url, until=UNTIL).raw
    full = read_database(world_url).raw
    for table, column in [("transactions", "timestamp"), ("social_interactions", "timestamp"),
                          ("referrals", "timestamp")]:
        assert (raw[table][column] < UNTIL).all(), table
        assert len(raw[table]) == (full[table][column] < UNTIL).sum() < len(full[table])
    # Snapshots on/after until are read only as the first snapshot of a profile first seen then,
    # so that earlier interactions with it still resolve; they are cut after validation.
    profiles = raw["social_profiles"]
    late = profiles[profiles["snapshot_date"] >= UNTIL]
    first_seen = full["social_profiles"].groupby("profile_id")["snapshot_date"].min()
    assert len(late) > 0
    assert late["profile_id"].is_unique
    assert (late["snapshot_date"].to_numpy() == first_seen[late["profile_id"]].to_numpy()).all()
    assert (first_seen[late["profile_id"]] >= UNTIL).all()


def test_until_cuts_a_database_exactly_as_it_cuts_files(world, world_url):
    from_files = load_source(world, until=UNTIL)
    from_db = load_source(world_url, until=UNTIL)
    assert_same_tables(from_files.tables, from_db.tables)
    assert from_db.tables.social_profiles["snapshot_date"].max() < UNTIL
    assert len(from_db.tables.customers) == len(from_files.tables.customers) == 300


# ---------------------------------------------------------------- hand-made CRM schemas

def test_a_mapping_reads_tables_and_columns_under_other_names(postgres_url):
    run_sql(postgres_url,
            "CREATE TABLE clients (id BIGINT PRIMARY KEY, joined DATE, segment TEXT)",
            "INSERT INTO clients VALUES (1001, '2023-01-05', 'gold'), (1002, '2023-02-10', NULL)",
            "CREATE TABLE orders (client BIGINT, placed_at TIMESTAMPTZ, total NUMERIC(10, 2), note TEXT)",
            "INSERT INTO orders VALUES (1001, '2023-04-01 10:00+02', 19.90, 'x'),"
            " (1002, '2023-04-02 00:30+00', -5.00, NULL)")
    mapping = DatabaseMapping(
        tables={"customers": "clients", "transactions": "orders"},
        columns={"customers": {"customer_id": "id", "signup_date": "joined"},
                 "transactions": {"customer_id": "client", "timestamp": "placed_at", "amount": "total"}})
    tables = load_source(postgres_url, mapping=mapping).tables
    pd.testing.assert_frame_equal(tables.customers, pd.DataFrame({
        "customer_id": pd.array(["1001", "1002"], dtype="str"),
        "signup_date": pd.to_datetime(["2023-01-05", "2023-02-10"]).as_unit("ns"),
        "segment": pd.Categorical(["gold", None]),
    }))
    pd.testing.assert_frame_equal(tables.transactions, pd.DataFrame({
        "customer_id": pd.array(["1001", "1002"], dtype="str"),
        "timestamp": pd.to_datetime(["2023-04-01 08:00", "2023-04-02 00:30"]).as_unit("ns"),  # UTC
        "amount": [19.90, -5.0],
    }))


def test_columns_arrive_typed_by_their_sql_types_even_in_all_null_chunks(postgres_url):
    run_sql(postgres_url,
            "CREATE TABLE customers (customer_id INTEGER, signup_date DATE, vip BOOLEAN, score REAL,"
            " spend NUMERIC(8, 2), tier TEXT, seen TIMESTAMPTZ)",
            "INSERT INTO customers VALUES (7, '2023-01-05', true, 0.5, 10.25, 'a', '2023-01-05 12:00+02'),"
            " (8, '2023-01-06', NULL, NULL, NULL, NULL, NULL)",
            "CREATE TABLE transactions (customer_id INTEGER, timestamp TIMESTAMP, amount FLOAT8)")
    raw = read_database(postgres_url, chunk_rows=1).raw["customers"]  # the second chunk is all NULL
    assert raw.dtypes.astype(str).to_dict() == {
        "customer_id": "Int64", "signup_date": "datetime64[ns]", "vip": "boolean", "score": "float64",
        "spend": "float64", "tier": "str", "seen": "datetime64[ns, UTC]"}
    assert raw["spend"].tolist()[0] == 10.25 and pd.isna(raw["spend"].iloc[1])


def test_a_missing_mapped_column_names_the_relation_and_its_columns(postgres_url):
    run_sql(postgres_url,
            "CREATE TABLE customers (customer_id TEXT, signup_date DATE)",
            "CREATE TABLE orders (customer_id TEXT, timestamp TIMESTAMP, total DOUBLE PRECISION)")
    with pytest.raises(ContractError, match=r"transactions: missing required column 'amount' in orders "
                                            r"\(columns present: customer_id, timestamp, total\)"):
        load_source(postgres_url, mapping={"tables": {"transactions": "orders"}})
    with pytest.raises(ContractError, match="transactions: required table is missing .*'transactions'"):
        load_source(postgres_url)


def test_a_timestamptz_column_is_cut_at_until_in_utc_inside_sql(postgres_url):
    run_sql(postgres_url,
            "CREATE TABLE customers (customer_id TEXT, signup_date DATE)",
            "INSERT INTO customers VALUES ('C1', '2023-01-01')",
            "CREATE TABLE transactions (customer_id TEXT, timestamp TIMESTAMPTZ, amount FLOAT8)",
            "INSERT INTO transactions VALUES ('C1', '2024-01-01 00:30+01', 1),"  # 23:30 UTC the day before
            " ('C1', '2024-01-01 00:00+00', 2), ('C1', NULL, 3)")
    raw = read_database(postgres_url, until=pd.Timestamp("2024-01-01")).raw["transactions"]
    assert raw["amount"].tolist() == [1.0, 3.0]  # the undated row is read, to be rejected as in files
    result = load_source(postgres_url, until=pd.Timestamp("2024-01-01"), reject_threshold=0.5)
    assert result.tables.transactions["timestamp"].tolist() == [pd.Timestamp("2023-12-31 23:30")]
    assert result.rejects["transactions"]["reason"].tolist() == ["missing timestamp"]


def test_dates_stored_as_text_are_cut_after_validation(postgres_url):
    run_sql(postgres_url,
            "CREATE TABLE customers (customer_id TEXT, signup_date TEXT)",
            "INSERT INTO customers VALUES ('C1', '2023-01-01')",
            "CREATE TABLE transactions (customer_id TEXT, timestamp TEXT, amount TEXT)",
            "INSERT INTO transactions VALUES ('C1', '2023-12-31T23:00:00Z', '1.5'),"
            " ('C1', '2024-03-01', '2')")
    tables = load_source(postgres_url, until="2024-01-01").tables
    assert tables.transactions["amount"].tolist() == [1.5]


def test_bad_rows_in_a_database_are_rejected_as_in_files(tmp_path, postgres_url):
    tables = valid_tables()
    load_source_to_database(write_source(tmp_path, tables), postgres_url)
    run_sql(postgres_url,
            "INSERT INTO transactions VALUES ('C9', '2023-05-01', 10.0)",
            "INSERT INTO social_profiles VALUES ('P4', 'C2', 'x', '2023-06-30', -3, 1, 1, 0, NULL)")
    tables["transactions"].loc[len(tables["transactions"])] = ["C9", "2023-05-01", "10.0"]
    tables["social_profiles"].loc[3] = ["P4", "C2", "x", "2023-06-30", "-3", "1", "1", "0", ""]
    from_files = load_source(write_source(tmp_path, tables), reject_threshold=0.5)
    from_db = load_source(postgres_url, reject_threshold=0.5)
    pd.testing.assert_frame_equal(from_files.summary, from_db.summary)
    assert from_db.summary.set_index("table")["top_reason"].to_dict()["transactions"] == \
        "customer_id refers to an unknown customer"
    assert {t: sorted(f["reason"]) for t, f in from_files.rejects.items()} == \
        {t: sorted(f["reason"]) for t, f in from_db.rejects.items()}


# ---------------------------------------------------------------- loading a source into PostgreSQL

def test_loading_creates_typed_indexed_tables_with_every_valid_row(tmp_path, postgres_url):
    summary = load_source_to_database(write_source(tmp_path, valid_tables()), postgres_url)
    assert summary["rows"] == {"customers": 3, "transactions": 300, "social_profiles": 3,
                               "social_interactions": 3, "referrals": 1}
    assert summary["schema"] == "public" and summary["url"] == mask_url(postgres_url)
    types = {(t, c): d for t, c, d in query(postgres_url, """
        SELECT table_name, column_name, data_type FROM information_schema.columns
        WHERE table_schema = 'public'""")}
    assert types[("customers", "customer_id")] == "text"
    assert types[("customers", "signup_date")] == "date"
    assert types[("customers", "region")] == "text"
    assert types[("customers", "age")] == "double precision"
    assert types[("transactions", "timestamp")] == "timestamp without time zone"
    assert types[("transactions", "amount")] == "double precision"
    indexes = {name for (name,) in query(postgres_url,
                                         "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert {"customers_pkey", "transactions_customer_id_idx", "transactions_timestamp_idx",
            "social_profiles_customer_id_idx", "social_profiles_snapshot_date_idx",
            "social_interactions_timestamp_idx", "referrals_timestamp_idx"} <= indexes


def test_loading_twice_fails_unless_replacing_and_replacing_drops_stale_tables(tmp_path, postgres_url):
    tables = valid_tables()
    first = write_source(tmp_path, tables)
    load_source_to_database(first, postgres_url)
    with pytest.raises(ContractError, match="public.customers, .* already exist .*--replace"):
        load_source_to_database(first, postgres_url)
    (tmp_path / "second").mkdir()
    del tables["referrals"]
    load_source_to_database(write_source(tmp_path / "second", tables), postgres_url, if_exists="replace")
    assert load_source(postgres_url).tables.referrals is None


def test_an_invalid_source_is_not_loaded(tmp_path, postgres_url):
    tables = valid_tables()
    tables["customers"].loc[2, "customer_id"] = "C1"
    with pytest.raises(ContractError, match="duplicated"):
        load_source_to_database(write_source(tmp_path, tables), postgres_url)
    assert query(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


# ---------------------------------------------------------------- credentials and clear errors

def test_a_wrong_password_is_one_clear_line_with_the_url_masked(postgres_server):
    url = f"postgresql://clv:not-the-password-42@127.0.0.1:{postgres_server.port}/postgres"
    with pytest.raises(SourceUnavailableError) as caught:
        load_source(url)
    message = str(caught.value)
    masked = f"postgresql://clv:***@127.0.0.1:{postgres_server.port}/postgres"
    assert message.startswith(f"cannot connect to {masked}: ")
    assert 'password authentication failed for user "clv"' in message
    assert "not-the-password-42" not in message and postgres_server.password not in message
    assert "\n" not in message


def test_an_unreachable_host_is_a_clear_error(postgres_server):
    url = postgres_server.url().replace(str(postgres_server.port), str(free_port()))
    with pytest.raises(SourceUnavailableError, match="cannot connect to .*Connection refused") as caught:
        load_source(url)
    assert postgres_server.password not in str(caught.value)
    assert isinstance(caught.value, ContractError)


def test_a_table_the_user_may_not_read_is_a_clear_error(tmp_path, postgres_server, postgres_url):
    load_source_to_database(write_source(tmp_path, valid_tables()), postgres_url)
    run_sql(postgres_url,
            "DROP ROLE IF EXISTS analyst", "CREATE ROLE analyst LOGIN PASSWORD 'analyst-pw'",
            "GRANT SELECT ON customers TO analyst")
    url = postgres_url.replace(f"clv:{quote(postgres_server.password, safe='')}", "analyst:analyst-pw")
    with pytest.raises(ContractError, match=r"cannot read 'transactions' from postgresql://analyst:\*\*\*@.*: "
                                            "permission denied for table transactions"):
        load_source(url)


def test_the_cli_reports_an_unavailable_database_in_one_line_and_exits_2(postgres_server, tmp_path):
    url = f"postgresql://clv:hunter2-wrong@127.0.0.1:{postgres_server.port}/postgres"
    proc = run_clv(["validate", "--data", url], env={**os.environ, "COLUMNS": "300"}, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "hunter2-wrong" not in proc.stderr + proc.stdout
    assert f"postgresql://clv:***@127.0.0.1:{postgres_server.port}/postgres" in proc.stderr


def test_the_password_may_come_from_pgpassword_or_a_pgpass_file(tmp_path, monkeypatch, postgres_server):
    load_source_to_database(write_source(tmp_path, valid_tables()), postgres_server.create_database("pgpass"))
    url = postgres_server.url("pgpass", password=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(SourceUnavailableError, match="no password supplied"):
        load_source(url)
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    assert len(load_source(url).tables.customers) == 3
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    escaped = postgres_server.password.replace("\\", "\\\\").replace(":", "\\:")
    pgpass.write_text(f"127.0.0.1:{postgres_server.port}:*:clv:{escaped}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    assert len(load_source(url).tables.customers) == 3
