"""80% prediction intervals for a customer's value: Mondrian (binned) split-conformal on the predicted value.

Method. On a calibration window (customers the model did not learn from, with their realised value)
the customers are put into equal-count bins of predicted value (about ROWS_PER_BIN customers a bin,
at most MAX_BINS, at least one), and in each bin the interval is a pair of empirical quantiles of
the realised value relative to the prediction: [q(a), q(a + 0.8)] of y / s with a = 0.1, where a
customer's scale s is the prediction, at least the bin's median prediction, so the interval is
s x [q(a), q(a + 0.8)]. Scaling matters in the wide end bins: the top bin holds customers predicted
2,000 and 12,000, and a customer predicted 12,000 gets a range six times as wide and as high, not
the bin's range in currency (which would lie far below the prediction); in the narrow middle bins
it changes little. Realised value is zero-inflated (many customers
buy nothing) and may be negative (returns), so the lower quantile often sits on a mass point (zero):
the upper level then starts from the share strictly below the lower end, hi = q(P(y < lo) + 0.8),
so that about 80% of the bin lies inside [lo, hi] rather than 90%. Ranks carry the split-conformal
finite-sample correction (positions out of n + 1), so a new customer exchangeable with a bin's
customers falls inside with probability at least 0.8 (for continuous values; about 0.8 with ties).
A customer is given the interval of the bin their predicted value falls in; predictions outside
the calibration range take the end bins. The method needs only predictions and realised values,
so it serves the learned model and a baseline fallback (training.model.BaselineValueModel) alike.

Why binned: value spread grows with the predicted value (a customer predicted 2,000 can realise
0 or 6,000; one predicted 5 realises 0 or a few), so one residual quantile for everyone would be
far too wide at the bottom and too narrow at the top; per-bin quantiles adapt to that.

Limits. The guarantee is marginal (over the customers of a bin, not for each customer) and holds
under exchangeability of the calibration and the scored customers; an out-of-time shift (season,
trend, a changed mix of customers) can move the coverage, which is why a run measures it on its
test window (``interval_coverage``). Within a bin the interval is the same for every customer. For
customers who mostly buy nothing the interval can be [0, 0] or exclude the predicted mean (a mean
of 40 from a 10% chance of 400): the interval is about realised value, the prediction about its mean.

The table (``calibrate_intervals``) is JSON-able and travels on the model as ``interval_table``:
``method``, ``level``, ``calibration_rows``, ``edges`` (inner bin edges on predicted value,
ascending; bin k holds edges[k-1] <= value < edges[k]), per bin ``lo``, ``hi`` (relative to the
scale), ``scale_floor`` (None: ``lo``/``hi`` in currency) and ``rows``,
``calibration_coverage``, and ``calibrated_on`` / ``coverage_on_test`` where the caller sets them.
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.8  # the interval's nominal coverage
LOWER = 0.1  # the lower end's level when the realised value has no mass point there
ROWS_PER_BIN = 200  # calibration customers per bin, about: enough for a 10% / 90% quantile
MAX_BINS = 20
METHOD = ("mondrian split-conformal: empirical quantiles of realised / predicted value (scale at least the bin's "
          "median prediction) in equal-count bins of predicted value")


def bin_count(rows: int) -> int:
    """Bins for this many calibration rows: about ROWS_PER_BIN a bin, between 1 and MAX_BINS."""
    return int(min(MAX_BINS, max(1, rows // ROWS_PER_BIN)))


def calibrate_intervals(predicted, actual, *, level: float = LEVEL, lower: float = LOWER) -> dict:
    """The interval table (JSON-able) from a calibration window's predicted and realised values.

    Rows whose prediction or realised value is missing are left out. An empty calibration set is a
    ValueError (there is nothing to calibrate on).
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape:
        raise ValueError(f"predicted ({predicted.shape}) and actual ({actual.shape}) differ in shape")
    if not (0 < level < 1 and 0 <= lower < 1 - level):
        raise ValueError(f"need 0 < level < 1 and 0 <= lower < 1 - level, not level={level}, lower={lower}")
    keep = np.isfinite(predicted) & np.isfinite(actual)
    predicted, actual = predicted[keep], actual[keep]
    if len(predicted) == 0:
        raise ValueError("no calibration rows with a finite prediction and realised value")
    edges = bin_edges(predicted, bin_count(len(predicted)))
    bins = np.searchsorted(edges, predicted, side="right")
    lo, hi, rows, floors = [], [], [], []
    for k in range(len(edges) + 1):
        inside = bins == k
        floor = scale_floor(predicted[inside])
        low, high = conformal_bounds(actual[inside] / scales(predicted[inside], floor), level=level, lower=lower)
        lo.append(low)
        hi.append(high)
        rows.append(int(inside.sum()))
        floors.append(floor)
    table = {
        "method": METHOD,
        "level": float(level),
        "calibration_rows": len(predicted),
        "edges": [float(e) for e in edges],
        "lo": lo,
        "hi": hi,
        "rows": rows,
        "scale_floor": floors,
    }
    table["calibration_coverage"] = interval_coverage(actual, *apply_intervals(table, predicted))
    return table


