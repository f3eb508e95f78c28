"""The contact list (`clv score --export-top N --export FILE.csv`): the top customers, ids verbatim, reasons in words."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.errors import UserError
from serving.cli import app
from serving.contact_list import contact_frame, customer_attributes, top_scores, write_contact_list
from tests.clv_process import run_clv
from tests.serving.scoring.test_chunked import TABLES, registry, world  # noqa: F401 - fixtures

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def scores_file(path: Path, n: int, *, intervals: bool) -> Path:
    """A scores file as `clv score` writes it (sorted by value_rank), with or without the 80% range."""
    values = np.linspace(5000.0, 10.0, n)
    frame = pd.DataFrame({
        "customer_id": pd.array([f"{i:06d}" for i in range(1, n + 1)], dtype="str"),
        "predicted_value": values,
        "value_rank": np.arange(1, n + 1, dtype="int64"),
        "value_percentile": 100.0 * (n - np.arange(n)) / n,
        "value_tier": ["top_1pct"] + ["top_10pct"] * 9 + ["top_50pct"] * 40 + ["rest"] * (n - 50),
        "value_p10": 0.5 * values if intervals else np.nan,
        "value_p90": 1.8 * values if intervals else np.nan,
        "reason_1": pd.array(["net_spend_per_year=1380.19: +210.50"] * 10 + [None] * (n - 10), dtype="str"),
        "reason_2": pd.array(["days_since_last_order=missing: -12.00"] * 10 + [None] * (n - 10), dtype="str"),
        "reason_3": pd.array([None] * n, dtype="str"),
        "model_name": "customer-value",
    })
    frame.to_parquet(path, index=False, row_group_size=7)  # several row groups: reading must stop early
    return path


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_only_the_first_n_rows_of_the_scores_are_read(tmp_path):
    head = top_scores(scores_file(tmp_path / "s.parquet", 100, intervals=True), 12)
    assert head["customer_id"].tolist() == [f"{i:06d}" for i in range(1, 13)]
    assert head["value_rank"].tolist() == list(range(1, 13))


def test_the_range_columns_appear_only_when_the_scores_have_them(tmp_path):
    with_range = contact_frame(top_scores(scores_file(tmp_path / "a.parquet", 100, intervals=True), 5), None, "EUR")
    without = contact_frame(top_scores(scores_file(tmp_path / "b.parquet", 100, intervals=False), 5), None, "EUR")
    assert list(with_range.columns) == ["customer_id", "predicted_value", "value_p10", "value_p90", "value_tier",
                                        "value_rank", "reason_1", "reason_2", "reason_3"]
    assert "value_p10" not in without.columns and "value_p90" not in without.columns
    assert with_range.loc[0, "value_p10"] == 2500.0 and with_range.loc[0, "value_p90"] == 9000.0


def test_reasons_are_written_in_plain_words_with_the_currency(tmp_path):
    frame = contact_frame(top_scores(scores_file(tmp_path / "s.parquet", 100, intervals=True), 11), None, "EUR")
    assert frame.loc[0, "reason_1"] == "Net spend per year of EUR 1,380.19 raises the value by EUR 210.50"
    assert frame.loc[0, "reason_2"] == "Days since last order not known lowers the value by EUR 12.00"
    assert pd.isna(frame.loc[10, "reason_1"]) and pd.isna(frame.loc[0, "reason_3"])


def test_ids_are_written_as_quoted_text_and_keep_their_zeros(tmp_path):
    out = tmp_path / "contacts.csv"
    written = write_contact_list(scores_file(tmp_path / "s.parquet", 100, intervals=True), out, top=3)
    assert written == {"customers": 3, "output": str(out)}
    lines = out.read_text().splitlines()
    assert lines[1].startswith('"000001",5000.0,')
    assert [row[0] for row in read_rows(out)[1:]] == ["000001", "000002", "000003"]
    assert pd.read_csv(out, dtype={"customer_id": "str"})["customer_id"].tolist() == ["000001", "000002", "000003"]


def test_a_top_larger_than_the_base_lists_every_customer(tmp_path):
    out = tmp_path / "contacts.csv"
    written = write_contact_list(scores_file(tmp_path / "s.parquet", 60, intervals=False), out, top=1000)
    assert written["customers"] == 60 and len(read_rows(out)) == 61


def test_attributes_are_joined_by_the_id_as_the_contract_parses_it(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "customers.csv").write_text("customer_id,signup_date,region,email_opt_in\n"
                                          " 000002 ,2024-01-01,north,yes\n000001,2024-01-01,south,no\n"
                                          "000099,2024-01-01,east,yes\n")
    found = customer_attributes(source, ["000001", "000002"], ["region", "email_opt_in"])
    assert found.sort_values("customer_id").to_dict("records") == [
        {"customer_id": "000001", "region": "south", "email_opt_in": "no"},
        {"customer_id": "000002", "region": "north", "email_opt_in": "yes"}]


def test_an_unknown_attribute_is_refused_naming_the_columns_there_are(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "customers.csv").write_text("customer_id,signup_date,region\n000001,2024-01-01,south\n")
    with pytest.raises(UserError, match=r"no column 'segment' in the customers table \(available: "
                                        r"signup_date, region\)"):
        customer_attributes(source, ["000001"], ["segment"])


# ---------------------------------------------------------------------------------------------
# Through `clv score`, on a generated world whose ids are zero-padded digits


@pytest.fixture(scope="module")
def padded_world(world, tmp_path_factory) -> Path:  # noqa: F811 - the imported fixture
    """The scoring tests' world as CSV files with customer ids such as "0000123" (digits, leading zeros)."""
    target = tmp_path_factory.mktemp("padded")
    columns = {"customers": ["customer_id"], "transactions": ["customer_id"], "social_profiles": ["customer_id"],
               "referrals": ["referrer_id", "referred_id"], "social_interactions": []}
    for table in TABLES:
        frame = pd.read_parquet(world / f"{table}.parquet")
        for column in columns[table]:
            frame[column] = frame[column].str.removeprefix("C")
        frame.to_csv(target / f"{table}.csv", index=False)
    return target


