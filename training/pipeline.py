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
from training.ablation import Ablation, ablate, lift_metrics, social_columns
from training.attribution import family_shares, feature_importance, shap_sample
from training.baselines import bgnbd_value
from training.config import TrainConfig
from training.evaluate import deciles, evaluate_predictions
from training.intervals import calibrate_intervals, interval_coverage, interval_width_median
from training.model import BaselineValueModel, CustomerValueModel, FeatureEncoder, calibration_scale
from training.plan import WindowPlan, plan_windows
from training.progress import Steps
from training.verdict import Verdict, check_enough_data, judge

TRAIN_SAMPLE_ROWS = 10_000  # rows of the training windows logged to MLflow as a dataset sample


class Windows(Protocol):
    """Stacked feature windows of some cutoffs: the features, ``cutoff`` and ``label``."""

    def cutoffs(self) -> list[pd.Timestamp]: ...  # present, oldest first
    def select(self, cutoffs) -> Windows: ...  # the windows of these cutoffs
    def without(self, columns: list[str]) -> Windows: ...  # the same rows without these features
    def manifest(self, config: FeatureConfig, families) -> FeatureManifest: ...
    def rows(self) -> int: ...
    def positives(self) -> int: ...  # rows whose label is positive (customers who brought value)
    def frame(self) -> pd.DataFrame: ...  # all rows in one pandas frame (the test window)
    def sample(self, n: int, seed: int) -> pd.DataFrame: ...  # a seeded sample of at most n rows
    def digest(self) -> str: ...  # content hash, the same for the same windows on any engine


class WindowSource(Protocol):
    """Where the windows are built, and the raw rows the baselines need."""

    def windows(self, eval_cutoff: pd.Timestamp, n_windows: int, step_days: int, config: TrainConfig,
                steps: Steps) -> Windows: ...
    def first_transaction(self) -> pd.Timestamp | None: ...  # the earliest the run may see
    def baseline_transactions(self, cutoff: pd.Timestamp) -> pd.DataFrame: ...  # BG/NBD's purchases
    def has_social_data(self) -> bool: ...  # social profile snapshots exist
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
    columns: dict[str, list[str]] = field(default_factory=dict)  # table -> columns (empty: not known)
    attribute_columns: list[str] = field(default_factory=list)  # customers columns besides the key
    identifiers: dict[str, str] = field(default_factory=dict)  # identifier-like ones -> why (features.identifiers)


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
    verdict: Verdict | None = None  # the learned model served, or a baseline in its place
    fit_config: TrainConfig | None = None  # config as fitted (model settings scaled to the rows)
    social_included: bool = False  # the served model has social features
    social_decision: str = ""  # why (no social data, left out or kept on evidence, untested)

    @property
    def rounds(self) -> dict[str, int]:
        return dict(self.model.rounds)


def build_windows(source: WindowSource, plan: WindowPlan, config: TrainConfig, *,
                  steps: Steps | None = None) -> BuiltWindows:
    """Feature windows for evaluation and refit, checked so that no label passes its end."""
    steps = steps or Steps(enabled=False)
    with steps.step(f"Training windows ({plan.n_windows}, {plan.step_days} days apart; labels end by "
                    "the test cutoff)"):
        evaluation = source.windows(plan.test_cutoff, plan.n_windows, plan.step_days, config, steps)
    _check_no_label_past(evaluation, plan.test_cutoff, plan.horizon_days)
    with steps.step("Refit windows (labels end by as_of; the latest is the test window)"):
        refit = source.windows(plan.as_of, plan.n_windows, plan.step_days, config, steps)
    _check_no_label_past(refit, plan.as_of, plan.horizon_days)
    return BuiltWindows(evaluation, refit)


