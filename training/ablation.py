"""The social ablation: the same pipeline without the social families, and what they add to ranking.

The lift is the paired-bootstrap difference of normalised Gini on the test window, overall and for
customers under a year of tenure (for whom history says least, so social data could matter most).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.catalog import SOCIAL_FAMILIES
from features.manifest import FeatureManifest
from training.config import TrainConfig
from training.evaluate import Lift, paired_bootstrap_lift
from training.metrics import value_metrics
from training.model import CustomerValueModel
from training.plan import WindowPlan

NEW_CUSTOMER_TENURE_DAYS = 365


@dataclass
class Ablation:
    """The same pipeline without the social families (SOCIAL_FAMILIES)."""

    model: CustomerValueModel
    manifest: FeatureManifest
    metrics: dict[str, float]
    lift: Lift
    lift_new: Lift
    rounds: dict[str, int]


def ablate(fitter, evaluation, train_cutoffs, validation_cutoffs, test: pd.DataFrame,
           predicted: pd.Series, signup: pd.Series, plan: WindowPlan, config: TrainConfig, families,
           manifest_full: FeatureManifest) -> Ablation:
    """Fit on the evaluation windows without the social features; compare on the test window.

    ``fitter`` and ``evaluation`` are a training.pipeline Fitter and Windows; ``signup`` maps the
    test customers to their signup dates.
    """
    kept = tuple(f for f in families if f.name not in SOCIAL_FAMILIES)
    social = [f for f in manifest_full.features if manifest_full.families[f] in SOCIAL_FAMILIES]
    without = evaluation.without(social)
    manifest = without.manifest(config.features, kept)
    model = fitter.fit(without.select(train_cutoffs), without.select(validation_cutoffs), manifest, config)
    predicted_ns = model.predict_value(test.drop(columns=social))
    actual = test["label"].to_numpy(dtype="float64")
    metrics = value_metrics(actual, predicted_ns.to_numpy(), prefix="test_")
    lift = paired_bootstrap_lift(actual, predicted.to_numpy(), predicted_ns.to_numpy(),
                                 resamples=config.bootstrap_resamples, interval=config.interval,
                                 seed=config.seed)
    new = ((plan.test_cutoff - signup.reindex(test.index)).dt.days < NEW_CUSTOMER_TENURE_DAYS).to_numpy()
    lift_new = paired_bootstrap_lift(actual[new], predicted.to_numpy()[new], predicted_ns.to_numpy()[new],
                                     resamples=config.bootstrap_resamples, interval=config.interval,
                                     seed=config.seed + 1)
    return Ablation(model, manifest, metrics, lift, lift_new, dict(model.rounds))


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
