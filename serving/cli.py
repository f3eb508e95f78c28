"""The ``clv`` command line: each verb parses its options, calls one Python function, prints a summary.

Dates and the horizon are read once, into a features.run_request.RunRequest; every error a user
can cause ends as one line with exit code 2 (serving.cli_errors). Each verb imports its engine when
it runs, so that --help, --version and usage errors do not wait for MLflow, Dask and LightGBM.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from features import atomic
from features.config import FeatureConfig
from features.errors import UserError
from features.identifiers import (
    attribute_names,
    exclusion_warning,
    identifier_columns,
    resolve_attributes,
)
from features.ingest.export_checks import DEFAULT_RULES, ExportRules
from features.ingest.masking import mask_url
from features.run_request import RunRequest, parse_date, parse_horizon
from features.synthetic.knobs import WORLDS
from serving.cli_errors import OneLineUsageErrors, friendly_errors, print_error
from training.config import LABELS, PROMOTE_MODES, TrainConfig, replace_fields
from training.model_source import check_model_source, trust_warning

DRIFT_EXIT_CODE = 3  # --fail-on-drift and the drift check failed (2 is a user's mistake)
console = Console()
err_console = Console(stderr=True)

# MLflow 3 sends anonymous usage telemetry by default (and looks up its host when it is imported);
# the command line turns it off unless the user has chosen either way themselves (docs/security.md).
if "DO_NOT_TRACK" not in os.environ:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


app = typer.Typer(
    help="Customer long-term value from CRM history, with social influence as one measured input.",
    cls=OneLineUsageErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            console.print(f"clv {version('clv-social')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            console.print("clv (not installed)")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                          help="Print the version and exit.")) -> None:
    """Customer long-term value from CRM history, with social influence as one measured input."""


def decimal_option():
    return typer.Option(None, "--decimal", help="Decimal mark of numbers the export writes as text: "
                        "'.', ',' or auto (detected per column; refused when ambiguous). Default: auto, or the "
                        "model's when scoring.")


def max_amount_option():
    return typer.Option(None, "--max-amount", help="Amounts and margins beyond this (absolute) are rejected as "
                        "implausible. Default: 1e9, or the model's when scoring.")


def export_rules(decimal: str | None, max_amount: float | None) -> ExportRules:
    """The --decimal and --max-amount options over the contract's defaults."""
    return ExportRules(decimal=decimal or DEFAULT_RULES.decimal,
                       max_amount=DEFAULT_RULES.max_amount if max_amount is None else max_amount)


def check_world_folder(out: Path, force: bool) -> None:
    """Refuse to write a world over a folder of other files (a real export, say) unless forced."""
    if force or not out.is_dir() or (out / "world.json").exists():
        return
    others = sorted(p.name for p in out.iterdir())
    if others:
        raise UserError(f"--out {out} holds files that are not a generated world ({', '.join(others[:5])}"
                        f"{', ...' if len(others) > 5 else ''}): choose an empty folder or pass --force")


def check_parquet_out(out: Path) -> None:
    """Outputs are Parquet: a path with another suffix would get Parquet bytes under a misleading name."""
    if out.suffix.lower() != ".parquet":
        raise UserError(f"--out {out}: outputs are written as Parquet; name the file with a .parquet suffix")


def currency_option(default: str):
    return typer.Option(None, "--currency", help=f"Currency of the amounts, e.g. EUR or $: labels money (default: "
                        f"{default}).")


def mapping_option():
    return typer.Option(None, "--mapping", help="JSON or TOML file naming the source's tables and columns that "
                        "differ from the contract (a database's, or a directory's files).")


def read_mapping(path: Path | None):
    """The --mapping file, read and checked before any work starts (None: the contract's names)."""
    from features.ingest.mapping import SourceMapping

    return None if path is None else SourceMapping.from_file(path)


def check_engine(engine: str) -> None:
    if engine not in ("pandas", "dask"):
        raise UserError(f"--engine must be pandas or dask, not {engine!r}")