def evaluate(source: WindowSource, fitter: Fitter, as_of: pd.Timestamp, config: TrainConfig, *,
             steps: Steps | None = None, windows: BuiltWindows | None = None) -> Evaluation:
    """Plan and build windows, check the data is enough, fit, evaluate out of time against the
    baselines, serve a baseline instead of a model not worth serving, ablate social, attribute, refit.

    80% value intervals (training.intervals): the evaluation model's intervals are calibrated on the
    validation windows and their coverage measured on the test window (``test_interval_coverage``);
    the registered model's are calibrated on the evaluation model's out-of-sample predictions on the
    validation and test windows together (more rows, and the most recent): the refit model's own
    predictions there are in-sample and would give intervals too narrow (served_interval_table).

    ``windows`` (from build_windows with the same plan) skips rebuilding features, e.g. to compare
    model settings on identical data.
    """
    steps = steps or Steps(enabled=False)
    fc = config.features
    horizon = config.horizon_days
    plan = plan_windows(as_of, config, source.first_transaction())
    steps.note(f"windows: {plan.reason}")
    if windows is None:
        windows = build_windows(source, plan, config, steps=steps)
    if not set(windows.evaluation.cutoffs()) <= set(plan.train_cutoffs + plan.validation_cutoffs) or not set(
        windows.refit.cutoffs()
    ) <= set(plan.refit_cutoffs):
        raise ValueError("windows were built for other cutoffs than this as_of and config")

    test = windows.refit.select([plan.test_cutoff]).frame()
    test_label = test["label"].astype(np.float64)
    present = windows.evaluation.cutoffs()
    validation_cutoffs = [c for c in present if c in set(plan.validation_cutoffs)]
    train_cutoffs = [c for c in present if c not in set(validation_cutoffs)]
    train, validation = windows.evaluation.select(train_cutoffs), windows.evaluation.select(validation_cutoffs)
    check_enough_data(train.positives(), len(test), int((test_label > 0).sum()),
                      len(present) if validation_cutoffs else 0, config)
    families = select_families()
    evaluation = windows.evaluation
    if not source.has_social_data():  # the social columns say "no profile" for everyone: left out
        families = tuple(f for f in families if f.name not in SOCIAL_FAMILIES)
        evaluation = evaluation.without(social_columns(evaluation.manifest(fc, select_families())))
        train, validation = evaluation.select(train_cutoffs), evaluation.select(validation_cutoffs)
    manifest = evaluation.manifest(fc, families)
    refit_manifest = windows.refit.manifest(fc, select_families())
    rows = {"train": train.rows(), "validation": validation.rows(), "test": len(test),
            "refit": windows.refit.rows()}
    fit_config = replace(config, model=config.model.for_rows(rows["train"]))

    with steps.step(f"Fitting {config.model.objective} model ({rows['train']:,} rows, "
                    f"{rows['validation']:,} for early stopping)"):
        model = fitter.fit(train, validation, manifest, fit_config)
    steps.note(f"boosting rounds: {model.rounds}")
    customers = source.customers(test.index)

    ablation = None
    social = "no social data: the source has no social profiles"
    if social_columns(manifest) and not config.social_ablation:
        social = "kept untested (social_ablation is off)"
    elif social_columns(manifest):
        with steps.step(f"Social evidence ({config.social_refits} refits with and without the social "
                        "families, decided on validation windows)"):
            signup = customers.set_index("customer_id")["signup_date"]
            ablation = ablate(fitter, evaluation, train_cutoffs, validation_cutoffs, test, model,
                              signup, plan, fit_config, families, manifest)
        social = ablation.reason
        if not ablation.included:
            model, manifest = ablation.model, ablation.manifest
    steps.note(social)
    predicted = model.predict_value(test)

    with steps.step("Baselines on the test window (last H days, BG/NBD + Gamma-Gamma)"):
        bg = bgnbd_value(source.baseline_transactions(plan.test_cutoff), customers, plan.test_cutoff, horizon,
                         penalizer=fc.btyd_penalizer)
    baselines = {"last_h": test["spend_horizon"].astype(np.float64).rename("baseline_last_h")}
    if bg.prediction is not None:
        baselines["bgnbd"] = bg.prediction
    else:
        steps.note(f"BG/NBD baseline {bg.status}")
    metrics = evaluate_predictions(test_label, predicted, baselines)

    verdict = judge(model, predicted, metrics, baselines)
    learned_rounds = dict(model.rounds)
    if verdict.kind == "fallback":
        steps.note(f"the learned model is not served: {verdict.reason}")
        learned = {f"learned_{k}": v for k, v in metrics.items() if k.startswith("test_")}
        model = BaselineValueModel(verdict.baseline, FeatureEncoder.from_manifest(manifest),
                                   manifest.to_json(), dict(manifest.families),
                                   scale=calibration_scale(validation.frame(), verdict.baseline))
        predicted = model.predict_value(test)
        metrics = {**evaluate_predictions(test_label, predicted, baselines), **learned}
    table = deciles(test_label, {"model": predicted, **baselines})

    with steps.step("Value intervals (80%, calibrated on the validation windows, measured on the test window)"):
        validation_frame = validation.frame()
        calibration = (model.predict_value(validation_frame), validation_frame["label"].astype(np.float64))
        del validation_frame
        model.interval_table = interval_table(*calibration, calibrated_on="validation windows")
        lo, hi = model.value_interval(predicted)
        metrics["test_interval_coverage"] = interval_coverage(test_label, lo, hi)
        metrics["test_interval_width_median"] = interval_width_median(lo, hi)
        metrics["interval_level"] = model.interval_table["level"]

    if ablation is not None:
        metrics.update(lift_metrics(ablation))

    with steps.step(f"Attribution (exact TreeSHAP on at most {config.shap_sample:,} test customers)"):
        _, contributions, importance = attribute(model, test, manifest, config)
    metrics.update(family_shares(importance, FAMILY_NAMES))

    refit = windows.refit
    if len(social_columns(refit_manifest)) > len(social_columns(manifest)):  # social left out above
        refit = refit.without(social_columns(refit_manifest))
        refit_manifest = refit.manifest(fc, tuple(f for f in families if f.name not in SOCIAL_FAMILIES))
    if verdict.kind == "fallback":
        # Levelled on the latest window whose label ends by as_of: the test window, as the refit sees it.
        final_model = BaselineValueModel(verdict.baseline, FeatureEncoder.from_manifest(refit_manifest),
                                         refit_manifest.to_json(), dict(refit_manifest.families),
                                         scale=calibration_scale(test, verdict.baseline))
        metrics["fallback_scale"] = final_model.scale
        metrics["fallback_evaluation_scale"] = model.scale
    else:
        with steps.step(f"Refit on windows ending by as_of ({rows['refit']:,} rows, same rounds)"):
            final_model = fitter.refit(refit, refit_manifest, fit_config, model.rounds)

    final_model.interval_table = served_interval_table(model, final_model, calibration, (predicted, test_label),
                                                       metrics["test_interval_coverage"])

    for name, value in rows.items():
        metrics[f"rows_{name}"] = float(value)
    for part, value in learned_rounds.items():
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
        verdict=verdict,
        fit_config=fit_config,
        social_included=bool(social_columns(manifest)),
        social_decision=social,
    )




