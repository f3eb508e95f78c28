"""Whether social data earns its place: the model with and without the social families, refit.

The social families (features.catalog.SOCIAL_FAMILIES) stay in the served model only on evidence
from **validation** windows: the model is fitted with and without them ``social_refits`` times
(seeds seed, seed + 1, ...) on each of ``social_folds`` rolling folds (validate on the validation
window after the training windows; then on the latest training window after those before it, ...),
and the lift in normalised Gini (with - without) over the folds' validation customers gets an
interval over resampled customers x refit pairs (training.evaluate.refit_bootstrap_lift). Social data
is kept only when that interval lies above zero: it must beat both the customers' sampling noise
and the refits' own spread. Nothing about the test window feeds the choice. The test-window lift,
overall and for customers under a year of tenure, is then reported the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from features.catalog import SOCIAL_FAMILIES
from features.manifest import FeatureManifest
from training.config import TrainConfig
from training.evaluate import Lift, refit_bootstrap_lift
from training.metrics import value_metrics
from training.model import CustomerValueModel
from training.plan import WindowPlan

NEW_CUSTOMER_TENURE_DAYS = 365


@dataclass
class Ablation:
    """The evidence about the social families: the models without them, the lifts, the decision."""

    model: CustomerValueModel  # without social, fitted with the run's seed
    manifest: FeatureManifest  # of the model without social
    social: list[str]  # the social feature columns
    metrics: dict[str, float]  # test metrics of the model without social
    validation_lift: Lift  # what decided
    lift: Lift  # test window, refits pooled
    lift_new: Lift  # test window, customers under a year of tenure
    rounds: dict[str, int]
    included: bool
    reason: str
    with_social: CustomerValueModel  # the run's seed, with social (served when included)


@dataclass
class _Fold:
    """One validation fold: the models with and without social data (one per seed) and its rows."""

    with_social: list[CustomerValueModel]
    without_social: list[CustomerValueModel]
    frame: pd.DataFrame


def social_columns(manifest: FeatureManifest) -> list[str]:
    """The features of ``manifest`` that come from a social family."""
    return [f for f in manifest.features if manifest.families[f] in SOCIAL_FAMILIES]


def ablate(fitter, evaluation, train_cutoffs, validation_cutoffs, test: pd.DataFrame,
           model: CustomerValueModel, signup: pd.Series, plan: WindowPlan, config: TrainConfig, families,
           manifest_full: FeatureManifest) -> Ablation:
    """Fit with and without the social features ``config.social_refits`` times on
    ``config.social_folds`` folds, decide on their validation windows, measure on the test window.

    ``fitter`` and ``evaluation`` are a training.pipeline Fitter and Windows; ``model`` is the run's
    model with every family (seed ``config.seed``); ``signup`` maps the test customers to their
    signup dates.
    """
    kept = tuple(f for f in families if f.name not in SOCIAL_FAMILIES)
    social = social_columns(manifest_full)
    without = evaluation.without(social)
    manifest = without.manifest(config.features, kept)
    seeds = [config.seed + k for k in range(config.social_refits)]

    def fold(train_at, validate_at, first=None) -> _Fold:
        """Models with and without social data, one per seed, validated on ``validate_at``."""
        train, validation = evaluation.select(train_at), evaluation.select(validate_at)
        with_ = [first] if first is not None else []
        with_ += [fitter.fit(train, validation, manifest_full, replace(config, seed=s)) for s in seeds[len(with_):]]
        without_ = [fitter.fit(without.select(train_at), without.select(validate_at), manifest,
                               replace(config, seed=s)) for s in seeds]
        return _Fold(with_, without_, validation.frame())

    def lift(folds: list[_Fold], seed: int) -> Lift:
        """Refit-pooled lift over the folds' customers, seed k's models paired across folds."""
        def predictions(models_of_fold, drop=()):
            return [pd.concat([m.predict_value(f.frame.drop(columns=list(drop))) for m, f in zip(per_seed, folds)])
                    .to_numpy() for per_seed in zip(*models_of_fold)]
        return refit_bootstrap_lift(
            pd.concat([f.frame["label"] for f in folds]).to_numpy(dtype="float64"),
            predictions([f.with_social for f in folds]), predictions([f.without_social for f in folds], social),
            resamples=config.bootstrap_resamples, interval=config.interval, seed=seed)

    # Fold 0 validates on the validation window with the run's training windows; fold j on the j-th
    # latest training window with the windows before it (a rolling origin), for more evidence.
    folds = [fold(train_cutoffs, validation_cutoffs, model)]
    for j in range(1, config.social_folds):
        if len(train_cutoffs) - j >= 1:
            folds.append(fold(train_cutoffs[:-j], [train_cutoffs[-j]]))
    validation_lift = lift(folds, config.seed + 2)
    included = bool(validation_lift.lo > 0)
    share = f"{config.interval:.0%}"
    reason = (f"social data {'kept' if included else 'left out'}: on {len(folds)} validation window(s) it changes "
              f"normalised Gini by {validation_lift.estimate:+.4f} ({share} interval "
              f"{validation_lift.lo:+.4f} to {validation_lift.hi:+.4f} over customers and "
              f"{len(seeds)} refits), {'above' if included else 'not above'} zero")
    new = ((plan.test_cutoff - signup.reindex(test.index)).dt.days < NEW_CUSTOMER_TENURE_DAYS).to_numpy()
    first = folds[0]
    served_without = first.without_social[0]
    predicted_ns = served_without.predict_value(test.drop(columns=social))
    metrics = value_metrics(test["label"].to_numpy(dtype="float64"), predicted_ns.to_numpy(), prefix="test_")
    on_test = [_Fold(first.with_social, first.without_social, test)]
    on_new = [_Fold(first.with_social, first.without_social, test.loc[new])]
    return Ablation(served_without, manifest, social, metrics, validation_lift, lift(on_test, config.seed),
                    lift(on_new, config.seed + 1), dict(served_without.rounds), included, reason, model)


def lift_metrics(ablation: Ablation) -> dict[str, float]:
    """The social lift in normalised Gini with its interval: on the validation window (the decision)
    and on the test window, overall and for new customers; social_included as 1/0."""
    out = {"social_included": float(ablation.included)}
    for name, lift in (("social_validation_lift_norm_gini", ablation.validation_lift),
                       ("social_lift_norm_gini", ablation.lift), ("social_lift_norm_gini_new", ablation.lift_new)):
        out.update({name: lift.estimate, f"{name}_lo": lift.lo, f"{name}_hi": lift.hi})
    return out
