"""``--mapping FILE`` on the command line: every command that reads a source reads an export under its
own names, and a mapping that cannot apply is one line and exit 2 before anything runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.cli import app
from tests.features.ingest.test_contract import valid_tables, write_source
from tests.features.ingest.test_mapping import (
    MAPPING,
    MAPPING_TOML,
    as_exported,
    malformed_tables,
    write_export,
)

runner = CliRunner()


def test_validate_writes_the_same_rejects_for_the_export_as_for_the_contract_named_copy(tmp_path):
    tables = malformed_tables()
    contract = write_source(tmp_path, tables)
    export = write_export(tmp_path / "export", as_exported(tables))
    (tmp_path / "mapping.toml").write_text(MAPPING_TOML)
    for source, rejects, extra in ((contract, "rej-contract", []),
                                   (export, "rej-export", ["--mapping", str(tmp_path / "mapping.toml")])):
        result = runner.invoke(app, ["validate", "--data", str(source), "--rejects", str(tmp_path / rejects),
                                     "--reject-threshold", "0.5", *extra])
        assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "rej-export").iterdir())
    assert written == ["customers.csv", "social_interactions.csv", "transactions.csv"]
    for name in written:
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "rej-export" / name),
                                      pd.read_csv(tmp_path / "rej-contract" / name))


def test_features_of_the_export_are_those_of_the_contract_named_copy(tmp_path):
    tables = valid_tables()
    contract = write_source(tmp_path, tables, "parquet")
    export = write_export(tmp_path / "export", as_exported(tables), "parquet")
    (tmp_path / "mapping.json").write_text(json.dumps(MAPPING))
    for source, out, extra in ((contract, "contract.parquet", []),
                               (export, "export.parquet", ["--mapping", str(tmp_path / "mapping.json")])):
        result = runner.invoke(app, ["features", "--data", str(source), "--as-of", "2024-01-01",
                                     "--out", str(tmp_path / out), "--market-topic", "outdoor", *extra])
        assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "export.parquet"),
                                  pd.read_parquet(tmp_path / "contract.parquet"))


def test_train_hands_the_mapping_read_from_the_file_to_the_training_run(tmp_path, monkeypatch):
    """The training run gets the mapping read from the file (the run itself is specified in tests/training)."""
    calls = []
    monkeypatch.setattr("training.train.train", lambda data, **options: calls.append((data, options)))
    (tmp_path / "mapping.toml").write_text(MAPPING_TOML)
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--mapping", str(tmp_path / "mapping.toml")])
    assert result.exit_code == 0, result.output
    (_, options), = calls
    assert options["mapping"].table("transactions") == "orders"
    assert options["mapping"].column("transactions", "amount") == "total"


@pytest.mark.parametrize("command", [
    ["validate"],
    ["features", "--as-of", "2024-01-01", "--out", "{tmp}/features.parquet"],
    ["features", "--as-of", "2024-01-01", "--out", "{tmp}/features.parquet", "--engine", "dask"],
    ["train"],
    ["train", "--engine", "dask"],
    ["score", "--out", "{tmp}/scores.parquet"],
    ["score", "--out", "{tmp}/scores.parquet", "--engine", "dask"],
])
def test_a_mapping_naming_an_unknown_contract_column_is_one_line_and_exit_2(tmp_path, command):
    source = write_export(tmp_path / "export", as_exported(valid_tables()))
    bad = tmp_path / "mapping.toml"
    bad.write_text('[tables]\ntransactions = "orders"\n\n[columns.transactions]\ntotal = "amount"\n')
    args = [part.format(tmp=tmp_path) for part in command]
    result = runner.invoke(app, [args[0], "--data", str(source), "--mapping", str(bad), *args[1:]])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: mapping: transactions has no contract column 'total'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "mapping.toml"]
