"""Drift: do today's customers look like the ones the model was tested on? Population stability index.

A training run stores, with the served model, a *reference*: for every model feature and for the
model's predictions, the bins of the training test window's values and the share of customers in
each (``reference``). A scoring run counts today's customers in the same bins, part by part
(``bin_counts``, summed with ``add_counts``, so chunks and Dask partitions need never meet), and
compares with the population stability index (``psi``), the credit-risk industry's measure:

    PSI = sum over bins of (today's share - reference share) x ln(today's share / reference share)

Numeric values fall into up to ten bins of the reference's values (fewer when values repeat; see
numeric_reference), plus one bin for missing values; categories into their most frequent levels, ``other`` (levels
seen rarely or never in training) and missing. By the usual reading, below 0.1 is stable, 0.1-0.25
a moderate shift worth a look, above 0.25 a shift large enough that the model's predictions
should not be trusted without a check (``WARN``, ``THRESHOLD``). The reference holds bin edges and
shares only: no customer's value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

WARN = 0.10
THRESHOLD = 0.25
QUANTILES = np.linspace(0.05, 0.95, 10)
MAX_LEVELS = 20  # categories kept as their own bin; the rest share ``other``
PREDICTIONS = "predicted_value"  # the reference's key for the model's predictions
FLOOR = 1e-4  # shares below this count as this much (an empty bin would make PSI infinite)


def numeric_reference(values) -> dict:
    """Bin edges of the non-missing values and the share of values in each bin (missing last).

    The edges lie halfway between the distinct 5th, 15th, ..., 95th percentiles: about ten equal
    bins for spread-out values, and a value many customers share (0 orders, a population mean
    given to everyone without a repeat purchase) sits in the middle of its bin, so a small move
    of that value between the training and the scoring cutoff does not read as a shift of all
    those customers into the next bin.
    """
    x = np.asarray(values, dtype="float64")
    present = x[np.isfinite(x)]
    points = np.unique(np.quantile(present, QUANTILES)) if len(present) else np.array([])
    edges = ((points[:-1] + points[1:]) / 2).tolist()
    counts = numeric_counts({"kind": "numeric", "edges": edges}, x)
    return {"kind": "numeric", "edges": edges, "shares": _shares(counts)}


def categorical_reference(values) -> dict:
    """The most frequent levels (at most MAX_LEVELS) and the shares of them, ``other`` and missing."""
    series = pd.Series(values, dtype="object")
    present = series.dropna().astype(str)
    levels = present.value_counts().sort_index(kind="stable").sort_values(ascending=False, kind="stable")
    spec = {"kind": "categorical", "levels": levels.index[:MAX_LEVELS].tolist()}
    return {**spec, "shares": _shares(categorical_counts(spec, series))}


def reference(inputs: pd.DataFrame, predictions, categorical=()) -> dict:
    """The drift reference of a model: every column of ``inputs`` (the model's input frame) and its
    predictions. ``categorical``: the columns binned by level rather than by value."""
    out = {"features": {}, "rows": len(inputs)}
    for name in inputs.columns:
        column = inputs[name]
        out["features"][name] = (categorical_reference(column) if name in set(categorical)
                                 else numeric_reference(column.to_numpy(dtype="float64", na_value=np.nan)))
    out["predictions"] = numeric_reference(predictions)
    return out


def numeric_counts(spec: dict, values) -> list[int]:
    """Customers per bin: (-inf, e1], (e1, e2], ..., (ek, inf), then missing."""
    x = np.asarray(values, dtype="float64")
    finite = np.isfinite(x)
    edges = np.asarray(spec["edges"], dtype="float64")
    where = np.searchsorted(edges, x[finite], side="left")
    counts = np.bincount(where, minlength=len(edges) + 1).tolist()
    return counts + [int((~finite).sum())]


def categorical_counts(spec: dict, values) -> list[int]:
    """Customers per kept level, then ``other``, then missing."""
    series = pd.Series(values, dtype="object")
    missing = series.isna()
    text = series[~missing].astype(str)
    kept = text.value_counts()
    counts = [int(kept.get(level, 0)) for level in spec["levels"]]
    return counts + [int(len(text) - sum(counts)), int(missing.sum())]


def bin_counts(ref: dict, inputs: pd.DataFrame, predictions) -> dict[str, list[int]]:
    """Today's customers of one part counted in the reference's bins (features and predictions)."""
    out = {}
    for name, spec in ref["features"].items():
        if name not in inputs.columns:
            continue
        counter = categorical_counts if spec["kind"] == "categorical" else numeric_counts
        out[name] = counter(spec, inputs[name] if spec["kind"] == "categorical"
                            else inputs[name].to_numpy(dtype="float64", na_value=np.nan))
    out[PREDICTIONS] = numeric_counts(ref["predictions"], predictions)
    return out


def add_counts(parts) -> dict[str, list[int]]:
    """The counts of several parts summed bin by bin."""
    total: dict[str, np.ndarray] = {}
    for part in parts:
        for name, counts in part.items():
            total[name] = total.get(name, 0) + np.asarray(counts, dtype="int64")
    return {name: counts.tolist() for name, counts in total.items()}


def psi(expected_shares, actual_counts) -> float:
    """Population stability index of counts against reference shares (both over the same bins)."""
    expected = np.clip(np.asarray(expected_shares, dtype="float64"), FLOOR, None)
    counts = np.asarray(actual_counts, dtype="float64")
    if counts.sum() == 0:
        return float("nan")
    actual = np.clip(counts / counts.sum(), FLOOR, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def drift_report(ref: dict | None, counts: dict[str, list[int]] | None, *, threshold: float = THRESHOLD,
                 warn: float = WARN) -> dict:
    """PSI of every feature and of the predictions, and the verdict: ``ok``, ``shift`` (some PSI
    above ``warn``), ``drift`` (some above ``threshold``) or ``not checked`` (a model without a
    reference, trained before drift checks existed)."""
    if not ref or counts is None:
        return {"status": "not checked", "warn": warn, "threshold": threshold, "predictions": None,
                "features": {}, "drifted": [], "shifted": [],
                "reason": "the model has no drift reference (trained before drift checks); retrain to check"}
    features = {name: round(psi(spec["shares"], counts[name]), 4)
                for name, spec in ref["features"].items() if name in counts}
    predictions = round(psi(ref["predictions"]["shares"], counts[PREDICTIONS]), 4)
    every = {**features, PREDICTIONS: predictions}
    drifted = sorted((n for n, v in every.items() if v > threshold), key=lambda n: -every[n])
    shifted = sorted((n for n, v in every.items() if warn < v <= threshold), key=lambda n: -every[n])
    status = "drift" if drifted else "shift" if shifted else "ok"
    return {"status": status, "warn": warn, "threshold": threshold, "predictions": predictions,
            "features": features, "drifted": drifted, "shifted": shifted}


def drift_sentence(report: dict) -> str:
    """One line for a summary: what drifted, how much, against which threshold."""
    status = report["status"]
    if status == "not checked":
        return f"drift not checked: {report.get('reason', 'no reference')}"
    every = {**report["features"], PREDICTIONS: report["predictions"]}
    worst = max(every, key=lambda n: every[n]) if every else None
    if status == "ok":
        return (f"drift: none (largest PSI {every[worst]:.3f} on {worst}, below {report['warn']}; "
                f"predictions {report['predictions']:.3f})")
    names = report["drifted"] if status == "drift" else report["shifted"]
    shown = ", ".join(f"{n} {every[n]:.2f}" for n in names[:5]) + (", ..." if len(names) > 5 else "")
    limit = report["threshold"] if status == "drift" else report["warn"]
    what = "DRIFT" if status == "drift" else "moderate shift"
    return (f"{what}: {len(names)} of {len(every)} checks above PSI {limit} ({shown}); today's customers differ "
            "from those the model was tested on")


def _shares(counts) -> list[float]:
    counts = np.asarray(counts, dtype="float64")
    total = counts.sum()
    return (counts / total if total else counts).round(6).tolist()