def interval_table(predicted: pd.Series, label: pd.Series, *, calibrated_on: str) -> dict:
    """The 80% interval table (training.intervals) calibrated on these predictions and realised values."""
    table = calibrate_intervals(predicted.to_numpy(dtype=np.float64), label.to_numpy(dtype=np.float64))
    table["calibrated_on"] = calibrated_on
    return table


def served_interval_table(model: CustomerValueModel, final_model: CustomerValueModel, validation, test,
                          coverage_on_test: float) -> dict:
    """The registered model's interval table: calibrated on the evaluation model's out-of-sample
    predictions on the validation and test windows together, (prediction, label) pairs.

    Both windows give more rows, and the test window the most recent ones. The refit model's own
    predictions on them would be in-sample (it learned from those labels), hence too narrow. A
    fallback's refit is the same baseline levelled by another scale, so its predictions are the
    evaluation model's times the ratio of the scales: the bins are put in the served model's units.
    ``coverage_on_test`` is the test-window coverage of the validation-calibrated intervals.
    """
    predicted = pd.concat([validation[0], test[0]], ignore_index=True)
    label = pd.concat([validation[1], test[1]], ignore_index=True)
    if isinstance(final_model, BaselineValueModel) and isinstance(model, BaselineValueModel):
        predicted = predicted * (final_model.scale / model.scale)
    table = interval_table(predicted, label, calibrated_on="validation and test windows (evaluation model)")
    table["coverage_on_test"] = float(coverage_on_test)
    return table


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