def scale_floor(predicted: np.ndarray) -> float | None:
    """The smallest scale of a bin: its median prediction (None when that is not positive, e.g. a
    fallback valuing non-buyers at 0: the bin's bounds are then in currency)."""
    if len(predicted) == 0:
        return None
    median = float(np.median(predicted))
    return median if median > 0 else None


def scales(predicted: np.ndarray, floor: float | None) -> np.ndarray:
    """Each customer's scale within a bin: the prediction, at least the bin's floor (1 without one)."""
    if floor is None:
        return np.ones(len(predicted))
    return np.maximum(np.asarray(predicted, dtype=np.float64), floor)


def bin_edges(predicted: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner edges of about equal-count bins of ``predicted``; bins emptied or starved by ties
    (many equal predictions, e.g. a fallback valuing every non-buyer at 0) are merged into a neighbour."""
    if n_bins <= 1:
        return np.empty(0)
    edges = np.unique(np.quantile(predicted, np.arange(1, n_bins) / n_bins, method="inverted_cdf"))
    smallest = max(1, len(predicted) // n_bins // 2)  # a bin needs half its share of the rows
    while len(edges):
        counts = np.bincount(np.searchsorted(edges, predicted, side="right"), minlength=len(edges) + 1)
        k = int(np.argmin(counts))
        if counts[k] >= smallest:
            break
        # Merge bin k with its smaller neighbour by dropping the edge between them.
        if k == 0:
            drop = 0
        elif k == len(edges):
            drop = k - 1
        else:
            drop = k - 1 if counts[k - 1] <= counts[k + 1] else k
        edges = np.delete(edges, drop)
    return edges


def conformal_bounds(actual: np.ndarray, *, level: float = LEVEL, lower: float = LOWER) -> tuple[float, float]:
    """(lo, hi) holding about ``level`` of ``actual``: lo at rank ~lower*(n+1), hi ceil(level*(n+1))
    ranks above the first customer at lo (so a mass point at lo counts once, not twice)."""
    y = np.sort(np.asarray(actual, dtype=np.float64))
    n = len(y)
    if n == 0:
        return float("nan"), float("nan")
    i = min(n, max(1, math.floor(lower * (n + 1))))  # 1-based rank of the lower end
    lo = y[i - 1]
    below = int(np.searchsorted(y, lo, side="left"))  # customers strictly below lo
    j = min(n, below + math.ceil(level * (n + 1)))  # 1-based rank of the upper end
    return float(lo), float(y[j - 1])


def apply_intervals(table: dict, predicted) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per predicted value from its bin in ``table``; values outside the calibration range
    take the end bins, a missing prediction gets NaN."""
    predicted = np.asarray(predicted, dtype=np.float64)
    edges = np.asarray(table["edges"], dtype=np.float64)
    bins = np.searchsorted(edges, predicted, side="right")
    floors = table.get("scale_floor") or [None] * (len(edges) + 1)
    floor = np.array([np.nan if f is None else f for f in floors], dtype=np.float64)[bins]
    scale = np.where(np.isfinite(floor), np.fmax(predicted, floor), 1.0)
    lo = np.asarray(table["lo"], dtype=np.float64)[bins] * scale
    hi = np.asarray(table["hi"], dtype=np.float64)[bins] * scale
    missing = ~np.isfinite(predicted)
    lo[missing] = np.nan
    hi[missing] = np.nan
    return lo, hi


def interval_coverage(actual, lo, hi) -> float:
    """Share of customers whose realised value lies in [lo, hi] (ends included); NaN without rows.
    A customer with a missing value or interval counts as outside."""
    actual, lo, hi = (np.asarray(v, dtype=np.float64) for v in (actual, lo, hi))
    if len(actual) == 0:
        return float("nan")
    return float(np.mean((lo <= actual) & (actual <= hi)))


def interval_width_median(lo, hi) -> float:
    """Median of hi - lo over the customers with an interval (NaN when none has one)."""
    width = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    width = width[np.isfinite(width)]
    return float(np.median(width)) if len(width) else float("nan")
