"""Ranking and error metrics of predicted customer value against realised value.

Ties in the prediction are handled by averaging: customers with the same predicted value share the
mean of their realised values, which is the expectation over every order of the tied customers. So
the metrics do not depend on row order, and a baseline that predicts 0 for half of the customers is
not flattered or punished by how those customers happen to be sorted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

METRIC_NAMES = ("norm_gini", "spearman", "top10_capture", "mae", "rmse", "total_error_pct")


def _groups(sorted_key: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in an already sorted key."""
    if len(sorted_key) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1
    return np.concatenate(([0], change))


def gini_weighted(actual: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Gini of ``actual`` ordered by ``score`` (descending), for one or many weight vectors.

    ``weights`` has shape (n,) or (B, n): integer replication counts (bootstrap resamples), so the
    value equals the unweighted Gini of the data set where customer i appears weights[i] times.
    Gini = mean over positions i of (share of total actual held by the top i) - i/N; ties in
    ``score`` share the mean actual of their group. NaN when the total actual is not positive.
    """
    actual = np.asarray(actual, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(-score, kind="stable")
    starts = _groups(score[order])
    w_sorted = w[:, order]
    group_w = np.add.reduceat(w_sorted, starts, axis=1) if len(starts) else w_sorted
    group_a = np.add.reduceat(w_sorted * actual[order], starts, axis=1) if len(starts) else w_sorted
    n_total = group_w.sum(axis=1, keepdims=True)
    a_total = group_a.sum(axis=1, keepdims=True)
    before_w = np.cumsum(group_w, axis=1) - group_w
    before_a = np.cumsum(group_a, axis=1) - group_a
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_a = np.where(group_w > 0, group_a / np.where(group_w > 0, group_w, 1.0), 0.0)
        tri = group_w * (group_w + 1.0) / 2.0
        # Sum over the group's positions j = 1..W of (C + j*m)/T - (P + j)/N, in closed form.
        term = (group_w * before_a + mean_a * tri) / a_total - (group_w * before_w + tri) / n_total
        gini = term.sum(axis=1) / n_total[:, 0]
        gini = np.where(a_total[:, 0] > 0, gini, np.nan)
    return gini if np.ndim(weights) == 2 else gini[0]


def gini(actual, score) -> float:
    """Gini of realised value ordered by the score (see gini_weighted)."""
    actual = np.asarray(actual, dtype=np.float64)
    return float(gini_weighted(actual, score, np.ones(len(actual))))


def norm_gini_weighted(actual, predicted, weights) -> np.ndarray:
    """Normalised Gini for one or many weight vectors: Gini by prediction / Gini of the perfect order."""
    actual = np.asarray(actual, dtype=np.float64)
    model = gini_weighted(actual, predicted, weights)
    perfect = gini_weighted(actual, actual, weights)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(perfect > 0, model / perfect, np.nan)


def norm_gini(actual, predicted) -> float:
    """Normalised Gini: 1 = the prediction orders customers exactly by realised value, 0 = no better than random."""
    actual = np.asarray(actual, dtype=np.float64)
    return float(norm_gini_weighted(actual, predicted, np.ones(len(actual))))


def top_capture(actual, predicted, share: float = 0.10) -> float:
    """Share of the total realised value held by the top ``share`` of customers by prediction.

    The top group has ceil(share * n) customers; customers tied at its boundary contribute their
    group's mean realised value (expectation over the order of the tied customers).
    """
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    n = len(actual)
    total = actual.sum()
    if n == 0 or total <= 0:
        return math.nan
    k = math.ceil(share * n)
    order = np.argsort(-predicted, kind="stable")
    starts = _groups(predicted[order])
    sizes = np.diff(np.append(starts, n))
    sums = np.add.reduceat(actual[order], starts)
    averaged = np.repeat(sums / sizes, sizes)
    return float(averaged[:k].sum() / total)


def spearman(actual, predicted) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if either side is constant."""
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if len(actual) < 2 or np.all(actual == actual[0]) or np.all(predicted == predicted[0]):
        return math.nan
    return float(stats.spearmanr(actual, predicted).statistic)


def value_metrics(actual, predicted, *, prefix: str = "") -> dict[str, float]:
    """All ranking and error metrics, named ``<prefix><metric>`` (e.g. ``test_norm_gini``)."""
    actual = np.asarray(actual, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if actual.shape != predicted.shape:
        raise ValueError(f"actual has shape {actual.shape} but predicted has {predicted.shape}")
    if not np.all(np.isfinite(predicted)):
        raise ValueError(f"{int((~np.isfinite(predicted)).sum())} predictions are not finite")
    err = predicted - actual
    total = actual.sum()
    values = {
        "norm_gini": norm_gini(actual, predicted),
        "spearman": spearman(actual, predicted),
        "top10_capture": top_capture(actual, predicted, 0.10),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "total_error_pct": float(100.0 * err.sum() / total) if total != 0 else math.nan,
    }
    return {f"{prefix}{name}": value for name, value in values.items()}


def decile_table(actual, predictions: dict[str, np.ndarray]) -> pd.DataFrame:
    """Mean predicted vs mean realised value per decile of each prediction (10 = highest predicted).

    Deciles come from average ranks, so tied predictions land in the same decile (a baseline that
    predicts 0 for half of the customers shows one large decile rather than an arbitrary split).
    Columns: model, decile, customers, mean_predicted, mean_actual, share_of_actual.
    """
    actual = np.asarray(actual, dtype=np.float64)
    total = actual.sum()
    parts = []
    for model, predicted in predictions.items():
        predicted = np.asarray(predicted, dtype=np.float64)
        ranks = stats.rankdata(predicted, method="average")
        decile = np.clip(np.ceil(ranks / len(predicted) * 10), 1, 10).astype(np.int64)
        frame = pd.DataFrame({"decile": decile, "predicted": predicted, "actual": actual})
        summary = frame.groupby("decile", sort=True).agg(
            customers=("actual", "size"),
            mean_predicted=("predicted", "mean"),
            mean_actual=("actual", "mean"),
            sum_actual=("actual", "sum"),
        )
        summary["share_of_actual"] = summary.pop("sum_actual") / total if total != 0 else np.nan
        summary.insert(0, "model", model)
        parts.append(summary.reset_index())
    columns = ["model", "decile", "customers", "mean_predicted", "mean_actual", "share_of_actual"]
    return pd.concat(parts, ignore_index=True)[columns]
