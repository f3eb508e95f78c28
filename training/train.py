"""Training run: out-of-time evaluation against baselines, social ablation, attribution, refit, MLflow.

Timeline (H = horizon_days; see docs/evaluation.md):
    training windows: cutoffs test_cutoff - H - k*step, labels [c, c + H) all end by test_cutoff
    test window:      features before test_cutoff = as_of - H, label [test_cutoff, as_of)
    refit windows:    cutoffs as_of - H - k*step (labels end by as_of): the registered model
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import FAMILY_NAMES, as_timestamp, select_families
from features.catalog import SOCIAL_FAMILIES
from features.manifest import FeatureManifest, FeatureSkewError, check_compatible, manifest_for
from features.tables import Tables
from features.windows import build_training_set, training_cutoffs
from training.attribution import family_shares, feature_importance, shap_sample
from training.baselines import bgnbd_value, last_h_revenue
from training.config import TrainConfig
from training.evaluate import (
    Lift,
    decile_chart,
    deciles,
    evaluate_predictions,
    paired_bootstrap_lift,
)
from training.metrics import METRIC_NAMES, norm_gini, value_metrics
from training.model import CustomerValueModel, FeatureEncoder, make_model
from training.progress import Steps
from training.report_inputs import log_report_inputs, report_frames

NEW_CUSTOMER_TENURE_DAYS = 365


# ---------------------------------------------------------------------------------------------
# Windows


@dataclass(frozen=True)
class WindowPlan:
    """Every cutoff of a run. Label windows are [cutoff, cutoff + horizon_days)."""

    as_of: pd.Timestamp
    horizon_days: int
    test_cutoff: pd.Timestamp
    train_cutoffs: tuple[
        pd.Timestamp, ...
    ]  # evaluation model, oldest first (validation ones excluded)
    validation_cutoffs: tuple[pd.Timestamp, ...]  # early stopping: the most recent training windows
    refit_cutoffs: tuple[pd.Timestamp, ...]  # registered model, oldest first

    def describe(self) -> dict[str, object]:
        day = lambda ts: str(pd.Timestamp(ts).date())
        return {
            "as_of": day(self.as_of),
            "test_cutoff": day(self.test_cutoff),
            "train_cutoffs": [day(c) for c in self.train_cutoffs],
            "validation_cutoffs": [day(c) for c in self.validation_cutoffs],
            "refit_cutoffs": [day(c) for c in self.refit_cutoffs],
        }


def plan_windows(as_of, horizon_days: int, config: TrainConfig) -> WindowPlan:
    """Cutoffs for evaluation and refit; no evaluation label passes the test cutoff as_of - H."""
    as_of = as_timestamp(as_of)
    test_cutoff = as_of - pd.Timedelta(days=horizon_days)
    evaluation = sorted(
        training_cutoffs(test_cutoff, horizon_days, config.n_windows, config.step_days)
    )
    refit = sorted(training_cutoffs(as_of, horizon_days, config.n_windows, config.step_days))
    k = config.validation_windows
    return WindowPlan(
        as_of,
        horizon_days,
        test_cutoff,
        tuple(evaluation[:-k]),
        tuple(evaluation[-k:]),
        tuple(refit),
    )


def default_as_of(tables: Tables) -> pd.Timestamp:
    """The day after the latest transaction: the first day whose value no data has seen yet."""
    latest = tables.transactions["timestamp"].max()
    if pd.isna(latest):
        raise ValueError("transactions table is empty: cannot choose as_of")
    return as_timestamp(pd.Timestamp(latest).normalize() + pd.Timedelta(days=1))


# ---------------------------------------------------------------------------------------------
# Fitting


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("cutoff", "label")]


def encoder_for(manifest: FeatureManifest) -> FeatureEncoder:
    """Feature order and category levels (as strings, in the manifest's code order) of a manifest."""
    levels = {
        name: tuple(str(v) for v in manifest.categories[name])
        for name in manifest.features
        if manifest.dtypes[name] == "category"
    }
    return FeatureEncoder(tuple(manifest.features), levels)


def fit_evaluation_model(
    train_set: pd.DataFrame,
    validation: pd.DataFrame,
    manifest: FeatureManifest,
    config: TrainConfig,
) -> CustomerValueModel:
    """Booster(s) fitted on the training windows, early-stopped on the validation window(s)."""
    encoder = encoder_for(manifest)
    model = make_model(config.model, encoder.categorical, seed=config.seed)
    model.fit(
        encoder.encode(train_set),
        train_set["label"].to_numpy(),
        X_valid=encoder.encode(validation),
        y_valid=validation["label"].to_numpy(),
    )
    return CustomerValueModel.from_fitted(
        model, encoder, manifest_json=manifest.to_json(), families=dict(manifest.families)
    )


def refit_model(
    refit_set: pd.DataFrame, manifest: FeatureManifest, config: TrainConfig, rounds: dict[str, int]
) -> CustomerValueModel:
    """The registered model: same settings, every refit window, the evaluation model's rounds."""
    encoder = encoder_for(manifest)
    model = make_model(config.model, encoder.categorical, seed=config.seed)
    model.fit(encoder.encode(refit_set), refit_set["label"].to_numpy(), rounds=rounds)
    return CustomerValueModel.from_fitted(
        model, encoder, manifest_json=manifest.to_json(), families=dict(manifest.families)
    )


def _without_social(frame: pd.DataFrame, manifest: FeatureManifest) -> pd.DataFrame:
    social = [f for f in manifest.features if manifest.families[f] in SOCIAL_FAMILIES]
    return frame.drop(columns=social)


def _families_present(manifest: FeatureManifest) -> tuple[str, ...]:
    present = set(manifest.families.values())
    return tuple(name for name in FAMILY_NAMES if name in present)


# ---------------------------------------------------------------------------------------------
# Evaluation without tracking


@dataclass
class Ablation:
    """The same pipeline without the social families (SOCIAL_FAMILIES)."""

    model: CustomerValueModel
    manifest: FeatureManifest
    metrics: dict[str, float]
    lift: Lift
    lift_new: Lift
    rounds: dict[str, int]


@dataclass
class Evaluation:
    """Everything a run computes before it is logged: windows, models, predictions, metrics."""

    plan: WindowPlan
    config: TrainConfig
    rows: dict[str, int]
    manifest: FeatureManifest
    refit_manifest: FeatureManifest
    model: CustomerValueModel  # evaluation model (labels end by test_cutoff)
    final_model: CustomerValueModel  # refit (labels end by as_of): the one registered
    test_features: pd.DataFrame
    test_label: pd.Series
    predictions: dict[str, pd.Series]
    metrics: dict[str, float]
    bgnbd_status: str
    bgnbd_params: dict[str, float]
    decile_table: pd.DataFrame
    importance: pd.DataFrame
    ablation: Ablation | None
    shap_contributions: pd.DataFrame | None = None  # log-scale TreeSHAP of the attribution sample
    train_sample: pd.DataFrame | None = (
        None  # seeded sample of the training windows (MLflow dataset)
    )
    train_digest: str = ""  # hash of the full training windows (features, cutoff, label)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rounds(self) -> dict[str, int]:
        return dict(self.model.rounds)


@dataclass(frozen=True)
class Windows:
    """Stacked feature windows with ``cutoff`` and ``label`` columns (features.windows.build_training_set)."""

    evaluation: pd.DataFrame  # training + validation windows: labels end by the test cutoff
    refit: pd.DataFrame  # windows whose labels end by as_of; the latest one is the test window


def build_windows(
    tables: Tables, plan: WindowPlan, config: TrainConfig, *, steps: Steps | None = None
) -> Windows:
    """Feature windows for evaluation and refit, checked so that no label passes its end."""
    steps = steps or Steps(enabled=False)
    fc = config.features

    def on_window(cutoff, rows, seconds):
        steps.update(f"window {pd.Timestamp(cutoff).date()}: {rows:,} customers ({seconds:.1f} s)")

    with steps.step("Training windows (labels end by the test cutoff)"):
        evaluation = build_training_set(
            tables,
            plan.test_cutoff,
            fc,
            n_windows=config.n_windows,
            step_days=config.step_days,
            on_window=on_window,
        )
    _check_no_label_past(evaluation, plan.test_cutoff, plan.horizon_days)
    with steps.step("Refit windows (labels end by as_of; the latest is the test window)"):
        refit = build_training_set(
            tables,
            plan.as_of,
            fc,
            n_windows=config.n_windows,
            step_days=config.step_days,
            on_window=on_window,
        )
    _check_no_label_past(refit, plan.as_of, plan.horizon_days)
    return Windows(evaluation, refit)


def lift_metrics(ablation: Ablation) -> dict[str, float]:
    """The social lift in normalised Gini with its bootstrap interval, overall and for new customers."""
    return {
        "social_lift_norm_gini": ablation.lift.estimate,
        "social_lift_norm_gini_lo": ablation.lift.lo,
        "social_lift_norm_gini_hi": ablation.lift.hi,
        "social_lift_norm_gini_new": ablation.lift_new.estimate,
        "social_lift_norm_gini_new_lo": ablation.lift_new.lo,
        "social_lift_norm_gini_new_hi": ablation.lift_new.hi,
    }


def attribute(model, test: pd.DataFrame, manifest: FeatureManifest, config: TrainConfig):
    """(sample, log-scale SHAP contributions, feature importance) on a seeded sample of the test window."""
    sample = shap_sample(test, config.shap_sample, seed=config.seed)
    contributions = model.log_contributions(sample)
    importance = feature_importance(
        contributions,
        model.encoder.encode(sample),
        dict(manifest.families),
        categorical=model.encoder.categorical,
    )
    return sample, contributions, importance


def evaluate_pipeline(
    tables: Tables,
    as_of,
    config: TrainConfig,
    *,
    steps: Steps | None = None,
    windows: Windows | None = None,
) -> Evaluation:
    """Build windows, fit, evaluate out of time against baselines, ablate social, attribute, refit.

    ``windows`` (from build_windows with the same as_of and config windows) skips rebuilding features,
    e.g. to compare model settings on identical data.
    """
    steps = steps or Steps(enabled=False)
    fc = config.features
    horizon = fc.horizon_days
    plan = plan_windows(as_of, horizon, config)
    if windows is None:
        windows = build_windows(tables, plan, config, steps=steps)
    expected = set(plan.train_cutoffs + plan.validation_cutoffs)
    if not set(windows.evaluation["cutoff"].unique()) <= expected or not set(
        windows.refit["cutoff"].unique()
    ) <= set(plan.refit_cutoffs):
        raise ValueError("windows were built for other cutoffs than this as_of and config")
    train_all, refit_set = windows.evaluation, windows.refit

    test = refit_set[refit_set["cutoff"] == plan.test_cutoff]
    if len(test) == 0:
        raise ValueError(f"no customers signed up before the test cutoff {plan.test_cutoff.date()}")
    present = sorted(train_all["cutoff"].unique())
    validation_cutoffs = [c for c in present if c in set(plan.validation_cutoffs)]
    if not validation_cutoffs or len(present) <= len(validation_cutoffs):
        raise ValueError(
            f"need at least {config.validation_windows + 1} training windows with history before "
            f"{plan.test_cutoff.date()}, found {len(present)}; lower n_windows/step_days or add history"
        )
    is_valid = train_all["cutoff"].isin(validation_cutoffs)
    train_set, validation = train_all[~is_valid], train_all[is_valid]
    families = select_families()
    manifest = manifest_for(train_all, fc, families)
    refit_manifest = manifest_for(refit_set, fc, families)

    test_label = test["label"].astype(np.float64)
    with steps.step(
        f"Fitting {config.model.objective} model ({len(train_set):,} rows, "
        f"{len(validation):,} for early stopping)"
    ):
        model = fit_evaluation_model(train_set, validation, manifest, config)
    steps.note(f"boosting rounds: {model.rounds}")
    predicted = model.predict_value(test)

    with steps.step("Baselines on the test window (last H days, BG/NBD + Gamma-Gamma)"):
        last_h = last_h_revenue(tables.transactions, test.index, plan.test_cutoff, horizon)
        customers = (
            tables.customers.set_index("customer_id").loc[test.index, ["signup_date"]].reset_index()
        )
        bg = bgnbd_value(
            tables.transactions,
            customers,
            plan.test_cutoff,
            horizon,
            penalizer=config.bgnbd_penalizer,
        )
    baselines = {"last_h": last_h}
    if bg.prediction is not None:
        baselines["bgnbd"] = bg.prediction
    else:
        steps.note(f"BG/NBD baseline {bg.status}")
    metrics = evaluate_predictions(test_label, predicted, baselines)
    table = deciles(test_label, {"model": predicted, **baselines})

    ablation = None
    if config.social_ablation and any(
        manifest.families[f] in SOCIAL_FAMILIES for f in manifest.features
    ):
        with steps.step("Social ablation (same pipeline without the social families)"):
            ablation = _ablate(
                tables,
                train_set,
                validation,
                test,
                test_label,
                predicted,
                plan,
                config,
                families,
                manifest,
            )
        metrics.update(lift_metrics(ablation))

    with steps.step(
        f"Attribution (exact TreeSHAP on at most {config.shap_sample:,} test customers)"
    ):
        _, contributions, importance = attribute(model, test, manifest, config)
    metrics.update(family_shares(importance, FAMILY_NAMES))

    with steps.step(f"Refit on windows ending by as_of ({len(refit_set):,} rows, same rounds)"):
        final_model = refit_model(refit_set, refit_manifest, config, model.rounds)

    rows = {
        "train": len(train_set),
        "validation": len(validation),
        "test": len(test),
        "refit": len(refit_set),
    }
    for name, value in rows.items():
        metrics[f"rows_{name}"] = float(value)
    for part, value in model.rounds.items():
        metrics[f"rounds_{part}"] = float(value)
    return Evaluation(
        plan=replace(
            plan,
            validation_cutoffs=tuple(validation_cutoffs),
            train_cutoffs=tuple(c for c in present if c not in set(validation_cutoffs)),
            refit_cutoffs=tuple(sorted(refit_set["cutoff"].unique())),
        ),
        config=config,
        rows=rows,
        manifest=manifest,
        refit_manifest=refit_manifest,
        model=model,
        final_model=final_model,
        test_features=test.drop(columns=["cutoff", "label"]),
        test_label=test_label,
        predictions={"model": predicted, **baselines},
        metrics=metrics,
        bgnbd_status=bg.status,
        bgnbd_params=bg.params,
        decile_table=table,
        importance=importance,
        ablation=ablation,
        shap_contributions=contributions,
        train_sample=shap_sample(train_all, 10_000, seed=config.seed),
        train_digest=frame_digest(train_all),
        seconds=dict(steps.seconds),
    )


def frame_digest(frame: pd.DataFrame) -> str:
    """Short content hash of a frame (values, index and column names), independent of memory layout."""
    import hashlib

    digest = hashlib.sha256()
    digest.update("\0".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _check_no_label_past(frame: pd.DataFrame, end: pd.Timestamp, horizon_days: int) -> None:
    latest = pd.Timestamp(frame["cutoff"].max()) + pd.Timedelta(days=horizon_days)
    if latest > end:
        raise AssertionError(f"a label window ends on {latest.date()}, after {end.date()}")


def _ablate(
    tables,
    train_set,
    validation,
    test,
    test_label,
    predicted,
    plan,
    config,
    families,
    manifest_full: FeatureManifest,
) -> Ablation:
    kept = tuple(f for f in families if f.name not in SOCIAL_FAMILIES)
    train_ns = _without_social(train_set, manifest_full)
    valid_ns = _without_social(validation, manifest_full)
    test_ns = _without_social(test, manifest_full)
    manifest = manifest_for(pd.concat([train_ns, valid_ns]), config.features, kept)
    model = fit_evaluation_model(train_ns, valid_ns, manifest, config)
    predicted_ns = model.predict_value(test_ns)
    metrics = value_metrics(test_label.to_numpy(), predicted_ns.to_numpy(), prefix="test_")
    actual = test_label.to_numpy()
    lift = paired_bootstrap_lift(
        actual,
        predicted.to_numpy(),
        predicted_ns.to_numpy(),
        resamples=config.bootstrap_resamples,
        interval=config.interval,
        seed=config.seed,
    )
    signup = tables.customers.set_index("customer_id")["signup_date"].reindex(test.index)
    new = ((plan.test_cutoff - signup).dt.days < NEW_CUSTOMER_TENURE_DAYS).to_numpy()
    lift_new = paired_bootstrap_lift(
        actual[new],
        predicted.to_numpy()[new],
        predicted_ns.to_numpy()[new],
        resamples=config.bootstrap_resamples,
        interval=config.interval,
        seed=config.seed + 1,
    )
    return Ablation(model, manifest, metrics, lift, lift_new, dict(model.rounds))


# ---------------------------------------------------------------------------------------------
# Tracked training


@dataclass
class TrainSummary:
    """What a run did, for the terminal summary and the run's metrics_vs_baselines.json."""

    run_id: str
    experiment: str
    tracking_uri: str
    model_name: str
    model_version: str | None
    aliases: list[str]
    promotion: str
    promotion_reason: str
    windows: dict[str, object]
    rows: dict[str, int]
    metrics: dict[str, float]
    bgnbd_status: str
    ui_command: str
    seconds: float

    def comparison(self) -> dict[str, dict[str, float | None]]:
        """metric -> {model, last_h, bgnbd, without_social} on the test window."""
        return comparison(self.metrics)


def train(
    data,
    *,
    as_of=None,
    horizon_days: int = 365,
    market_topics=(),
    experiment: str = "customer-value",
    model_name: str = "customer-value",
    promote: str = "auto",
    config: TrainConfig | None = None,
    progress: bool = True,
) -> str:
    """Train, evaluate and register a customer-value model; returns the MLflow run id.

    ``data``: a source directory (features.ingest.source.load_source), a LoadResult or Tables.
    ``horizon_days`` and a non-empty ``market_topics`` override the config's feature settings.
    """
    summary = train_run(
        data,
        as_of=as_of,
        horizon_days=horizon_days,
        market_topics=market_topics,
        experiment=experiment,
        model_name=model_name,
        promote=promote,
        config=config,
        progress=progress,
    )
    if progress:
        print_summary(summary)
    return summary.run_id


def resolve_config(config: TrainConfig | None, horizon_days: int, market_topics) -> TrainConfig:
    config = config or TrainConfig()
    features = replace(config.features, horizon_days=int(horizon_days))
    if market_topics:
        features = replace(features, market_topics=tuple(market_topics))
    return replace(config, features=features)


def load_tables(data, config: TrainConfig, *, until=None):
    """(tables, fingerprint, rejected row count) from a source directory, a LoadResult or Tables.

    ``until`` (the training as_of, when given): rows dated on or after it are not read; a database
    source filters them in SQL. Training never uses them: the latest label window ends at as_of.
    """
    if isinstance(data, Tables):
        return data, {"source": "in-memory tables"}, 0
    if hasattr(data, "tables") and hasattr(data, "fingerprint"):
        return data.tables, data.fingerprint, _rejected(data)
    from features.ingest.source import load_source

    result = load_source(data, reject_threshold=config.features.reject_threshold, until=until)
    return result.tables, {"source": describe_source(data), **result.fingerprint}, _rejected(result)


def describe_source(data) -> str | None:
    """Where the data came from, safe to log: a resolved directory or a database URL without its password."""
    from features.ingest.source import describe_source as describe

    if isinstance(data, Tables) or hasattr(data, "tables"):
        return None
    return describe(data)


def _rejected(result) -> int:
    return int(sum(len(frame) for frame in result.rejects.values())) if result.rejects else 0


def train_run(
    data,
    *,
    as_of=None,
    horizon_days: int = 365,
    market_topics=(),
    experiment: str = "customer-value",
    model_name: str = "customer-value",
    promote: str = "auto",
    config: TrainConfig | None = None,
    progress: bool = True,
) -> TrainSummary:
    """train() without the printed summary: returns the TrainSummary."""
    import mlflow

    from training import tracking

    started = time.perf_counter()
    if promote not in tracking.PROMOTE_MODES:
        raise ValueError(f"promote must be one of {tracking.PROMOTE_MODES}, got {promote!r}")
    config = resolve_config(config, horizon_days, market_topics)
    steps = Steps(enabled=progress)
    with steps.step("Loading source"):
        tables, fingerprint, rejected = load_tables(
            data, config, until=None if as_of is None else as_timestamp(as_of))
    as_of = default_as_of(tables) if as_of is None else as_timestamp(as_of)

    tracking.quiet_mlflow_warnings()
    uri = tracking.tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment_id = tracking.experiment_id(experiment, uri)

    with tracking.launcher_run() as launcher, mlflow.start_run(
        experiment_id=experiment_id, run_name=f"train as_of {as_of.date()}",
        tags={"mlflow.parentRunId": launcher} if launcher else None,
    ) as run:
        mlflow.set_tags(
            {
                "git_commit": tracking.git_commit(),
                "git_dirty": tracking.git_dirty(),
                "input_fingerprint": tracking.fingerprint_hash(fingerprint),
                "as_of": str(as_of.date()),
                "horizon_days": str(config.horizon_days),
                "test_cutoff": str((as_of - pd.Timedelta(days=config.horizon_days)).date()),
                "objective": config.model.objective,
                "rejected_rows": str(rejected),
            }
        )
        mlflow.log_params(config.flat())
        ev = evaluate_pipeline(tables, as_of, config, steps=steps)

        with steps.step("Logging run, model and registry"):
            summary = log_evaluation(
                ev, run.info.run_id, data, fingerprint, experiment, model_name, promote, uri
            )
    return replace(summary, seconds=time.perf_counter() - started)


def log_evaluation(
    ev: Evaluation,
    run_id: str,
    data,
    fingerprint: dict,
    experiment: str,
    model_name: str,
    promote: str,
    uri: str,
) -> TrainSummary:
    """Log an Evaluation to the ACTIVE MLflow run and register its refit model (any training engine).

    Tags, datasets, metrics, the ablation child run, artifacts, report inputs, both models, the
    registered version with alias ``challenger``, and the promotion decision. ``seconds`` of the
    returned summary is 0: the caller knows when its run started.
    """
    import mlflow

    from training import tracking

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    config = ev.config
    mlflow.set_tags(
        {
            "feature_manifest_hash": ev.refit_manifest.manifest_hash,
            "evaluation_manifest_hash": ev.manifest.manifest_hash,
            "baseline_bgnbd_status": ev.bgnbd_status,
            "windows": json.dumps(ev.plan.describe()),
        }
    )
    _log_inputs(ev, describe_source(data))
    metrics = dict(ev.metrics)
    metrics.update({f"baseline_bgnbd_param_{k}": v for k, v in ev.bgnbd_params.items()})
    if ev.ablation is not None:
        metrics.update({f"ablation_{k}": v for k, v in ev.ablation.metrics.items()})
        _log_ablation_child(ev, config)
    _log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        _write_artifacts(Path(tmp), ev, fingerprint, metrics)
        mlflow.log_artifacts(tmp)
    # Customer-level test-window predictions and currency SHAP for the stakeholder report.
    log_report_inputs(*report_frames(ev, log_contributions=ev.shap_contributions))
    signature, example = _signature(ev)
    with _pickle_model_code_by_value():
        eval_info = mlflow.pyfunc.log_model(
            name="evaluation_model",
            python_model=ev.model,
            signature=signature,
            input_example=example,
            pip_requirements=tracking.pip_requirements(),
        )
        final_signature, final_example = _signature(ev, final=True)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ev.final_model,
            signature=final_signature,
            input_example=final_example,
            pip_requirements=tracking.pip_requirements(),
            registered_model_name=model_name,
        )
    mlflow.set_tag("evaluation_model_uri", eval_info.model_uri)
    version = str(info.registered_model_version)

    champion = _score_champion(client, model_name, ev, exclude_version=version)
    decision = tracking.decide_promotion(promote, ev.metrics["test_norm_gini"], champion)
    client.set_registered_model_alias(model_name, tracking.CHALLENGER, version)
    if decision.promote:
        client.set_registered_model_alias(model_name, tracking.CHAMPION, version)
    for key, value in (
        ("test_norm_gini", f"{ev.metrics['test_norm_gini']:.6f}"),
        ("as_of", str(ev.plan.as_of.date())),
        ("objective", config.model.objective),
    ):
        client.set_model_version_tag(model_name, version, key, value)
    mlflow.set_tags(
        {
            "model_name": model_name,
            "model_version": version,
            "promotion_mode": promote,
            "promotion_decision": decision.decision,
            "promotion_reason": decision.reason,
            "champion_before": decision.champion_version or "none",
        }
    )
    if decision.champion_norm_gini is not None and np.isfinite(decision.champion_norm_gini):
        metrics["champion_test_norm_gini"] = decision.champion_norm_gini
        _log_metrics({"champion_test_norm_gini": decision.champion_norm_gini})

    aliases = [tracking.CHALLENGER] + ([tracking.CHAMPION] if decision.promote else [])
    return TrainSummary(
        run_id=run_id,
        experiment=experiment,
        tracking_uri=uri,
        model_name=model_name,
        model_version=version,
        aliases=aliases,
        promotion=decision.decision,
        promotion_reason=decision.reason,
        windows=ev.plan.describe(),
        rows=ev.rows,
        metrics=metrics,
        bgnbd_status=ev.bgnbd_status,
        ui_command=tracking.ui_command(uri),
        seconds=0.0,
    )


def _log_metrics(values: dict) -> None:
    """Log the finite values; a NaN metric (e.g. Spearman of a constant prediction) is left out."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)})


def comparison(metrics: dict) -> dict[str, dict[str, float | None]]:
    """metric -> {model, last_h, bgnbd, without_social} on the test window (None where absent)."""
    return {
        name: {
            "model": metrics.get(f"test_{name}"),
            "last_h": metrics.get(f"baseline_last_h_test_{name}"),
            "bgnbd": metrics.get(f"baseline_bgnbd_test_{name}"),
            "without_social": metrics.get(f"ablation_test_{name}"),
        }
        for name in METRIC_NAMES
    }


class _pickle_model_code_by_value:
    """Pickle training.model by value inside the logged pyfunc, so loading it needs no clv package."""

    def __enter__(self):
        import cloudpickle

        import training.model as module

        self._module = module
        cloudpickle.register_pickle_by_value(module)
        return self

    def __exit__(self, *exc):
        import cloudpickle

        cloudpickle.unregister_pickle_by_value(self._module)
        return False


def _signature(ev: Evaluation, *, final: bool = False):
    from mlflow.models import infer_signature

    model = ev.final_model if final else ev.model
    example = model.encoder.model_input(ev.test_features.head(200))
    prediction = model.predict_value(example)
    return infer_signature(example, prediction), example.head(5)


def _log_inputs(ev: Evaluation, source: str | None) -> None:
    """Training windows (a seeded sample, digest of the whole) and the test window as MLflow datasets."""
    import mlflow

    encoder = ev.model.encoder
    test = encoder.model_input(ev.test_features).assign(label=ev.test_label)
    datasets = []
    if ev.train_sample is not None:
        sample = encoder.model_input(ev.train_sample).assign(
            cutoff=ev.train_sample["cutoff"], label=ev.train_sample["label"]
        )
        datasets.append((sample, "training_windows", ev.train_digest, "training"))
    datasets.append(
        (test, f"test_window_{ev.plan.test_cutoff.date()}", frame_digest(test), "testing")
    )
    for frame, name, digest, context in datasets:
        kwargs = {"name": name, "targets": "label", "digest": digest}
        try:
            dataset = mlflow.data.from_pandas(frame.reset_index(), source=source, **kwargs)
        except Exception:  # noqa: BLE001 - a source MLflow cannot describe is recorded without it
            dataset = mlflow.data.from_pandas(frame.reset_index(), **kwargs)
        mlflow.log_input(dataset, context=context)


def _log_ablation_child(ev: Evaluation, config: TrainConfig) -> None:
    import mlflow

    ab = ev.ablation
    parent = mlflow.active_run().info.experiment_id
    with mlflow.start_run(run_name="without social families", nested=True, experiment_id=parent):
        mlflow.log_params(config.flat())
        mlflow.set_tags(
            {
                "ablation": "without " + ", ".join(SOCIAL_FAMILIES),
                "feature_manifest_hash": ab.manifest.manifest_hash,
                "test_cutoff": str(ev.plan.test_cutoff.date()),
            }
        )
        values = dict(ab.metrics)
        values.update({f"rounds_{k}": float(v) for k, v in ab.rounds.items()})
        mlflow.log_metrics({k: float(v) for k, v in values.items() if np.isfinite(v)})


def _write_artifacts(folder: Path, ev: Evaluation, fingerprint: dict, metrics: dict) -> None:
    (folder / "feature_manifest.json").write_text(ev.refit_manifest.to_json())
    (folder / "evaluation_feature_manifest.json").write_text(ev.manifest.to_json())
    (folder / "input_fingerprint.json").write_text(
        json.dumps(fingerprint, indent=2, sort_keys=True, default=str)
    )
    ev.importance.to_csv(folder / "feature_importance.csv", index=False)
    ev.decile_table.to_csv(folder / "deciles.csv", index=False)
    decile_chart(
        ev.decile_table,
        folder / "deciles.png",
        title=f"Test window {ev.plan.test_cutoff.date()} + {ev.plan.horizon_days} days: predicted vs realised",
    )
    _importance_chart(ev.importance, folder / "feature_importance.png")
    lifts = {k: v for k, v in metrics.items() if k.startswith("social_lift")}
    shares = {k: v for k, v in metrics.items() if k.startswith("shap_share_")}
    summary = {
        "windows": ev.plan.describe(),
        "rows": ev.rows,
        "test_metrics": comparison(metrics),
        "social_lift": lifts,
        "shap_shares": shares,
        "bgnbd_status": ev.bgnbd_status,
        "rounds": ev.rounds,
    }
    (folder / "metrics_vs_baselines.json").write_text(json.dumps(_finite(summary), indent=2))


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _importance_chart(importance: pd.DataFrame, path: Path, top: int = 20) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = importance.head(top).iloc[::-1]
    families = importance.groupby("family")["share"].sum().sort_values()
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, 0.28 * len(head) + 1.8), gridspec_kw={"width_ratios": [3, 2]}
    )
    left.barh(head["feature"], head["mean_abs_shap"], color="#4C72B0")
    left.set_xlabel("mean |SHAP| (log scale of predicted value)")
    left.set_title(f"Top {len(head)} features")
    right.barh(families.index, families.to_numpy(), color="#55A868")
    right.set_xlabel("share of total mean |SHAP|")
    right.set_title("Families")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _score_champion(client, model_name: str, ev: Evaluation, *, exclude_version: str):
    """The champion's out-of-time model re-scored on this run's test window (or why it could not be)."""
    import mlflow

    from training import tracking

    current = tracking.current_champion(client, model_name)
    if current is None or str(current.version) == exclude_version:
        return None
    version = str(current.version)
    run = client.get_run(current.run_id) if current.run_id else None
    uri = run.data.tags.get("evaluation_model_uri") if run else None
    notes = []
    labels_end = run.data.tags.get("test_cutoff") if run else None
    if uri is None:
        # Only the refit model exists: its labels reach the champion's as_of.
        uri = f"models:/{model_name}/{version}"
        labels_end = run.data.tags.get("as_of") if run else None
        notes.append("champion has no out-of-time model; its refit model is compared")
    if labels_end and pd.Timestamp(labels_end) > ev.plan.test_cutoff:
        notes.append(
            f"the champion's training labels reach {labels_end}, past this test cutoff "
            f"{ev.plan.test_cutoff.date()}: the comparison favours the champion"
        )
    note = "; ".join(notes)
    try:
        loaded = mlflow.pyfunc.load_model(uri).unwrap_python_model()
        stored = loaded.manifest_json
        if stored is None:
            return tracking.ChampionScore(version, None, "champion has no feature manifest")
        check_compatible(FeatureManifest.from_json(stored), ev.manifest)
    except FeatureSkewError as exc:
        return tracking.ChampionScore(version, None, f"incompatible features: {exc}"[:400])
    except Exception as exc:  # noqa: BLE001 - an unloadable champion must not block a new model
        return tracking.ChampionScore(
            version, None, f"could not load: {type(exc).__name__}: {exc}"[:400]
        )
    predicted = loaded.predict_value(ev.test_features)
    return tracking.ChampionScore(
        version, norm_gini(ev.test_label.to_numpy(), predicted.to_numpy()), note
    )


def print_summary(summary: TrainSummary, console=None) -> None:
    """The end-of-run summary: windows, rows, metrics vs baselines, run, version, aliases, UI command."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    w = summary.windows
    console.print(
        f"[bold]Customer-value training[/bold]  as_of {w['as_of']}  test cutoff {w['test_cutoff']}"
    )
    console.print(
        f"  training windows {', '.join(w['train_cutoffs'])}; early stopping on "
        f"{', '.join(w['validation_cutoffs'])}; refit windows {', '.join(w['refit_cutoffs'])}"
    )
    console.print("  rows: " + ", ".join(f"{k} {v:,}" for k, v in summary.rows.items()))
    table = Table(title="Test window: model vs baselines")
    for column in ("metric", "model", "last H days", "BG/NBD", "without social"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    fmt = lambda v: "-" if v is None or not np.isfinite(v) else f"{v:,.3f}"
    for name, row in summary.comparison().items():
        table.add_row(
            name,
            fmt(row["model"]),
            fmt(row["last_h"]),
            fmt(row["bgnbd"]),
            fmt(row["without_social"]),
        )
    console.print(table)
    m = summary.metrics
    if "social_lift_norm_gini" in m:
        lift = lambda v: "-" if v is None or not np.isfinite(v) else f"{v:+.4f}"
        console.print(
            f"  social lift (norm gini): {lift(m['social_lift_norm_gini'])} "
            f"[90% {lift(m['social_lift_norm_gini_lo'])}, {lift(m['social_lift_norm_gini_hi'])}]; "
            f"tenure < 1 year: {lift(m['social_lift_norm_gini_new'])} "
            f"[{lift(m['social_lift_norm_gini_new_lo'])}, {lift(m['social_lift_norm_gini_new_hi'])}]"
        )
    shares = {k.removeprefix("shap_share_"): v for k, v in m.items() if k.startswith("shap_share_")}
    console.print("  SHAP share: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    if not summary.bgnbd_status.startswith("ok"):
        console.print(f"  [yellow]BG/NBD baseline {summary.bgnbd_status}[/yellow]")
    console.print(
        f"  run {summary.run_id}  model {summary.model_name} v{summary.model_version} "
        f"aliases {', '.join(summary.aliases)}"
    )
    console.print(f"  promotion: {summary.promotion} ({summary.promotion_reason})")
    console.print(
        f"  open the MLflow UI: [bold]{summary.ui_command}[/bold]  ({summary.seconds:.0f} s)"
    )


__all__ = [
    "Evaluation",
    "TrainSummary",
    "WindowPlan",
    "default_as_of",
    "evaluate_pipeline",
    "log_evaluation",
    "plan_windows",
    "print_summary",
    "train",
    "train_run",
]