@pytest.fixture(scope="module")
def exported(padded_world, registry, tmp_path_factory):  # noqa: F811 - the imported fixture
    out = tmp_path_factory.mktemp("export")
    result = runner.invoke(app, ["score", "--data", str(padded_world), "--out", str(out / "scores.parquet"),
                                 "--export-top", "25", "--export", str(out / "contacts.csv"),
                                 "--export-attributes", "region", "--export-attributes", "age"])
    assert result.exit_code == 0, result.output
    return result.output, out


def test_score_writes_the_contact_list_and_says_so(exported):
    output, out = exported
    assert f"contact list: 25 customers -> {out / 'contacts.csv'}" in output
    contacts = pd.read_csv(out / "contacts.csv", dtype={"customer_id": "str"})
    scores = pd.read_parquet(out / "scores.parquet").head(25)
    assert contacts["customer_id"].tolist() == scores["customer_id"].tolist()
    assert contacts["value_rank"].tolist() == scores["value_rank"].tolist()
    assert list(contacts.columns)[-2:] == ["region", "age"]


def test_exported_ids_keep_their_leading_zeros(exported):
    _, out = exported
    ids = [row[0] for row in read_rows(out / "contacts.csv")[1:]]
    assert all(len(i) == 7 and i.startswith("0") for i in ids)
    first_line = (out / "contacts.csv").read_text().splitlines()[1]
    assert first_line.startswith(f'"{ids[0]}",')


