"""Reasons: the features that push a customer's predicted value most, with their signed effect in currency.

A reason reads ``feature=value: +123.45``: the feature, its value for this customer (``missing``
when unknown) and its SHAP contribution to predicted_value in currency (the model's contributions
split prediction - baseline across features, so a customer's contributions sum to that gap).
Reasons are ordered by absolute contribution, largest first; a feature whose contribution rounds
to 0.00 is not a reason, so a customer may have fewer than k (the rest are null).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

SIGNIFICANT_DIGITS = 6  # of a feature value in a reason; contributions always show cents


def reason_columns(k: int) -> list[str]:
    return [f"reason_{i}" for i in range(1, k + 1)]


def top_reasons(contributions: pd.DataFrame, features: pd.DataFrame, k: int) -> pd.DataFrame:
    """``reason_1..reason_k`` per row of ``contributions`` (currency, one column per feature).

    ``features`` holds the same rows and the feature values shown in the text (numbers or strings);
    columns of ``contributions`` not in ``features`` (such as ``baseline``) are ignored. Ties in
    absolute contribution keep the model's feature order.
    """
    names = [c for c in contributions.columns if c in features.columns]
    out = pd.DataFrame(index=contributions.index, columns=reason_columns(k), dtype="str")
    if k == 0 or not len(contributions) or not names:
        return out
    money = contributions[names].to_numpy(dtype="float64")
    k_used = min(k, len(names))
    # Stable sort on -|c|: equal effects keep feature order, so reasons are reproducible.
    top = np.argsort(-np.abs(money), axis=1, kind="stable")[:, :k_used]
    rows = np.arange(len(money))[:, None]
    chosen = money[rows, top]
    cents = np.rint(np.abs(chosen) * 100.0)

    value_text = np.empty(top.shape, dtype=object)
    for j, name in enumerate(names):
        hit = top == j
        if hit.any():  # only the rows where the feature is a reason are written out
            value_text[hit] = _value_text(features[name].iloc[np.nonzero(hit)[0]])

    name_of = np.array(names, dtype=object)[top]
    sign = np.where(chosen < 0, "-", "+")
    text = _join(name_of.ravel(), "=", value_text.ravel(), ": ", sign.ravel(), _money_text(cents.ravel()))
    text = np.where(cents.ravel() > 0, text, None).reshape(top.shape)
    for i in range(k_used):
        out[f"reason_{i + 1}"] = pd.array(text[:, i], dtype="str")
    return out


def _join(*parts) -> np.ndarray:
    """Element-wise string concatenation (scalars broadcast), done in Arrow."""
    arrays = [p if isinstance(p, str) else pa.array(p, type=pa.string()) for p in parts]
    return pc.binary_join_element_wise(*arrays, "").to_numpy(zero_copy_only=False)


def _money_text(cents: np.ndarray) -> pa.Array:
    """Whole cents as ``1234.50`` (no thousands separator: the text stays machine-readable)."""
    whole = pa.array((cents // 100).astype("int64"))
    frac = pc.utf8_lpad(pc.cast(pa.array((cents % 100).astype("int64")), pa.string()), 2, "0")
    return pc.binary_join_element_wise(pc.cast(whole, pa.string()), frac, ".")


def _value_text(values: pd.Series) -> np.ndarray:
    """A feature's values as short text: numbers to 6 significant digits, text as is, NaN as missing."""
    if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
        x = values.to_numpy(dtype="float64", na_value=np.nan)
        text = pc.cast(pa.array(_significant(x, SIGNIFICANT_DIGITS), from_pandas=True), pa.string())
    else:
        text = pa.array(values.astype("str").array, type=pa.string(), from_pandas=True)
    return pc.fill_null(text, "missing").to_numpy(zero_copy_only=False)


def _significant(x: np.ndarray, digits: int) -> np.ndarray:
    """x rounded to ``digits`` significant digits, by exact powers of ten so the shortest repr is clean."""
    out = x.copy()
    finite = np.isfinite(x) & (x != 0)
    magnitude = np.floor(np.log10(np.abs(x[finite]))).astype("int64")
    shift = digits - 1 - magnitude
    values = x[finite]
    up = shift >= 0
    scale_up = 10.0 ** np.minimum(shift[up], 300)
    values[up] = np.rint(values[up] * scale_up) / scale_up
    scale_down = 10.0 ** (-shift[~up])
    values[~up] = np.rint(values[~up] / scale_down) * scale_down
    out[finite] = values
    return out
