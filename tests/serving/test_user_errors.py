"""Every error a user can cause ends with one line on stderr, ``error: ...``, and exit code 2.

Each case runs ``clv`` in its own process, as a user would (forked from a process that has imported
its libraries: tests/clv_process.py), against a tiny generated world and throwaway MLflow stores,
and fails on a traceback, another exit code or a second line.
Each kind of error goes through every command that reaches it by its own code; the variants of one
check (the date spellings, the ways a store is broken) run once each and are unit-tested beside the
check (tests/features/test_run_request.py, tests/training/test_tracking.py). The cases start
together and each test waits for its own.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.clv_process import Outcome, run_clv, run_installed_clv
from tests.serving.conftest import tracking_to
from tests.serving.scoring.test_chunked import fit_pyfunc

pytestmark = pytest.mark.slow

UNREACHABLE_DB = "postgresql://u@127.0.0.1:1/db"  # nothing listens on port 1


@dataclass(frozen=True)
class Case:
    """``clv <args>`` must fail with one ``error:`` line holding ``says`` (mostly the bad value).

    ``{name}`` in args and env is replaced by a path of the ``places`` fixture.
    """

    id: str
    args: tuple[str, ...]
    says: str
    env: dict = field(default_factory=dict)


def case(id: str, command: str, says: str, **env: str) -> Case:
    """The arguments as one string split on ``|`` (values such as ``June 1`` hold spaces)."""
    return Case(id, tuple(command.split("|")), says, env)


OUT = "--out|{run}/out.parquet"
CASES = [
    # Dates: ISO only (every spelling on every command runs in-process in test_cli.py; here the
    # process's output).
    case("features-as-of-yesterday", f"features|--data|{{world}}|{OUT}|--as-of|yesterday", "'yesterday'"),
    case("features-as-of-no-such-day", f"features|--data|{{world}}|{OUT}|--as-of|2025-13-40", "'2025-13-40'"),
    case("train-as-of-June-1", "train|--data|{world}|--as-of|June 1", "'June 1'"),
    case("score-as-of-day-first", f"score|--data|{{world}}|{OUT}|--as-of|01/06/2025", "'01/06/2025'"),
    case("generate-end-date-yesterday", "generate|--out|{run}/w|--customers|100|--end-date|yesterday", "'yesterday'"),
    case("generate-end-date-no-such-day", "generate|--out|{run}/w|--customers|100|--end-date|2025-13-40",
         "'2025-13-40'"),
    # Choices: the bad value and what is allowed.
    case("train-engine-spark", "train|--data|{world}|--engine|spark", "must be pandas or dask, not 'spark'"),
    case("score-engine-spark", f"score|--data|{{world}}|{OUT}|--engine|spark", "must be pandas or dask, not 'spark'"),
    case("train-promote-sometimes", "train|--data|{world}|--promote|sometimes",
         "one of auto, always, never, not 'sometimes'"),
    case("score-reasons-for-top5", f"score|--data|{{world}}|{OUT}|--reasons-for|top5",
         "one of top10, all, none, not 'top5'"),
    case("train-label-profit", "train|--data|{world}|--label|profit", "net or margin, not 'profit'"),
    case("features-label-profit", f"features|--data|{{world}}|{OUT}|--as-of|2025-01-01|--label|profit",
         "net or margin, not 'profit'"),
    case("generate-world-mars", "generate|--out|{run}/w|--world|mars", "default, no-influence, topical, not 'mars'"),
    # Usage errors click finds: one line too, pointing at the command's help.
    case("score-without-out", "score|--data|{world}", "Missing option '--out'"),
    case("validate-reject-threshold-over-one", "validate|--data|{world}|--reject-threshold|2", "'--reject-threshold'"),
    # Sources: missing, or without the customers table.
    case("features-missing-source", f"features|--data|{{missing}}|{OUT}|--as-of|2025-01-01", "is not a directory"),
    case("train-missing-source", "train|--data|{missing}", "is not a directory"),
    case("load-missing-source", f"load|--data|{{missing}}|--to|{UNREACHABLE_DB}", "is not a directory"),
    case("validate-source-without-customers", "validate|--data|{no_customers}", "customers: required table is missing"),
    # Databases nobody answers at.
    case("validate-unreachable-database", f"validate|--data|{UNREACHABLE_DB}", "cannot connect to postgresql://u@"),
    case("train-unreachable-database", f"train|--data|{UNREACHABLE_DB}", "cannot connect to postgresql://u@"),
    case("load-to-unreachable-database", f"load|--data|{{world}}|--to|{UNREACHABLE_DB}", "cannot connect to postgresql://u@"),
    # Runs and models that do not exist.
    case("report-unknown-run", "report|--run|deadbeef|--out|{run}/report", "no training run 'deadbeef'"),
    case("score-unknown-registered-model", f"score|--data|{{world}}|{OUT}|--model|models:/nope@champion",
         "models:/nope@champion"),
    case("score-unknown-run-model", f"score|--data|{{world}}|{OUT}|--model|runs:/deadbeef/model", "runs:/deadbeef/model"),
    case("score-model-path-that-does-not-exist", f"score|--data|{{world}}|{OUT}|--model|{{missing}}/model",
         "nowhere/model"),
    case("report-unknown-registered-model", "report|--model|models:/nope@champion|--out|{run}/r", "models:/nope@champion"),
    # Outputs that cannot be written (under a regular file: refused to root as well) or are misnamed.
    case("features-out-under-a-file", "features|--data|{world}|--out|{a_file}/f.parquet|--as-of|2025-01-01", "a-file"),
    case("generate-out-under-a-file", "generate|--out|{a_file}/world|--customers|100", "a-file"),
    case("validate-rejects-under-a-file", "validate|--data|{flawed}|--rejects|{a_file}/rejects", "a-file"),
    case("report-out-is-a-file", "report|--out|{a_file}", "a-file"),
    case("score-out-csv", "score|--data|{world}|--out|{run}/scores.csv", "scores.csv"),
    # MLflow stores that cannot be used.
    case("train-garbage-store", "train|--data|{world}", "file is not a database", MLFLOW_TRACKING_URI="sqlite:///{garbage}"),
    case("report-garbage-store", "report|--out|{run}/r", "file is not a database", MLFLOW_TRACKING_URI="sqlite:///{garbage}"),
    case("report-locked-store", "report|--out|{run}/r", "database is locked", MLFLOW_TRACKING_URI="sqlite:///{locked}"),
    case("score-store-is-a-folder", f"score|--data|{{world}}|{OUT}", "is a folder",
         MLFLOW_TRACKING_URI="sqlite:///{run}"),
    case("report-store-is-a-plain-file", "report|--out|{run}/r", "cannot be used", MLFLOW_TRACKING_URI="{a_file}"),
    # Training settings from a file.
    case("train-config-unknown-key", "train|--data|{world}|--config|{config_unknown_key}", "unknown setting 'leaves'"),
    case("train-config-bad-value", "train|--data|{world}|--config|{config_bad_value}", "'many'"),
    # The contact list and the report's current scores: checked before any scoring or reading a run.
    case("score-export-top-without-file", f"score|--data|{{world}}|{OUT}|--export-top|10",
         "--export-top N and --export FILE.csv go together"),
    case("score-export-not-csv", f"score|--data|{{world}}|{OUT}|--export-top|10|--export|{{run}}/contacts.xlsx",
         "contacts.xlsx"),
    case("score-export-unknown-attribute", f"score|--data|{{world}}|{OUT}|--export-top|10|--export|{{run}}/c.csv|"
         "--export-attributes|shoe_size", "no column 'shoe_size' in the customers table (available: "),
    case("score-bad-currency", f"score|--data|{{world}}|{OUT}|--currency|euros and cents", "code such as EUR"),
    case("train-bad-currency", "train|--data|{world}|--currency|a b", "code such as EUR"),
    case("score-negative-drift-threshold", f"score|--data|{{world}}|{OUT}|--drift-threshold|-1",
         "drift threshold must be a PSI above 0"),
    case("report-scores-missing", "report|--out|{run}/r|--scores|{missing}/scores.parquet", "no such scores file"),
    # Score reads its source only once it has a model: these run against a champion logged for them.
    case("score-missing-source", f"score|--data|{{missing}}|{OUT}", "is not a directory",
         MLFLOW_TRACKING_URI="sqlite:///{trained}"),
    case("score-unreachable-database", f"score|--data|{UNREACHABLE_DB}|{OUT}", "cannot connect to postgresql://u@",
         MLFLOW_TRACKING_URI="sqlite:///{trained}"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory, new_mlflow_store):
    """Paths the cases name: a 200-customer world and broken copies of it, files, MLflow stores."""
    from features.synthetic.world import generate_world

    root = tmp_path_factory.mktemp("user-errors")
    world = root / "world"
    generate_world(world, n_customers=200, seed=0)
    no_customers = root / "no-customers"
    shutil.copytree(world, no_customers)
    (no_customers / "customers.parquet").unlink()
    flawed = root / "flawed"  # one absurd amount: a rejected row to write
    shutil.copytree(world, flawed)
    transactions = pd.read_parquet(flawed / "transactions.parquet")
    transactions.loc[0, "amount"] = 1e12
    transactions.to_parquet(flawed / "transactions.parquet")
    a_file = root / "a-file"
    a_file.write_text("a regular file, not a folder")
    garbage = root / "garbage.db"
    garbage.write_bytes(os.urandom(4096))
    new_mlflow_store(root)  # an empty store, root/mlflow.db
    fresh = root / "mlflow.db"
    new_mlflow_store(root / "trained")  # the one register_a_model logs its model to
    locked = root / "locked.db"
    shutil.copyfile(fresh, locked)
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # held until every case has run
    configs = {"config_unknown_key": "[model]\nleaves = 3\n", "config_bad_value": 'n_windows = "many"\n'}
    for name, text in configs.items():
        (root / f"{name}.toml").write_text(text)
    yield {"world": world, "no_customers": no_customers, "flawed": flawed, "a_file": a_file, "garbage": garbage,
           "fresh": fresh, "locked": locked, "missing": root / "nowhere", "root": root,
           **{name: root / f"{name}.toml" for name in configs}}
    holder.close()


def environment(env: dict) -> dict:
    """The test's environment, narrow (``COLUMNS``), with ``env``'s MLflow store as the registry too."""
    env = {**os.environ, "COLUMNS": "60", **env}
    env["MLFLOW_REGISTRY_URI"] = env["MLFLOW_TRACKING_URI"]
    env.pop("MLFLOW_RUN_ID", None)
    return env


def clv(args: list[str], env: dict, cwd: Path) -> Outcome:
    """``clv`` in a process of its own, in ``cwd``; ``env`` names the MLflow store."""
    return run_clv(args, env=environment(env), cwd=cwd)


def register_a_model(places: dict) -> Path:
    """A store whose champion is a small real model of the tiny world, logged as training logs one."""
    import mlflow

    from training.tracking import PIP_REQUIREMENTS

    store = places["root"] / "trained" / "mlflow.db"
    model, signature, example = fit_pyfunc(places["world"])
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}", registry_uri=f"sqlite:///{store}")
    experiment = client.create_experiment("user-errors", artifact_location=(places["root"] / "artifacts").as_uri())
    with tracking_to(f"sqlite:///{store}"), mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(name="model", python_model=model, signature=signature, input_example=example,
                                       registered_model_name="customer-value", pip_requirements=PIP_REQUIREMENTS)
    client.set_registered_model_alias("customer-value", "champion", info.registered_model_version)
    return store


def run_case(case: Case, places: dict, model: Future | None, *, folder: str = "runs", runner=run_clv) -> Outcome:
    """The case in a folder of its own (``{run}``), once the trained model is ready if it needs one."""
    run = places["root"] / folder / case.id
    run.mkdir(parents=True)
    names = {**{k: str(v) for k, v in places.items()}, "run": str(run)}
    if any("{trained}" in value for value in case.env.values()):
        names["trained"] = str(model.result())
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{places['fresh']}", **case.env}
    env = environment({k: v.format_map(names) for k, v in env.items()})
    return runner([a.format_map(names) for a in case.args], env=env, cwd=run)


@pytest.fixture(scope="module")
def outcomes(request, places):
    """The selected cases, started together (after the model some need); each test waits for its own."""
    ids = {item.callspec.id for item in request.session.items
           if item.module is request.module and hasattr(item, "callspec")}
    selected = [c for c in CASES if c.id in ids]
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)  # CPU-bound: more workers only add contention
    needs_model = any("{trained}" in value for c in selected for value in c.env.values())
    model = Future() if needs_model else None
    if model is not None:  # here, not in the pool: MLflow's settings are the process's
        model.set_result(register_a_model(places))
    yield {c.id: pool.submit(run_case, c, places, model) for c in selected}
    pool.shutdown(cancel_futures=True)


def test_the_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_a_user_error_is_one_line_and_exit_code_2(case, outcomes):
    outcome = outcomes[case.id].result()
    everything = outcome.stdout + outcome.stderr
    assert "Traceback" not in everything, everything
    assert outcome.returncode == 2, everything
    lines = outcome.stderr.rstrip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr
    assert case.says in lines[0], lines[0]


@pytest.mark.parametrize("case_id", ["train-engine-spark", "report-garbage-store"])
def test_the_installed_console_script_answers_as_the_forked_process_does(case_id, places):
    """The cases above fork from a process that has imported the libraries; the script a user's
    shell runs, in a new process, must say exactly the same."""
    case = next(c for c in CASES if c.id == case_id)
    forked = run_case(case, places, None, folder="forked")
    installed = run_case(case, places, None, folder="installed", runner=run_installed_clv)
    assert replace(installed, stderr=installed.stderr.replace("installed", "forked")) == forked


CHOICES = {  # command, option -> the values its help must name
    ("features", "--engine"): ("pandas", "dask"),
    ("train", "--engine"): ("pandas", "dask"),
    ("score", "--engine"): ("pandas", "dask"),
    ("train", "--promote"): ("auto", "always", "never"),
    ("score", "--reasons-for"): ("top10", "all", "none"),
    ("train", "--label"): ("net", "margin"),
    ("features", "--label"): ("net", "margin"),
    ("generate", "--world"): ("default", "no-influence", "topical"),
    ("validate", "--decimal"): ("'.'", "','", "auto"),
}


@pytest.mark.parametrize(("command", "option"), list(CHOICES), ids=[f"{c} {o}" for c, o in CHOICES])
def test_help_names_the_allowed_values_of_a_choice(command, option):
    from serving.cli import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if f" {option} " in line]
    assert len(rows) == 1, result.output
    for value in CHOICES[command, option]:
        assert value in rows[0], (value, rows[0])


def test_the_allowed_values_in_the_help_are_the_ones_the_code_accepts():
    from features.synthetic.knobs import WORLDS
    from serving.scoring.core import REASONS_FOR
    from training.registry import PROMOTE_MODES

    assert CHOICES["generate", "--world"] == tuple(WORLDS)
    assert CHOICES["score", "--reasons-for"] == REASONS_FOR
    assert CHOICES["train", "--promote"] == PROMOTE_MODES


def test_clv_says_its_version_and_lists_it_in_the_help():
    from importlib.metadata import version

    from serving.cli import app

    assert CliRunner().invoke(app, ["--version"]).output.strip() == f"clv {version('clv-social')}"
    assert "--version" in CliRunner().invoke(app, ["--help"], env={"COLUMNS": "400"}).output
