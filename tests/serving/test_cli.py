"""The clv command line: summaries on success, one precise line and a non-zero exit on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from serving.cli import app
from tests.features.ingest.test_contract import valid_tables, write_source

runner = CliRunner()
CLV = str(Path(sys.executable).with_name("clv"))


def test_validate_prints_a_summary_and_writes_rejects(tmp_path):
    tables = valid_tables()
    tables["transactions"].loc[17, "timestamp"] = "2024-13-01"
    src = write_source(tmp_path, tables)
    result = runner.invoke(app, ["validate", "--data", str(src), "--rejects", str(tmp_path / "rej")])
    assert result.exit_code == 0, result.output
    assert "transactions" in result.output and "unparsable timestamp" in result.output
    assert (tmp_path / "rej" / "transactions.csv").exists()


def test_validate_on_a_malformed_source_exits_non_zero_without_traceback(tmp_path):
    tables = valid_tables()
    tables["customers"].loc[2, "customer_id"] = "C1"
    src = write_source(tmp_path, tables)
    proc = subprocess.run([CLV, "validate", "--data", str(src), "--rejects", str(tmp_path / "rej")],
                          capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2
    assert "customers: column 'customer_id' has 1 duplicated values (rows 0, 2; e.g. 'C1')" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "rej").exists()


def test_validate_on_a_missing_directory_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["validate", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "is not a directory" in result.output