def print_excluded(excluded: dict[str, str]) -> None:
    """The warning naming attribute columns left out as identifiers (names only, never values)."""
    if excluded:
        err_console.print(exclusion_warning(excluded), soft_wrap=True, highlight=False)


def print_notes(notes: list[str]) -> None:
    """Facts about the rows kept that the user should see (largest amounts, rows before signup)."""
    for note in notes:
        console.print(f"  note: {note}", soft_wrap=True, highlight=False)


def print_frame(frame, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in frame.columns:
        table.add_column(str(column), justify="right" if frame[column].dtype.kind in "iuf" else "left",
                         no_wrap=True)
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    console.print(table)


@app.command()
@friendly_errors
def generate(
    out: Path = typer.Option(..., "--out", help="Directory to write the world into."),
    customers: int = typer.Option(50_000, "--customers", min=100, help="Number of customers."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives identical files."),
    end_date: str = typer.Option("2025-12-31", "--end-date", help="Last day of the history (YYYY-MM-DD)."),
    influence_on_purchases: float | None = typer.Option(
        None, help="Effect of topical engagement on a customer's own purchase rate (0 = none)."),
    influence_on_referrals: float | None = typer.Option(
        None, help="Effect of topical engagement on referrals made (0 = none)."),
    no_influence: bool = typer.Option(False, "--no-influence", help="Set both influence effects to zero."),
    world: str = typer.Option("default", "--world", help="Named world: default, no-influence (social data "
                                                        "carries no signal) or topical (value driven by topical "
                                                        "engagement)."),
    force: bool = typer.Option(False, "--force", help="Write into a folder that holds other files."),
):
    """Write a synthetic CRM + social world in the data contract, with its ground truth."""
    from features.synthetic.world import generate_world

    if world not in WORLDS:
        raise UserError(f"--world must be one of {', '.join(WORLDS)}, not {world!r}")
    history_end = parse_date(end_date, option="--end-date")
    check_world_folder(out, force)
    knobs = WORLDS[world]
    if influence_on_purchases is not None:
        knobs = replace(knobs, influence_on_purchases=influence_on_purchases)
    if influence_on_referrals is not None:
        knobs = replace(knobs, influence_on_referrals=influence_on_referrals)
    if no_influence:
        knobs = replace(knobs, influence_on_purchases=0.0, influence_on_referrals=0.0)
    summary = generate_world(out, n_customers=customers, seed=seed, end_date=str(history_end.date()),
                             knobs=knobs, progress=sys.stderr.isatty())
    rows = summary.get("rows", {})
    console.print(
        f"generated {customers:,} customers (seed {seed}) in {summary.get('seconds', 0):.1f}s -> {out}\n"
        + "  " + ", ".join(f"{t}: {n:,}" for t, n in rows.items()),
        soft_wrap=True,
    )


@app.command()
@friendly_errors
def validate(
    data: str = typer.Option(..., "--data", help="Source: a directory of contract tables or a PostgreSQL URL."),
    rejects: Path = typer.Option(Path("rejects"), "--rejects", help="Where rejected rows are written."),
    reject_threshold: float = typer.Option(0.01, min=0.0, max=1.0, help="Largest share of rejected rows per table."),
    mapping: Path | None = mapping_option(),
    decimal: str | None = decimal_option(),
    max_amount: float | None = max_amount_option(),
):
    """Check a source against the data contract; write rejected rows with their reason."""
    from features.ingest.source import describe_source, load_source, write_rejects

    mapping = read_mapping(mapping)
    result = load_source(data, reject_threshold=reject_threshold, mapping=mapping,
                         rules=export_rules(decimal, max_amount))
    console.print(f"source {describe_source(data)}: contract check in {result.seconds:.1f}s", soft_wrap=True)
    print_frame(result.summary.rename(columns={"rows_in": "in", "rows_kept": "kept",
                                               "rows_rejected": "rejected"}), "rows per table")
    print_notes(result.notes)
    written = write_rejects(result.rejects, rejects)
    if written:
        console.print("rejected rows written to " + ", ".join(str(p) for p in written), soft_wrap=True)
    else:
        console.print("no rejected rows")


@app.command()
@friendly_errors
def features(
    data: str = typer.Option(..., "--data", help="Source: a directory of contract tables or a PostgreSQL URL."),
    as_of: str = typer.Option(..., "--as-of", help="Cutoff date: features use only data strictly before it."),
    out: Path = typer.Option(..., "--out", help="Feature table to write (.parquet); a manifest is written beside it."),
    horizon_days: int | None = typer.Option(
        None, "--horizon-days", min=1, help="Add a `label` column: net revenue in [as_of, as_of + H)."),
    market_topic: list[str] = typer.Option([], "--market-topic", help="A topic of the business's market (repeatable)."),
    label: str = typer.Option("net", "--label", help="What the label means: net (revenue net of refunds) or margin."),
    reject_threshold: float = typer.Option(0.01, min=0.0, max=1.0, help="Largest share of rejected rows per table."),
    engine: str = typer.Option("pandas", "--engine", help="pandas (one machine) or dask (a cluster)."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Dask scheduler address (default: a local cluster sized to the machine)."),
    mapping: Path | None = mapping_option(),
    decimal: str | None = decimal_option(),
    max_amount: float | None = max_amount_option(),
):
    """Build point-in-time customer features as of a date (and the label, with --horizon-days)."""
    from features.build import build_features
    from features.dask_engine.features import write_features_dask
    from features.ingest.source import load_source, write_rejects
    from features.labels import label_values
    from features.manifest import manifest_for

    start = time.perf_counter()
    check_engine(engine)
    check_parquet_out(out)
    if label not in LABELS:
        raise UserError(f"--label must be net or margin, not {label!r}")
    mapping = read_mapping(mapping)
    request = RunRequest.from_text(as_of, horizon_days or FeatureConfig.horizon_days)
    cutoff, labels = request.as_of, horizon_days is not None
    rules = export_rules(decimal, max_amount)
    config = FeatureConfig(market_topics=tuple(market_topic), label=LABELS[label], horizon_days=request.horizon_days,
                           decimal=rules.decimal, max_amount=rules.max_amount)
    if engine == "dask":
        try:
            done = write_features_dask(data, cutoff, config, out, scheduler=scheduler,
                                       reject_threshold=reject_threshold, labels=labels, mapping=mapping)
        except ValueError as err:
            raise UserError(str(err)) from None
        console.print(f"features as of {cutoff.date()} on dask: {done['customers_in']:,} customers in, "
                      f"{done['rows']:,} rows x {done['features']} features out in {done['seconds']:.1f}s\n"
                      f"  -> {done['output']} ({done['parts']} parts)\n  -> {done['manifest']}", soft_wrap=True)
        print_excluded(done["excluded_attributes"])
        print_notes(done["notes"])
        return
    loaded = load_source(data, reject_threshold=reject_threshold, until=None if labels else cutoff, rules=rules,
                         mapping=mapping)
    config, excluded = resolve_attributes(config, attribute_names(loaded.tables.customers),
                                          identifier_columns(loaded.tables.customers))
    print_excluded(excluded)
    frame = build_features(loaded.tables, cutoff, config)
    manifest = manifest_for(frame, config)
    if labels:
        try:
            frame = frame.assign(label=label_values(loaded.tables, cutoff, config))
        except ValueError as err:
            raise UserError(str(err)) from None
    rejects_dir = out.parent / "rejects"
    written = write_rejects(loaded.rejects, rejects_dir)
    atomic.write_frame(out, frame)
    manifest_path = manifest.save(out.with_name(out.name.removesuffix(".parquet") + ".manifest.json"))
    console.print(
        f"features as of {cutoff.date()}: {len(loaded.tables.customers):,} customers in, {len(frame):,} rows x "
        f"{len(manifest.features)} features out"
        + (f", label over {config.horizon_days} days" if labels else "")
        + f" in {time.perf_counter() - start:.1f}s\n  -> {out}\n  -> {manifest_path}"
        + (f"\n  rejected rows -> {rejects_dir}" if written else ""),
        soft_wrap=True,
    )
    print_notes(loaded.notes)


@app.command()
@friendly_errors
def train(
    data: str = typer.Option(..., "--data", help="Source: a directory of contract tables or a PostgreSQL URL."),
    as_of: str | None = typer.Option(None, "--as-of", help="Training date (default: day after the last transaction)."),
    horizon_days: int | None = typer.Option(
        None, "--horizon-days", help="Value horizon in days (default 365, or the --config file's)."),
    market_topic: list[str] = typer.Option([], "--market-topic", help="A topic of the business's market (repeatable)."),
    label: str | None = typer.Option(None, "--label", help="What value means: net (revenue net of refunds) or margin."),
    n_windows: int | None = typer.Option(
        None, "--n-windows", help="Training windows, validation included (default: sized to the history)."),
    step_days: int | None = typer.Option(
        None, "--step-days", help="Days between window cutoffs (default: sized to the horizon and history)."),
    config_file: Path | None = typer.Option(
        None, "--config", help="TOML file setting any training setting; command-line options override it."),
    experiment: str = typer.Option("customer-value", "--experiment", help="MLflow experiment name."),
    model_name: str = typer.Option("customer-value", "--model-name", help="Registered model name."),
    promote: str = typer.Option("auto", "--promote", help="auto (only if it beats the baselines and the champion), "
                                                           "always or never."),
    engine: str = typer.Option("pandas", "--engine", help="pandas (one machine) or dask (a cluster)."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Dask scheduler address (default: a local cluster sized to the machine)."),
    mapping: Path | None = mapping_option(),
    decimal: str | None = decimal_option(),
    max_amount: float | None = max_amount_option(),
    currency: str | None = currency_option("the model's default when scoring; none: plain amounts"),
):
    """Train, evaluate out of time against baselines, ablate social data, and register the model in MLflow."""
    if promote not in PROMOTE_MODES:
        raise UserError(f"--promote must be one of {', '.join(PROMOTE_MODES)}, not {promote!r}")
    check_engine(engine)
    mapping = read_mapping(mapping)
    config = train_config(config_file, horizon_days=horizon_days, market_topic=market_topic, label=label,
                          n_windows=n_windows, step_days=step_days, decimal=decimal, max_amount=max_amount,
                          currency=currency)
    request = RunRequest.from_text(as_of, config.horizon_days)  # the options are good: now the slow imports
    from training.pandas_engine import PandasEngine
    from training.train import train as train_model
    if engine == "dask":  # dask takes seconds more: only when asked for
        from training.dask_engine import DaskEngine
    train_model(data, config=config, as_of=request.as_of, experiment=experiment, model_name=model_name,
                promote=promote, progress=True, mapping=mapping,
                engine=DaskEngine(scheduler=scheduler) if engine == "dask" else PandasEngine())


def train_config(config_file: Path | None, *, horizon_days: int | None, market_topic: list[str],
                 label: str | None, n_windows: int | None, step_days: int | None,
                 decimal: str | None = None, max_amount: float | None = None,
                 currency: str | None = None) -> TrainConfig:
    """Defaults, then the --config file, then the options given on the command line."""
    config = TrainConfig.from_file(config_file) if config_file is not None else TrainConfig()
    features: dict = {}
    if horizon_days is not None:
        features["horizon_days"] = parse_horizon(horizon_days)
    if market_topic:
        features["market_topics"] = list(market_topic)
    if label is not None:
        features["label"] = label
    if decimal is not None:
        features["decimal"] = decimal
    if max_amount is not None:
        features["max_amount"] = float(max_amount)
    flags = {key: value for key, value in (("n_windows", n_windows), ("step_days", step_days),
                                           ("currency", currency)) if value is not None}
    if features:
        flags["features"] = features
    return replace_fields(config, flags, where="options") if flags else config


@app.command()
@friendly_errors
def score(
    data: str = typer.Option(..., "--data", help="Source: a directory of contract tables or a PostgreSQL URL."),
    out: Path = typer.Option(..., "--out", help="Predictions file (.parquet); a JSON manifest is written beside it."),
    as_of: str | None = typer.Option(None, "--as-of", help="Scoring date (default: day after the last transaction)."),
    model: str = typer.Option(
        "models:/customer-value@champion", "--model",
        help="Registered model: models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH."),
    trust_model_from: Path | None = typer.Option(
        None, "--trust-model-from",
        help="Also load a --model folder at or under this folder, outside the MLflow store (its pickle runs as you)."),
    reasons: int = typer.Option(3, "--reasons", min=0, help="Reason columns per customer."),
    reasons_for: str = typer.Option("top10", "--reasons-for", help="Who gets reasons: top10, all or none."),
    chunk_size: int = typer.Option(100_000, "--chunk-size", min=100, help="Customers per chunk (bounds memory)."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Processes scoring chunks in parallel (default: 2 for 200k+ customers, else 1)."),
    rejects: Path | None = typer.Option(
        None, "--rejects", help="Directory for rejected rows (default: OUT_STEM.rejects/ beside the output)."),
    reject_threshold: float | None = typer.Option(
        None, "--reject-threshold", min=0.0, max=1.0,
        help="Largest share of invalid rows per table (default: the model's, 1%)."),
    engine: str = typer.Option("pandas", "--engine", help="pandas (one machine) or dask (a cluster)."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Dask scheduler address (default: a local cluster sized to the machine)."),
    allow_missing: list[str] = typer.Option(
        [], "--allow-missing", help="An optional table, or TABLE.COLUMN, the model was trained with that this "
                                    "source may lack (repeatable; recorded in the manifest)."),
    mapping: Path | None = mapping_option(),
    decimal: str | None = decimal_option(),
    max_amount: float | None = max_amount_option(),
    currency: str | None = currency_option("the training run's; none: plain amounts"),
    drift_threshold: float | None = typer.Option(
        None, "--drift-threshold", help="PSI above which a feature or the predictions count as drifted (default 0.25)."),
    fail_on_drift: bool = typer.Option(
        False, "--fail-on-drift", help="Publish nothing and exit with code 3 when the drift check fails."),
    track: bool = typer.Option(True, "--track/--no-track", help="Log the scoring run to MLflow (experiment "
                               "<model name>-scoring)."),
    export_top: int | None = typer.Option(None, "--export-top", min=1, help="Contact list: the N most valuable."),
    export: Path | None = typer.Option(None, "--export", help="Contact list file (.csv): value, tier, reasons."),
    export_attributes: list[str] = typer.Option([], "--export-attributes", help="Customers column to add (repeatable)."),
):
    """Score every customer with the registered model: value, range, rank, tier and reasons; check drift."""
    from serving.contact_list import check_export_request, export_contacts

    check_engine(engine)
    check_parquet_out(out)
    trusted = check_model_source(model, trust_model_from)  # before anything is read or unpickled
    if trusted is not None:
        err_console.print(trust_warning(model, trusted), soft_wrap=True, highlight=False, markup=False)
    mapping = read_mapping(mapping)
    check_export_request(export_top, export, export_attributes, data, mapping)  # before scoring, not after
    cutoff = None if as_of is None else parse_date(as_of)  # the options are good: now the slow imports
    from mlflow.exceptions import MlflowException

    from serving.scoring.chunked import score_customers
    from serving.scoring.dask_engine import score_customers_dask
    from serving.scoring.printed_summary import print_score_summary
    from serving.scoring.tracked_run import DriftError

    try:
        if engine == "dask":
            summary = score_customers_dask(data, out=out, as_of=cutoff, model_uri=model, reasons=reasons,
                                           trust_model_from=trust_model_from,
                                           allow_missing=tuple(allow_missing), decimal=decimal,
                                           max_amount=max_amount, currency=currency,
                                           drift_threshold=drift_threshold, fail_on_drift=fail_on_drift,
                                           track=track,
                                           reasons_for=reasons_for, chunk_size=chunk_size, scheduler=scheduler,
                                           rejects=rejects, reject_threshold=reject_threshold, mapping=mapping)
        else:
            summary = score_customers(data, out=out, as_of=cutoff, model_uri=model, reasons=reasons,
                                      trust_model_from=trust_model_from,
                                      allow_missing=tuple(allow_missing), decimal=decimal, max_amount=max_amount,
                                      reasons_for=reasons_for, chunk_size=chunk_size, progress=True,
                                      workers=workers, rejects=rejects, reject_threshold=reject_threshold,
                                      mapping=mapping, currency=currency, drift_threshold=drift_threshold,
                                      fail_on_drift=fail_on_drift, track=track)
    except MlflowException as err:  # e.g. no such registered model or alias
        raise UserError(f"cannot load model {model}: {mask_url(err.message)}") from None
    except DriftError as err:  # not the user's mistake: its own exit code, still one line
        print_error(str(err))
        raise typer.Exit(code=DRIFT_EXIT_CODE) from None
    print_score_summary(summary, console)
    if export is not None:
        console.print(export_contacts(summary, export, top=export_top, data=data, attributes=export_attributes,
                                      mapping=mapping), soft_wrap=True)


@app.command()
@friendly_errors
def report(
    out: Path = typer.Option(..., "--out", help="Directory for report.html and its figures."),
    model: str | None = typer.Option(
        None, "--model", help="Registered model whose training run to report on: models:/NAME@ALIAS or "
                              "models:/NAME/VERSION (default: models:/customer-value@champion); no model is loaded."),
    run: str | None = typer.Option(None, "--run", help="Report on this training run instead of a model."),
    scores: Path | None = typer.Option(None, "--scores", help="Today's scores (clv score's .parquet): tiers, top "
                                       "customers, value ranges and drift for decision makers."),
    currency: str | None = typer.Option(None, "--currency", help="Currency of money on the page, e.g. EUR "
                                        "(default: the scores' manifest's, else the training run's)."),
):
    """Write the stakeholder report (one self-contained HTML page): drivers, and with --scores today's customers."""
    from serving.report.build import build_report

    if model and run:
        raise UserError("pass --model or --run, not both")
    start = time.perf_counter()
    try:
        page = build_report(model_uri=model, run_id=run, out_dir=out, scores=scores, currency=currency)
    except (LookupError, ValueError) as err:  # unknown model or run, or not a training run
        raise UserError(str(err)) from None
    console.print(f"report written in {time.perf_counter() - start:.1f}s -> {page}\n  figures as PNG in {page.parent}; "
                  "the same files are logged to the model's run under report/"
                  + (", the page without today's top customers (no customer ids in MLflow)" if scores else ""),
                  soft_wrap=True)


@app.command()
@friendly_errors
def load(
    data: Path = typer.Option(..., "--data", help="Source directory of contract tables to load (validated first)."),
    to: str = typer.Option(..., "--to", help="Target database: postgresql://USER@HOST:PORT/DB[?schema=NAME]; "
                           "give the password in PGPASSWORD or ~/.pgpass."),
    schema: str | None = typer.Option(None, "--schema", help="Schema for the tables (default: ?schema= of the URL)."),
    replace: bool = typer.Option(False, "--replace", help="Drop the contract tables already in the schema first."),
):
    """Load a source directory (e.g. a generated world) into PostgreSQL: typed, indexed tables, bulk COPY."""
    from features.ingest.database_load import load_source_to_database

    s = load_source_to_database(data, to, schema=schema, if_exists="replace" if replace else "fail")
    rejected = {t: n for t, n in s["rows_rejected"].items() if n}
    console.print(f"loaded into {s['url']} (schema {s['schema']}) in {s['seconds']:.1f}s\n  "
                  + ", ".join(f"{t}: {n:,}" for t, n in s["rows"].items())
                  + (f"\n  rejected rows not loaded: {rejected}" if rejected else ""), soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point alias
    app()
