"""The clv command line: summaries on success, one precise line and a non-zero exit on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from serving.cli import app
from tests.clv_process import run_clv
from tests.features.ingest.test_contract import valid_tables, write_source

runner = CliRunner()


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
    proc = run_clv(["validate", "--data", str(src), "--rejects", str(tmp_path / "rej")],
                   env={**os.environ, "COLUMNS": "200"}, cwd=tmp_path)
    assert proc.returncode == 2
    assert "customers: column 'customer_id' has 1 duplicated values (rows 0, 2; e.g. 'C1')" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "rej").exists()


def test_validate_on_a_missing_directory_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["validate", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "is not a directory" in result.output


def test_dates_on_the_command_line_are_iso_only_one_line_and_exit_2(tmp_path):
    src = write_source(tmp_path, valid_tables())
    for text in ("yesterday", "June 1", "01/06/2025", "2025-02-30"):
        for command in (["features", "--data", str(src), "--out", str(tmp_path / "f.parquet")],
                        ["train", "--data", str(src)], ["score", "--data", str(src), "--out", str(tmp_path / "s.parquet")]):
            result = runner.invoke(app, [*command, "--as-of", text])
            assert result.exit_code == 2, (command, text, result.output)
            assert "YYYY-MM-DD" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.glob("*.parquet"))


def test_an_unknown_engine_or_promotion_mode_is_one_line_and_exit_2(tmp_path):
    src = write_source(tmp_path, valid_tables())
    result = runner.invoke(app, ["train", "--data", str(src), "--engine", "spark"])
    assert result.exit_code == 2 and "--engine must be pandas or dask" in result.output
    result = runner.invoke(app, ["train", "--data", str(src), "--promote", "sometimes"])
    assert result.exit_code == 2 and "--promote must be one of auto, always, never" in result.output


def test_train_settings_come_from_defaults_then_the_config_file_then_the_options(tmp_path):
    from serving.cli import train_config

    path = tmp_path / "train.toml"
    path.write_text('n_windows = 6\nstep_days = 28\n[features]\nhorizon_days = 91\nlabel = "margin"\n')
    config = train_config(path, horizon_days=None, market_topic=[], label=None, n_windows=None, step_days=None)
    assert (config.n_windows, config.step_days, config.horizon_days, config.features.label) == (6, 28, 91, "margin")
    config = train_config(path, horizon_days=182, market_topic=["golf"], label="net", n_windows=4, step_days=None)
    assert (config.n_windows, config.step_days, config.horizon_days) == (4, 28, 182)
    assert config.features.label == "revenue" and config.features.market_topics == ("golf",)
    config = train_config(None, horizon_days=None, market_topic=[], label=None, n_windows=None, step_days=None)
    assert (config.n_windows, config.step_days, config.horizon_days) == (None, None, 365)


def test_bad_training_settings_are_one_line_and_exit_2(tmp_path):
    src = write_source(tmp_path, valid_tables())
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text("[model]\nleaves = 3\n")
    for options, message in [
        (["--label", "profit"], "label must be net or margin, not 'profit'"),
        (["--n-windows", "1"], "n_windows (1) must exceed validation_windows (1)"),
        (["--step-days", "0"], "step_days must be positive, not 0"),
        (["--horizon-days", "0"], "--horizon-days must be a positive number of days"),
        (["--config", str(bad_file)], "[model]: unknown setting 'leaves'"),
        (["--config", str(tmp_path / "missing.toml")], "cannot read it"),
    ]:
        result = runner.invoke(app, ["train", "--data", str(src), *options])
        assert result.exit_code == 2, (options, result.output)
        assert message in result.output and "Traceback" not in result.output, (options, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_paths_stores_and_servers_a_user_gets_wrong_are_one_line_and_exit_2(tmp_path, monkeypatch,
                                                                           new_mlflow_store):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_mlflow_store(tmp_path))
    src = write_source(tmp_path, valid_tables())
    flawed = valid_tables()
    flawed["transactions"].loc[17, "timestamp"] = "2024-13-01"  # a reject to write
    (tmp_path / "flawed").mkdir()
    flawed_src = write_source(tmp_path / "flawed", flawed)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for command, message in [
        (["report", "--run", "deadbeef", "--out", str(tmp_path / "r")], "no training run 'deadbeef' in the tracking store"),
        (["load", "--data", str(src), "--to", "postgresql://u:secret@127.0.0.1:1/db"],
         "cannot connect to postgresql://u:***@127.0.0.1:1/db"),
        (["validate", "--data", str(flawed_src), "--rejects", str(blocker / "rejects")], "a-file"),
        (["score", "--data", str(src), "--out", str(tmp_path / "s.parquet"), "--reasons-for", "top5"],
         "reasons_for must be one of top10, all, none"),
    ]:
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert message in result.output and "Traceback" not in result.output, (command, result.output)
        assert "secret" not in result.output


def test_outputs_go_only_where_they_belong(tmp_path):
    src = write_source(tmp_path, valid_tables())
    for command in (["score", "--data", str(src)], ["features", "--data", str(src), "--as-of", "2024-01-01"]):
        result = runner.invoke(app, [*command, "--out", str(tmp_path / "scores.csv")])
        assert result.exit_code == 2 and "name the file with a .parquet suffix" in result.output, result.output
    assert not (tmp_path / "scores.csv").exists()
    # A folder holding a real export is never overwritten by a generated world...
    export = tmp_path / "export"
    export.mkdir()
    (export / "customers.parquet").write_bytes(b"the business's real customers")
    result = runner.invoke(app, ["generate", "--out", str(export), "--customers", "100"])
    assert result.exit_code == 2 and "holds files that are not a generated world (customers.parquet)" in result.output
    assert (export / "customers.parquet").read_bytes() == b"the business's real customers"
    # ...while a previous generated world is regenerated in place, and --force overrides.
    world = tmp_path / "world"
    for _ in range(2):
        assert runner.invoke(app, ["generate", "--out", str(world), "--customers", "100"]).exit_code == 0
    assert runner.invoke(app, ["generate", "--out", str(export), "--customers", "100", "--force"]).exit_code == 0


def test_clv_says_its_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"clv {version('clv-social')}"


def test_the_decimal_mark_and_the_largest_plausible_amount_are_options(tmp_path):
    tables = valid_tables(30)
    tables["transactions"]["amount"] = ["1,380", "250", "2,500"] * 10  # thousands or decimals? cannot tell
    tables["transactions"].loc[4, "amount"] = "90,000"
    src = write_source(tmp_path, tables)
    refused = runner.invoke(app, ["validate", "--data", str(src), "--rejects", str(tmp_path / "rej")])
    assert refused.exit_code == 2 and "pass the decimal mark (--decimal . or --decimal ,)" in refused.output
    read = runner.invoke(app, ["validate", "--data", str(src), "--rejects", str(tmp_path / "rej"),
                               "--decimal", ".", "--max-amount", "50000", "--reject-threshold", "0.1"])
    assert read.exit_code == 0, read.output
    assert "note: largest amounts kept: 2,500.00, 2,500.00, 2,500.00" in read.output
    rejects = (tmp_path / "rej" / "transactions.csv").read_text()
    assert "implausible amount '90,000'" in rejects
    bad = runner.invoke(app, ["validate", "--data", str(src), "--decimal", ";"])
    assert bad.exit_code == 2 and "decimal mark must be one of 'auto', '.', ',', not ';'" in bad.output


def test_the_command_line_turns_mlflow_telemetry_off_unless_the_user_chose(tmp_path):
    probe = ("import serving.cli, os; from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY; "
             "print(os.environ.get('MLFLOW_DISABLE_TELEMETRY'), MLFLOW_DISABLE_TELEMETRY.get())")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}

    def run(**extra):
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                              env={**env, **extra}).stdout.split()

    assert run() == ["true", "True"]
    assert run(MLFLOW_DISABLE_TELEMETRY="false") == ["false", "False"]
    assert run(DO_NOT_TRACK="false")[0] == "None"  # the user's own choice is left alone


def test_features_leave_an_email_column_out_and_say_so(tmp_path):
    tables = valid_tables()
    customers = tables["customers"]
    tables["customers"] = customers.assign(email=[f"user{i}@example.org" for i in range(len(customers))])
    src = write_source(tmp_path, tables)
    out = tmp_path / "f.parquet"
    result = runner.invoke(app, ["features", "--data", str(src), "--as-of", "2024-06-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "left out of the features because they look like identifiers: email (e-mail addresses)" in result.output
    manifest = json.loads(out.with_name("f.manifest.json").read_text())
    assert not any(name.startswith("attr_email") for name in manifest["features"])
    assert "example.org" not in out.with_name("f.manifest.json").read_text()


def test_a_user_notice_is_one_warning_line_and_other_warnings_go_on_as_before(capsys):
    import warnings

    from features.errors import UserNotice
    from serving.cli_errors import one_line_notices

    handed_on = []
    show = one_line_notices(lambda *args: handed_on.append(args[1]))
    show(UserNotice("model m was logged in another environment:\nlightgbm (installed 4.7.0, required ==4.6.0)"),
         UserNotice, "/somewhere/model.py", 176)
    show(DeprecationWarning("old"), DeprecationWarning, "/somewhere/else.py", 3)
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "warning: model m was logged in another environment: lightgbm (installed 4.7.0, required ==4.6.0)"]
    assert handed_on == [DeprecationWarning]
    assert warnings.showwarning is not show  # installed only while a command runs (OneLineUsageErrors.main)
