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


def social_columns(manifest: FeatureManifest) -> list[str]:
    """The features of ``manifest`` that come from a social family."""
    return [f for f in manifest.features if manifest.families[f] in SOCIAL_FAMILIES]


def ablate(fitter, evaluation, train_cutoffs, validation_cutoffs, test: pd.DataFrame,
           model: CustomerValueModel, signup: pd.Series, plan: WindowPlan, config: TrainConfig, families,
           manifest_full: FeatureManifest) -> Ablation:
    """Fit with and without the social features ``config.social_refits`` times, decide on the
    validation window, measure on the test window.

    ``fitter`` and ``evaluation`` are a training.pipeline Fitter and Windows; ``model`` is the run's
    model with every family (seed ``config.seed``); ``signup`` maps the test customers to their
    signup dates.
    """
    kept = tuple(f for f in families if f.name not in SOCIAL_FAMILIES)
    social = social_columns(manifest_full)
    without = evaluation.without(social)
    manifest = without.manifest(config.features, kept)
    seeds = [config.seed + k for k in range(config.social_refits)]

    def fit_pairs(train_at, validate_at, first=None):
        train, validation = evaluation.select(train_at), evaluation.select(validate_at)
        with_models = ([first] if first is not None else []) + [
            fitter.fit(train, validation, manifest_full, replace(config, seed=s)) for s in seeds[0 if first is None else 1:]]
        without_models = [fitter.fit(without.select(train_at), without.select(validate_at), manifest,
                                     replace(config, seed=s)) for s in seeds]
        return with_models, without_models, validation.frame()

    # Fold 0 validates on the validation window with the run's training windows; fold j on the j-th
    # latest training window with the windows before it (a rolling origin), for more evidence.
    folds = [fit_pairs(train_cutoffs, validation_cutoffs, model)]
    for j in range(1, config.social_folds):
        if len(train_cutoffs) - j >= 1:
            folds.append(fit_pairs(train_cutoffs[:-j], [train_cutoffs[-j]]))
    with_models, without_models, _ = folds[0]

    def lift(pairs, frames, seed: int) -> Lift:
        actual = pd.concat([f["label"] for f in frames]).to_numpy(dtype="float64")
        return refit_bootstrap_lift(
            actual,
            [pd.concat([m.predict_value(f) for m, f in zip(ms, frames)]).to_numpy() for ms in zip(*pairs[0])],
            [pd.concat([m.predict_value(f.drop(columns=social)) for m, f in zip(ms, frames)]).to_numpy()
             for ms in zip(*pairs[1])],
            resamples=config.bootstrap_resamples, interval=config.interval, seed=seed)

    validation_lift = lift(([f[0] for f in folds], [f[1] for f in folds]), [f[2] for f in folds], config.seed + 2)
    included = bool(validation_lift.lo > 0)
    share = f"{config.interval:.0%}"
    reason = (f"social data {'kept' if included else 'left out'}: on {len(folds)} validation window(s) it changes "
              f"normalised Gini by {validation_lift.estimate:+.4f} ({share} interval "
              f"{validation_lift.lo:+.4f} to {validation_lift.hi:+.4f} over customers and "
              f"{len(seeds)} refits), {'above' if included else 'not above'} zero")
    new = ((plan.test_cutoff - signup.reindex(test.index)).dt.days < NEW_CUSTOMER_TENURE_DAYS).to_numpy()
    predicted_ns = without_models[0].predict_value(test.drop(columns=social))
    metrics = value_metrics(test["label"].to_numpy(dtype="float64"), predicted_ns.to_numpy(), prefix="test_")
    test_pairs = ([with_models], [without_models])
    return Ablation(without_models[0], manifest, social, metrics, validation_lift,
                    lift(test_pairs, [test], config.seed), lift(test_pairs, [test.loc[new]], config.seed + 1),
                    dict(without_models[0].rounds), included, reason, model)


def lift_metrics(ablation: Ablation) -> dict[str, float]:
    """The social lift in normalised Gini with its interval: on the validation window (the decision)
    and on the test window, overall and for new customers; social_included as 1/0."""
    out = {"social_included": float(ablation.included)}
    for name, lift in (("social_validation_lift_norm_gini", ablation.validation_lift),
                       ("social_lift_norm_gini", ablation.lift), ("social_lift_norm_gini_new", ablation.lift_new)):
        out.update({name: lift.estimate, f"{name}_lo": lift.lo, f"{name}_hi": lift.hi})
    return out
