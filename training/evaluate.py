"""Out-of-time evaluation: metrics of model and baselines on one test window, paired bootstrap, deciles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.metrics import decile_table, norm_gini_weighted, value_metrics


def evaluate_predictions(
    actual: pd.Series, model: pd.Series, baselines: dict[str, pd.Series]
) -> dict[str, float]:
    """``test_<metric>`` for the model and ``baseline_<name>_test_<metric>`` for each baseline, aligned on customer_id."""
    metrics = value_metrics(
        actual.to_numpy(), model.reindex(actual.index).to_numpy(), prefix="test_"
    )
    for name, prediction in baselines.items():
        aligned = prediction.reindex(actual.index).to_numpy()
        metrics.update(value_metrics(actual.to_numpy(), aligned, prefix=f"baseline_{name}_test_"))
    return metrics


@dataclass(frozen=True)
class Lift:
    """Difference of normalised Gini (a - b) with its paired-bootstrap interval."""

    estimate: float
    lo: float
    hi: float
    customers: int


def paired_bootstrap_lift(
    actual,
    pred_a,
    pred_b,
    *,
    resamples: int = 200,
    interval: float = 0.90,
    seed: int = 0,
    chunk: int = 25,
) -> Lift:
    """Normalised Gini of ``pred_a`` minus that of ``pred_b``, with a percentile bootstrap interval.

    Customers are resampled with replacement (multinomial counts); each resample is applied to both
    predictions (paired), so the interval reflects the difference, not the two models' separate noise.
    Vectorised: resamples are weight vectors, evaluated ``chunk`` at a time. Seeded.
    """
    return refit_bootstrap_lift(actual, [pred_a], [pred_b], resamples=resamples, interval=interval,
                                seed=seed, chunk=chunk)


def refit_bootstrap_lift(actual, preds_a, preds_b, *, resamples: int = 200, interval: float = 0.90,
                         seed: int = 0, chunk: int = 25) -> Lift:
    """The lift of refit pairs (``preds_a[k]`` against ``preds_b[k]``, e.g. the same model with and
    without some features fitted with seed k): the mean of the pairs' differences in normalised Gini,
    with a percentile interval over every (customer resample, pair) difference.

    Each resample is applied to every pair, so the interval holds both the customers' sampling noise
    and the spread between refits: refitting noise alone cannot give an interval that excludes zero.
    """
    actual = np.asarray(actual, dtype=np.float64)
    preds_a = [np.asarray(p, dtype=np.float64) for p in preds_a]
    preds_b = [np.asarray(p, dtype=np.float64) for p in preds_b]
    n = len(actual)
    ones = np.ones(n)
    estimate = float(np.mean([norm_gini_weighted(actual, a, ones) - norm_gini_weighted(actual, b, ones)
                              for a, b in zip(preds_a, preds_b)]))
    if n < 2 or resamples < 1:
        return Lift(estimate, np.nan, np.nan, n)
    rng = np.random.default_rng(seed)
    diffs = []
    uniform = np.full(n, 1.0 / n)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        weights = rng.multinomial(n, uniform, size=size)
        for a, b in zip(preds_a, preds_b):
            diffs.append(norm_gini_weighted(actual, a, weights) - norm_gini_weighted(actual, b, weights))
    diffs = np.concatenate(diffs)
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) == 0:
        return Lift(estimate, np.nan, np.nan, n)
    tail = (1.0 - interval) / 2.0 * 100.0
    lo, hi = np.percentile(diffs, [tail, 100.0 - tail])
    return Lift(estimate, float(lo), float(hi), n)


def deciles(actual: pd.Series, predictions: dict[str, pd.Series]) -> pd.DataFrame:
    """Decile table (see training.metrics.decile_table) of each named prediction, aligned on customer_id."""
    aligned = {name: p.reindex(actual.index).to_numpy() for name, p in predictions.items()}
    return decile_table(actual.to_numpy(), aligned)
