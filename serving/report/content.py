"""The report's content as pure functions: frames in, frames and sentences out.

Feature descriptions and effect words, importance tables, lift sentences, the influence x value
quadrant, deciles, metric tables and number formatting. Nothing here reads MLflow or draws.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from features.build import FAMILIES
from features.catalog import SOCIAL_FAMILIES
from training.metrics import decile_table

TOP_VALUE_SHARE = 0.20
# Used to split customers by influence: the vendor score when it covers most customers we see on
# social media, else reach (followers), which every linked profile has.
INFLUENCE_MEASURES = (("influence_score_max", "vendor influence score (0-100)"),
                      ("followers_log", "social media followers (log scale)"))
INFLUENCE_MIN_COVERAGE = 0.8
METRIC_LABELS = {
    "norm_gini": ("normalised Gini", "ranking quality: 1 = customers in exactly the order of their realised value, 0 = random"),
    "spearman": ("Spearman correlation", "rank agreement of predicted and realised value"),
    "top10_capture": ("top-10% capture", "share of realised value held by the 10% of customers predicted highest"),
    "mae": ("mean absolute error", "average miss per customer, in currency"),
    "rmse": ("root mean squared error", "like MAE, but large misses weigh more"),
    "total_error_pct": ("total error (%)", "sum of predictions vs sum of realised value; 0 = right in total"),
}
HIGHER_IS_BETTER = {"norm_gini", "spearman", "top10_capture"}


def feature_descriptions() -> dict[str, str]:
    """One-line description of every catalogued feature (dynamic attribute columns by prefix)."""
    out = {}
    for family in FAMILIES:
        if family.dynamic_prefix is None:
            out.update(family.features)
    return out


def describe_feature(name: str, descriptions: dict[str, str]) -> str:
    """The catalogue's one-line description, in words for readers who do not know the code's ``as_of``."""
    if name in descriptions:
        return descriptions[name].replace("as_of", "the as-of date")
    if name.startswith("attr_"):
        return f"static customer attribute '{name[len('attr_'):]}'"
    return ""


def effect_text(direction: float, share: float | None = None) -> str:
    """Plain words for the Spearman correlation of a feature's SHAP values with its values.

    No correlation is defined for categorical features (the effect depends on the level) and for
    features the model never splits on (share 0).
    """
    if share is not None and share == 0:
        return "not used by the model"
    if direction is None or not np.isfinite(direction):
        return "depends on the category"
    if direction >= 0.3:
        return "higher → more value"
    if direction <= -0.3:
        return "higher → less value"
    return "mixed effect"


def family_importance(importance: pd.DataFrame) -> pd.DataFrame:
    """Attribution per family: family, features, mean_abs_shap, share, social; largest share first."""
    table = importance.groupby("family", sort=False).agg(
        features=("feature", "size"), mean_abs_shap=("mean_abs_shap", "sum"), share=("share", "sum"))
    table = table.reset_index()
    table["social"] = table["family"].isin(SOCIAL_FAMILIES)
    table = table.sort_values(["share", "family"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)[["family", "features", "mean_abs_shap", "share", "social"]]


def feature_importance_table(importance: pd.DataFrame, shap_sample: pd.DataFrame | None = None) -> pd.DataFrame:
    """Attribution per feature, largest first: feature, family, social, share, mean_abs_shap,
    mean_abs_contribution (currency, from the SHAP sample; NaN without one), direction, effect, description."""
    table = importance.sort_values(["share", "feature"], ascending=[False, True], kind="stable").reset_index(drop=True)
    table = table[["feature", "family", "share", "mean_abs_shap", "direction"]].copy()
    table.insert(2, "social", table["family"].isin(SOCIAL_FAMILIES))
    money = pd.Series(np.nan, index=table["feature"])
    if shap_sample is not None:
        columns = [f"shap__{f}" for f in table["feature"] if f"shap__{f}" in shap_sample.columns]
        means = shap_sample[columns].abs().mean()
        means.index = [c[len("shap__"):] for c in means.index]
        money = means.reindex(table["feature"])
    table["mean_abs_contribution"] = money.to_numpy(np.float64)
    table["effect"] = [effect_text(d, s) for d, s in zip(table["direction"], table["share"])]
    descriptions = feature_descriptions()
    table["description"] = [describe_feature(f, descriptions) for f in table["feature"]]
    return table


def social_share(importance: pd.DataFrame) -> float:
    """Share of total attribution held by the social families (SOCIAL_FAMILIES)."""
    return float(importance.loc[importance["family"].isin(SOCIAL_FAMILIES), "share"].sum())


def points(value: float) -> str:
    """A normalised-Gini difference in points (1 point = 0.01), signed, to two decimals."""
    return f"{100 * value:+.2f}"


def social_headline(tags: dict, metrics: dict, importance: pd.DataFrame, *, interval: float = 0.90) -> str | None:
    """The report's first sentence about social data, one per case: not available, tested and left
    out, kept (with what it adds and through which family), or kept untested. None for a run that
    predates the decision (its lift sentences say what is known)."""
    decision = tags.get("social_decision")
    if decision is None:
        return None
    if decision.startswith("no social data"):
        return ("Social data was not available: the source has no social profiles, so this model values "
                "customers from their CRM history alone.")
    level = f"{round(100 * interval)}%"

    def measured(prefix: str) -> str:
        est, lo, hi = (metrics.get(f"{prefix}{end}", math.nan) for end in ("", "_lo", "_hi"))
        return f"{points(est)} points of normalised Gini ({level} interval {points(lo)} to {points(hi)})"

    if tags.get("social_included") == "false":
        return ("Social data was tested and left out: on the validation window it did not improve ranking "
                f"beyond noise ({measured('social_validation_lift_norm_gini')}, over customers and refits), "
                "so the model is registered without it.")
    if "untested" in decision:
        return ("Social data is in the model but was not tested (the run had social_ablation off): what it "
                "adds is unknown.")
    social = importance.loc[importance["family"].isin(SOCIAL_FAMILIES)]
    by_family = social.groupby("family")["share"].sum().sort_values(ascending=False)
    through = f", mostly through {by_family.index[0]} features" if len(by_family) else ""
    lo = metrics.get("social_lift_norm_gini_lo", math.nan)
    test = (f"on the test window it adds {measured('social_lift_norm_gini')}" if np.isfinite(lo) and lo > 0
            else f"on the test window the lift is {measured('social_lift_norm_gini')}, an interval that "
                 "does not exclude zero")
    return (f"Social data improves ranking and is kept: it did so on the validation window "
            f"({measured('social_validation_lift_norm_gini')}, over customers and refits), and {test}{through}.")


def lift_sentence(estimate: float, lo: float, hi: float, *, who: str, interval: float = 0.90) -> str:
    """What social data adds to ranking quality for ``who``, in words, honest when the interval covers zero."""
    level = f"{round(100 * interval)}%"
    if estimate is None or not np.isfinite(estimate):
        return f"For {who}, the lift from social data could not be measured (no social ablation in this run)."
    span = (f"({level} interval {points(lo)} to {points(hi)} points)" if np.isfinite(lo) and np.isfinite(hi)
            else "(no interval: too few customers to resample)")
    if np.isfinite(lo) and lo > 0:
        return (f"For {who}, social data adds {points(estimate)} points of normalised Gini {span}: "
                "it ranks customers measurably better with it than without it.")
    if np.isfinite(hi) and hi < 0:
        return (f"For {who}, social data changes normalised Gini by {points(estimate)} points {span}: "
                "the model ranks customers measurably worse with it, so it adds noise here rather than signal.")
    if np.isfinite(lo) and np.isfinite(hi):
        return (f"For {who}, social data changes normalised Gini by {points(estimate)} points {span}. "
                "The interval covers zero: on this test window we cannot tell the model with social data "
                "from the one without it.")
    return f"For {who}, social data changes normalised Gini by {points(estimate)} points {span}."


def top_drivers(features: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """The ``n`` features with the largest share of attribution (feature_importance_table rows)."""
    return features.head(n).reset_index(drop=True)


def influence_measure(shap_sample: pd.DataFrame) -> tuple[str | None, str]:
    """(column, label) used to split customers by influence: the vendor score if it covers at least
    80% of customers with social data, else followers; (None, reason) when neither is there."""
    if "followers_log" in shap_sample.columns:
        social = shap_sample["followers_log"].notna()
    elif "has_social_profile" in shap_sample.columns:
        social = shap_sample["has_social_profile"] == 1
    else:
        social = None
    for column, label in INFLUENCE_MEASURES:
        if column not in shap_sample.columns:
            continue
        known = shap_sample[column].notna()
        if not known.any():
            continue
        base = int(social.sum()) if social is not None else len(shap_sample)
        if base and known[social if social is not None else known].sum() / base >= INFLUENCE_MIN_COVERAGE:
            return column, label
    return None, "no influence measure (neither a vendor influence score nor followers) in the features"


def top_value_flags(predictions: pd.DataFrame, share: float = TOP_VALUE_SHARE) -> pd.Series:
    """True for the ``share`` of customers with the highest predicted value, by customer_id.

    Ties are never split by id: customers tied at the boundary are all left out, as in the tiers
    (serving.scoring.tiers.value_ranks), so the group holds at most ``share`` of the customers.
    """
    values = predictions["predicted"].to_numpy(dtype="float64")
    rank = len(values) - np.searchsorted(np.sort(values), values, side="left")
    return pd.Series(rank <= math.ceil(share * len(values)), index=predictions["customer_id"].to_numpy())


CELL_NAMES = {
    ("high", "top"): "reach and value",
    ("high", "rest"): "reach but little value",
    ("low", "top"): "value but little reach",
    ("low", "rest"): "little reach, little value",
    ("none", "top"): "value, no social data",
    ("none", "rest"): "no social data, rest",
}


def influence_value_quadrant(predictions: pd.DataFrame, shap_sample: pd.DataFrame, influence: str, *,
                             top_share: float = TOP_VALUE_SHARE, examples: int = 3):
    """Customers of the SHAP sample split by influence and by predicted value.

    Influence: ``high`` above the median among sampled customers with a value, ``low`` at or below
    it, ``none`` without social data (missing is not low). Value: top ``top_share`` of ALL test
    customers by prediction vs the rest. Returns (cells, points, median, value_threshold): cells has
    influence_group, value_group, cell, customers, share_of_customers, share_of_predicted_value,
    share_of_actual_value, mean_predicted, examples (customers with the most reach in high cells, the
    highest predicted value in the others); points has customer_id, influence, predicted, actual, top.
    """
    flags = top_value_flags(predictions, top_share)
    threshold = float(predictions.set_index("customer_id").loc[flags[flags].index, "predicted"].min()) \
        if flags.any() else math.inf
    frame = shap_sample[["customer_id", influence]].rename(columns={influence: "influence"}).merge(
        predictions[["customer_id", "predicted", "actual"]], on="customer_id", how="inner", validate="1:1")
    frame["top"] = flags.reindex(frame["customer_id"]).fillna(False).to_numpy(bool)
    known = frame["influence"].notna()
    median = float(frame.loc[known, "influence"].median()) if known.any() else math.nan
    frame["influence_group"] = np.where(~known, "none", np.where(frame["influence"] > median, "high", "low"))
    frame["value_group"] = np.where(frame["top"], "top", "rest")
    total_pred = frame["predicted"].sum()
    total_actual = frame["actual"].sum()
    rows = []
    for (group, value), name in CELL_NAMES.items():
        cell = frame[(frame["influence_group"] == group) & (frame["value_group"] == value)]
        if group == "high":
            picked = cell.sort_values(["influence", "predicted", "customer_id"], ascending=[False, False, True])
        else:
            picked = cell.sort_values(["predicted", "customer_id"], ascending=[False, True])
        rows.append({
            "influence_group": group, "value_group": value, "cell": name,
            "value_label": f"top {100 * top_share:g}%" if value == "top" else "rest", "customers": len(cell),
            "share_of_customers": len(cell) / len(frame) if len(frame) else math.nan,
            "share_of_predicted_value": cell["predicted"].sum() / total_pred if total_pred else math.nan,
            "share_of_actual_value": cell["actual"].sum() / total_actual if total_actual else math.nan,
            "mean_predicted": cell["predicted"].mean() if len(cell) else math.nan,
            "examples": ", ".join(picked["customer_id"].head(examples)),
        })
    cells = pd.DataFrame(rows)
    cells["customers"] = cells["customers"].astype("int64")
    return cells, frame[["customer_id", "influence", "predicted", "actual", "top"]], median, threshold


def quadrant_sentence(cells: pd.DataFrame, influence_label: str) -> str:
    """Who has reach but little value, and who has value but no reach, in one paragraph."""
    def cell(group, value):
        row = cells[(cells["influence_group"] == group) & (cells["value_group"] == value)]
        return row.iloc[0] if len(row) else None

    reach = cell("high", "rest")
    value_low, value_none = cell("low", "top"), cell("none", "top")
    parts = []
    if reach is not None:
        parts.append(f"{reach['customers']:,} sampled customers have above-median {influence_label} but are "
                     f"outside the top 20% by predicted value (reach but little value); together they hold "
                     f"{100 * reach['share_of_predicted_value']:.1f}% of predicted value")
        if reach["examples"]:
            parts[-1] += f" (e.g. {reach['examples']})"
    if value_low is not None and value_none is not None:
        count = int(value_low["customers"] + value_none["customers"])
        share = value_low["share_of_predicted_value"] + value_none["share_of_predicted_value"]
        examples = ", ".join(e for e in (value_low["examples"], value_none["examples"]) if e)
        parts.append(f"{count:,} are in the top 20% with below-median or no measured reach (value but no reach), "
                     f"holding {100 * share:.1f}% of predicted value" + (f" (e.g. {examples})" if examples else ""))
    return "; ".join(parts) + "." if parts else ""


def decile_data(predictions: pd.DataFrame, horizon_days: int) -> tuple[pd.DataFrame, list[str]]:
    """Decile table (training.metrics.decile_table) of the model and its baselines, with readable names.

    A baseline with any missing prediction (e.g. a failed BG/NBD fit) is left out and named in the notes.
    """
    actual = predictions["actual"].to_numpy(np.float64)
    series = {"model": predictions["predicted"], f"last {horizon_days} days": predictions["baseline_last_h"],
              "BG/NBD": predictions["baseline_bgnbd"]}
    notes, chosen = [], {}
    for name, values in series.items():
        if values.isna().any():
            notes.append(f"{name} is not shown: it has no prediction for "
                         f"{int(values.isna().sum()):,} customers (see the run's baseline_bgnbd_status tag).")
            continue
        chosen[name] = values.to_numpy(np.float64)
    return decile_table(actual, chosen), notes


def deciles_from_csv(table: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """The run's deciles.csv with the report's model names."""
    names = {"model": "model", "last_h": f"last {horizon_days} days", "bgnbd": "BG/NBD"}
    return table.assign(model=table["model"].map(lambda m: names.get(m, m)))


def metrics_vs_baselines(metrics: dict[str, float], horizon_days: int) -> pd.DataFrame:
    """metric, meaning, model, last H days, BG/NBD on the test window (NaN where not logged)."""
    rows = []
    for name, (label, meaning) in METRIC_LABELS.items():
        rows.append({
            "metric": label, "meaning": meaning,
            "model": metrics.get(f"test_{name}", math.nan),
            f"last {horizon_days} days": metrics.get(f"baseline_last_h_test_{name}", math.nan),
            "BG/NBD": metrics.get(f"baseline_bgnbd_test_{name}", math.nan),
        })
    return pd.DataFrame(rows)


def ablation_table(metrics: dict[str, float], ablation_metrics: dict[str, float]) -> pd.DataFrame:
    """metric, with_social, without_social, difference on the test window (without = the ablation run)."""
    rows = []
    for name, (label, _) in METRIC_LABELS.items():
        with_social = metrics.get(f"test_{name}", math.nan)
        without = ablation_metrics.get(f"test_{name}", math.nan)
        rows.append({"metric": label, "with_social": with_social, "without_social": without,
                     "difference": with_social - without})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Formatting for the page


def fmt_number(value, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:,.{digits}f}"


def fmt_metric(name_label: str, value) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    if name_label in ("mean absolute error", "root mean squared error"):
        return f"{value:,.1f}"
    if name_label == "total error (%)":
        return f"{value:+.1f}%"
    return f"{value:.3f}"


def fmt_share(value) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f}%"

