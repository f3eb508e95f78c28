"""The one training pipeline: windows, fit, out-of-time test against baselines, ablation, attribution, refit.

The engine is a parameter: a ``WindowSource`` builds the feature windows and hands out what the
baselines read, a ``Fitter`` fits the boosters on windows (training.pandas_engine: in memory with
LightGBM; training.dask_engine: on a cluster with DaskLGBMRegressor). Every other step is written
once here, so either engine evaluates, ablates and attributes the same way, and training.train logs
and registers the result the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import pandas as pd

from features.build import FAMILY_NAMES, select_families
from features.catalog import SOCIAL_FAMILIES
from features.config import FeatureConfig
from features.manifest import FeatureManifest
from training.ablation import Ablation, ablate, lift_metrics
from training.attribution import family_shares, feature_importance, shap_sample
from training.baselines import bgnbd_value, last_h_revenue
from training.config import TrainConfig
from training.evaluate import deciles, evaluate_predictions
from training.model import CustomerValueModel
from training.plan import WindowPlan, plan_windows
from training.progress import Steps

TRAIN_SAMPLE_ROWS = 10_000  # rows of the training windows logged to MLflow as a dataset sample


class Windows(Protocol):
    """Stacked feature windows of some cutoffs: the features, ``cutoff`` and ``label``."""

    def cutoffs(self) -> list[pd.Timestamp]: ...  # present, oldest first
    def select(self, cutoffs) -> Windows: ...  # the windows of these cutoffs
    def without(self, columns: list[str]) -> Windows: ...  # the same rows without these features
    def manifest(self, config: FeatureConfig, families) -> FeatureManifest: ...
    def rows(self) -> int: ...
    def frame(self) -> pd.DataFrame: ...  # all rows in one pandas frame (the test window)
    def sample(self, n: int, seed: int) -> pd.DataFrame: ...  # a seeded sample of at most n rows
    def digest(self) -> str: ...  # content hash, the same for the same windows on any engine


class WindowSource(Protocol):
    """Where the windows are built, and the raw rows the baselines need."""

    def windows(self, eval_cutoff: pd.Timestamp, config: TrainConfig, steps: Steps) -> Windows: ...
    def baseline_transactions(self, cutoff: pd.Timestamp, horizon_days: int) -> pd.DataFrame: ...
    def customers(self, ids: pd.Index) -> pd.DataFrame: ...  # customer_id, signup_date, in ids order


class Fitter(Protocol):
    """Fits a CustomerValueModel on windows: early-stopped on validation windows, or fixed rounds."""

    def fit(self, train: Windows, validation: Windows, manifest: FeatureManifest,
            config: TrainConfig) -> CustomerValueModel: ...
    def refit(self, windows: Windows, manifest: FeatureManifest, config: TrainConfig,
              rounds: dict[str, int]) -> CustomerValueModel: ...


@dataclass
class Loaded:
    """A source loaded by an engine for a training run (training.train.train_run)."""

    source: WindowSource
    fitter: Fitter
    latest_transaction: pd.Timestamp | None  # of the rows the run may see
    fingerprint: dict  # what was read, for the run's input_fingerprint
    rejected: int  # rows the contract rejected
    described: str | None  # where the data came from, safe to log (None for in-memory tables)
    tags: dict[str, str] = field(default_factory=dict)  # the engine's own facts (workers...)


@dataclass(frozen=True)
class BuiltWindows:
    """The windows of one plan: evaluation (labels end by the test cutoff) and refit (by as_of)."""

    evaluation: Windows
    refit: Windows


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
    train_sample: pd.DataFrame | None = None  # seeded sample of the training windows (MLflow dataset)
    train_digest: str = ""  # hash of the full training windows (features, cutoff, label)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rounds(self) -> dict[str, int]:
        return dict(self.model.rounds)


def build_windows(source: WindowSource, plan: WindowPlan, config: TrainConfig, *,
                  steps: Steps | None = None) -> BuiltWindows:
    """Feature windows for evaluation and refit, checked so that no label passes its end."""
    steps = steps or Steps(enabled=False)
    with steps.step("Training windows (labels end by the test cutoff)"):
        evaluation = source.windows(plan.test_cutoff, config, steps)
    _check_no_label_past(evaluation, plan.test_cutoff, plan.horizon_days)
    with steps.step("Refit windows (labels end by as_of; the latest is the test window)"):
        refit = source.windows(plan.as_of, config, steps)
    _check_no_label_past(refit, plan.as_of, plan.horizon_days)
    return BuiltWindows(evaluation, refit)


def evaluate(source: WindowSource, fitter: Fitter, as_of: pd.Timestamp, config: TrainConfig, *,
             steps: Steps | None = None, windows: BuiltWindows | None = None) -> Evaluation:
    """Build windows, fit, evaluate out of time against baselines, ablate social, attribute, refit.

    ``windows`` (from build_windows with the same as_of and config) skips rebuilding features, e.g.
    to compare model settings on identical data.
    """
    steps = steps or Steps(enabled=False)
    fc = config.features
    horizon = config.horizon_days
    plan = plan_windows(as_of, config)
    if windows is None:
        windows = build_windows(source, plan, config, steps=steps)
    if not set(windows.evaluation.cutoffs()) <= set(plan.train_cutoffs + plan.validation_cutoffs) or not set(
        windows.refit.cutoffs()
    ) <= set(plan.refit_cutoffs):
        raise ValueError("windows were built for other cutoffs than this as_of and config")

    test = windows.refit.select([plan.test_cutoff]).frame()
    if len(test) == 0:
        raise ValueError(f"no customers signed up before the test cutoff {plan.test_cutoff.date()}")
    present = windows.evaluation.cutoffs()
    validation_cutoffs = [c for c in present if c in set(plan.validation_cutoffs)]
    if not validation_cutoffs or len(present) <= len(validation_cutoffs):
        raise ValueError(
            f"need at least {config.validation_windows + 1} training windows with history before "
            f"{plan.test_cutoff.date()}, found {len(present)}; lower n_windows/step_days or add history"
        )
    train_cutoffs = [c for c in present if c not in set(validation_cutoffs)]
    train, validation = windows.evaluation.select(train_cutoffs), windows.evaluation.select(validation_cutoffs)
    families = select_families()
    manifest = windows.evaluation.manifest(fc, families)
    refit_manifest = windows.refit.manifest(fc, families)
    rows = {"train": train.rows(), "validation": validation.rows(), "test": len(test),
            "refit": windows.refit.rows()}

    test_label = test["label"].astype(np.float64)
    with steps.step(f"Fitting {config.model.objective} model ({rows['train']:,} rows, "
                    f"{rows['validation']:,} for early stopping)"):
        model = fitter.fit(train, validation, manifest, config)
    steps.note(f"boosting rounds: {model.rounds}")
    predicted = model.predict_value(test)

    with steps.step("Baselines on the test window (last H days, BG/NBD + Gamma-Gamma)"):
        transactions = source.baseline_transactions(plan.test_cutoff, horizon)
        customers = source.customers(test.index)
        last_h = last_h_revenue(transactions, test.index, plan.test_cutoff, horizon)
        bg = bgnbd_value(transactions, customers, plan.test_cutoff, horizon,
                         penalizer=fc.btyd_penalizer)
        del transactions
    baselines = {"last_h": last_h}
    if bg.prediction is not None:
        baselines["bgnbd"] = bg.prediction
    else:
        steps.note(f"BG/NBD baseline {bg.status}")
    metrics = evaluate_predictions(test_label, predicted, baselines)
    table = deciles(test_label, {"model": predicted, **baselines})

    ablation = None
    if config.social_ablation and any(manifest.families[f] in SOCIAL_FAMILIES for f in manifest.features):
        with steps.step("Social ablation (same pipeline without the social families)"):
            signup = customers.set_index("customer_id")["signup_date"]
            ablation = ablate(fitter, windows.evaluation, train_cutoffs, validation_cutoffs, test,
                              predicted, signup, plan, config, families, manifest)
        metrics.update(lift_metrics(ablation))

    with steps.step(f"Attribution (exact TreeSHAP on at most {config.shap_sample:,} test customers)"):
        _, contributions, importance = attribute(model, test, manifest, config)
    metrics.update(family_shares(importance, FAMILY_NAMES))

    with steps.step(f"Refit on windows ending by as_of ({rows['refit']:,} rows, same rounds)"):
        final_model = fitter.refit(windows.refit, refit_manifest, config, model.rounds)

    for name, value in rows.items():
        metrics[f"rows_{name}"] = float(value)
    for part, value in model.rounds.items():
        metrics[f"rounds_{part}"] = float(value)
    return Evaluation(
        plan=replace(plan, validation_cutoffs=tuple(validation_cutoffs), train_cutoffs=tuple(train_cutoffs),
                     refit_cutoffs=tuple(windows.refit.cutoffs())),
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
        train_sample=windows.evaluation.sample(TRAIN_SAMPLE_ROWS, config.seed),
        train_digest=windows.evaluation.digest(),
        seconds=dict(steps.seconds),
    )


def attribute(model: CustomerValueModel, test: pd.DataFrame, manifest: FeatureManifest, config: TrainConfig):
    """(sample, log-scale SHAP contributions, feature importance) on a seeded sample of the test window."""
    sample = shap_sample(test, config.shap_sample, seed=config.seed)
    contributions = model.log_contributions(sample)
    importance = feature_importance(contributions, model.encoder.encode(sample), dict(manifest.families),
                                    categorical=model.encoder.categorical)
    return sample, contributions, importance


def _check_no_label_past(windows: Windows, end: pd.Timestamp, horizon_days: int) -> None:
    latest = max(windows.cutoffs()) + pd.Timedelta(days=horizon_days)
    if latest > end:
        raise AssertionError(f"a label window ends on {latest.date()}, after {end.date()}")


def frame_digest(frame: pd.DataFrame) -> str:
    """Short content hash of a frame (values, index and column names), independent of memory layout."""
    digest = hashlib.sha256()
    digest.update("\0".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()[:16]
