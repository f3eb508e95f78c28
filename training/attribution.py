"""What the model relies on: mean |SHAP| per feature and per family on a seeded sample of the test window."""

from __future__ import annotations

import numpy as np
import pandas as pd


def shap_sample(frame: pd.DataFrame, max_rows: int, *, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows, drawn without replacement with a seeded generator, in the original order."""
    if len(frame) <= max_rows:
        return frame
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[keep]


def feature_importance(
    log_contributions: pd.DataFrame,
    encoded: pd.DataFrame,
    families: dict[str, str],
    categorical: list[str] = (),
) -> pd.DataFrame:
    """One row per feature: family, mean |SHAP| (model log scale), share of the total, direction.

    ``log_contributions``: exact TreeSHAP values per customer and feature (a ``baseline`` column is
    ignored); ``encoded``: the same customers' feature values. direction = Spearman correlation of a
    feature's SHAP with its value (+1: higher values raise predicted value); NaN for categorical
    features and constant columns. Sorted by mean |SHAP|, descending (ties by name).
    """
    shap = log_contributions.drop(columns=["baseline"], errors="ignore")
    mean_abs = shap.abs().mean()
    total = mean_abs.sum()
    numeric = [c for c in shap.columns if c not in set(categorical)]
    direction = pd.Series(np.nan, index=shap.columns)
    if numeric and len(shap) > 1:
        ranks_shap = shap[numeric].rank()
        ranks_value = encoded[numeric].rank()
        with np.errstate(divide="ignore", invalid="ignore"):
            direction[numeric] = ranks_shap.corrwith(ranks_value).reindex(numeric).to_numpy()
    table = pd.DataFrame(
        {
            "feature": shap.columns,
            "family": [families.get(c, "unknown") for c in shap.columns],
            "mean_abs_shap": mean_abs.to_numpy(),
            "share": (mean_abs / total).to_numpy() if total > 0 else np.zeros(len(mean_abs)),
            "direction": direction.to_numpy(),
        }
    )
    return table.sort_values(
        ["mean_abs_shap", "feature"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


def family_shares(importance: pd.DataFrame, family_names) -> dict[str, float]:
    """``shap_share_<family>``: share of total mean |SHAP| held by each family (0 for families without features)."""
    by_family = importance.groupby("family")["share"].sum()
    return {f"shap_share_{name}": float(by_family.get(name, 0.0)) for name in family_names}
