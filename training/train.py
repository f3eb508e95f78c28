"""A training run: load the source on an engine, resolve the cutoff, run the pipeline, log and register.

``train_run`` is what ``clv train`` and the MLproject entry point call. The engine
(training.pandas_engine.PandasEngine by default, training.dask_engine.DaskEngine on a cluster)
loads and validates the source and supplies the window source and the fitter; the run, its tags,
metrics, artifacts and registry entries are the same whichever engine ran.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd

from features.identifiers import exclusion_warning, resolve_attributes
from features.ingest.contract import optional_columns_present
from features.run_request import check_cutoff, default_as_of
from training import tracking
from training.config import TrainConfig
from training.drift import reference
from training.pandas_engine import PandasEngine
from training.pipeline import evaluate
from training.progress import Steps
from training.registry import check_promote_mode
from training.run_log import log_evaluation
from training.summary import TrainSummary, print_summary


def train(data, **options) -> str:
    """train_run, then the printed summary (when ``progress``); returns the MLflow run id."""
    summary = train_run(data, **options)
    if options.get("progress", True):
        print_summary(summary)
    return summary.run_id


def train_run(
    data,
    *,
    config: TrainConfig | None = None,
    as_of: pd.Timestamp | None = None,
    experiment: str = "customer-value",
    model_name: str = "customer-value",
    promote: str = "auto",
    progress: bool = True,
    engine=None,
    mapping=None,
) -> TrainSummary:
    """Train, evaluate and register a customer-value model; returns the run's TrainSummary.

    data: a source directory or database URL, a features.ingest.source.LoadResult or Tables (the
        Dask engine reads source directories).
    config: everything the run depends on, horizon and market topics included (TrainConfig()).
    as_of: the training date; None: the day after the latest valid transaction. Rows dated on or
        after it are never read.
    engine: PandasEngine() (default) or training.dask_engine.DaskEngine(scheduler=...).
    mapping: table and column names of the source that differ from the contract
        (features.ingest.mapping.SourceMapping, a dict or a JSON/TOML file).
    """
    import mlflow

    started = time.perf_counter()
    check_promote_mode(promote)
    config = config or TrainConfig()
    engine = engine or PandasEngine()
    if as_of is not None:
        check_cutoff(as_of)
    steps = Steps(enabled=progress)
    uri = tracking.use_store()  # before the data is read: a store that cannot be used should not cost a load
    with engine.load(data, config, until=as_of, steps=steps, mapping=mapping) as loaded:
        # Which customers columns become features, decided once on the whole table (docs/privacy.md).
        features, excluded = resolve_attributes(config.features, loaded.attribute_columns, loaded.identifiers)
        config = replace(config, features=features)
        if excluded and progress:
            steps.console.print(exclusion_warning(excluded), soft_wrap=True, highlight=False)
        as_of = as_of if as_of is not None else default_as_of(loaded.latest_transaction)
        experiment_id = tracking.experiment_id(experiment, uri)
        with tracking.launcher_run() as launcher, mlflow.start_run(
            experiment_id=experiment_id, run_name=f"train as_of {as_of.date()}",
            tags={"mlflow.parentRunId": launcher} if launcher else None,
        ) as run:
            mlflow.set_tags({
                "git_commit": tracking.git_commit(),
                "git_dirty": tracking.git_dirty(),
                "input_fingerprint": tracking.fingerprint_hash(loaded.fingerprint),
                "as_of": str(as_of.date()),
                "horizon_days": str(config.horizon_days),
                "test_cutoff": str((as_of - pd.Timedelta(days=config.horizon_days)).date()),
                "objective": config.model.objective,
                "rejected_rows": str(loaded.rejected),
                "engine": engine.name,
                "currency": config.currency or "",
                "attributes_excluded": ", ".join(excluded) or "none",  # names only, never values
                **loaded.tags,
            })
            mlflow.log_params(config.flat())
            ev = evaluate(loaded.source, loaded.fitter, as_of, config, steps=steps)
            if loaded.columns:  # the scorer refuses a source lacking an optional column the model saw
                ev.final_model.source_columns = optional_columns_present(loaded.columns)
            ev.final_model.drift_reference = drift_reference(ev.final_model, ev.test_features)
            ev.final_model.currency = config.currency  # the scorer's and the report's default label
            with steps.step("Logging run, model and registry"):
                summary = log_evaluation(ev, run.info.run_id, loaded.described, loaded.fingerprint,
                                         experiment, model_name, promote, uri)
    return replace(summary, seconds=time.perf_counter() - started)


def drift_reference(model, test_features: pd.DataFrame) -> dict:
    """What the scorer compares today's customers with (training.drift): the served model's inputs
    and predictions on the test window."""
    inputs = model.encoder.model_input(test_features)
    return reference(inputs, model.predict_value(inputs).to_numpy(), model.encoder.categorical)