def test_attributes_in_the_export_are_the_customers_own(exported, padded_world):
    _, out = exported
    contacts = pd.read_csv(out / "contacts.csv", dtype={"customer_id": "str", "region": "str"})
    customers = pd.read_csv(padded_world / "customers.csv", dtype="str").set_index("customer_id")
    assert contacts["region"].tolist() == customers.loc[contacts["customer_id"], "region"].tolist()
    assert contacts["reason_1"].str.contains(r"(?: raises| lowers) the value by ").all()
    assert not contacts["reason_1"].str.contains("=").any()


@pytest.mark.parametrize("options, message", [
    (["--export-top", "10"], "--export-top N and --export FILE.csv go together"),
    (["--export", "contacts.csv"], "--export-top N and --export FILE.csv go together"),
    (["--export-top", "10", "--export", "contacts.xlsx"], "name the file with a .csv suffix"),
    (["--export-attributes", "region"], "--export-attributes needs --export-top N"),
])
def test_bad_export_options_are_one_line_and_exit_2_before_any_scoring(tmp_path, options, message):
    result = runner.invoke(app, ["score", "--data", str(tmp_path), "--out", str(tmp_path / "s.parquet"), *options])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s.parquet").exists()


def test_an_export_top_below_one_is_a_usage_error(tmp_path):
    proc = run_clv(["score", "--data", str(tmp_path), "--out", str(tmp_path / "s.parquet"), "--export-top", "0",
                    "--export", str(tmp_path / "c.csv")], env={**os.environ, "COLUMNS": "200"}, cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--export-top" in proc.stderr


def test_an_unknown_export_attribute_stops_the_run_before_scoring(padded_world, tmp_path):
    result = runner.invoke(app, ["score", "--data", str(padded_world), "--out", str(tmp_path / "s.parquet"),
                                 "--export-top", "5", "--export", str(tmp_path / "c.csv"),
                                 "--export-attributes", "shoe_size"])
    assert result.exit_code == 2
    assert "no column 'shoe_size' in the customers table (available: signup_date, region" in result.output
    assert not (tmp_path / "s.parquet").exists()


def test_the_dask_engines_folder_of_parts_gives_the_same_top_rows(tmp_path):
    from serving.report.current_scores import tier_economics

    whole = pd.read_parquet(scores_file(tmp_path / "s.parquet", 100, intervals=True))
    folder = tmp_path / "scores.parquet"  # the Dask engine writes a folder: each part sorted by value_rank
    folder.mkdir()
    for part in range(3):
        whole.iloc[part::3].to_parquet(folder / f"part-{part:05d}.parquet", index=False)
    head = top_scores(folder, 12)
    assert head["customer_id"].tolist() == whole["customer_id"].head(12).tolist()
    pd.testing.assert_frame_equal(tier_economics(folder), tier_economics(tmp_path / "s.parquet"))


def test_attributes_come_from_a_database_table_under_mapped_names(postgres_url):
    from features.ingest.mapping import SourceMapping
    from tests.features.ingest.test_database import run_sql

    run_sql(postgres_url,
            "CREATE TABLE clients (id BIGINT PRIMARY KEY, joined DATE, segment TEXT, opt_in BOOLEAN)",
            "INSERT INTO clients VALUES (1001, '2023-01-05', 'gold', true), (1002, '2023-02-10', NULL, false),"
            " (7, '2023-01-01', 'silver', true)")
    mapping = SourceMapping(tables={"customers": "clients"},
                            columns={"customers": {"customer_id": "id", "signup_date": "joined"}})
    found = customer_attributes(postgres_url, ["1001", "1002"], ["segment", "opt_in"], mapping)
    assert found.sort_values("customer_id").to_dict("records") == [
        {"customer_id": "1001", "segment": "gold", "opt_in": True},
        {"customer_id": "1002", "segment": None, "opt_in": False}]
    with pytest.raises(UserError, match=r"no column 'tier' .* \(available: signup_date, segment, opt_in\)"):
        customer_attributes(postgres_url, ["1001"], ["tier"], mapping)
