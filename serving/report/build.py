"""The stakeholder report: one self-contained HTML page on what drives predicted value and what social data adds.

``build_report`` reads a training run (metrics, feature_importance.csv, the ablation, and the
customer-level report_inputs/ of the test window), writes ``report.html`` with every chart embedded
as a PNG data URI (no script, no network), the charts as PNG files beside it, and logs the same files
to the run under ``report/``. The functions between loading and rendering are pure: frames in,
frames or sentences out.
"""

from __future__ import annotations

import base64
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.catalog import SOCIAL_FAMILIES
from training.report_inputs import MissingReportInputs, load_report_inputs

DEFAULT_MODEL_URI = "models:/customer-value@champion"
REPORT_ARTIFACT_DIR = "report"
TOP_VALUE_SHARE = 0.20
NEW_CUSTOMER_TENURE_DAYS = 365
# Dependence plots, in order; each entry is a list of alternatives, the first present is drawn.
DEPENDENCE_FEATURES = (
    ("influence_score_max",),
    ("topical_share", "topical_engagement"),
    ("followers_log",),
    ("referrals_made",),
)
# Used to split customers by influence: the vendor score when it covers most customers we see on
# social media, else reach (followers), which every linked profile has.
INFLUENCE_MEASURES = (("influence_score_max", "vendor influence score (0-100)"),
                      ("followers_log", "followers (log1p)"))
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


# ---------------------------------------------------------------------------------------------
# What a run holds


@dataclass
class RunRecord:
    """Everything the report reads from MLflow for one training run."""

    run_id: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    importance: pd.DataFrame
    model_name: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    aliases: tuple[str, ...] = ()
    ablation_run_id: str | None = None
    deciles: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None
    shap_sample: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def horizon_days(self) -> int:
        return int(float(self.tags.get("horizon_days") or self.params.get("features.horizon_days") or 365))

    @property
    def market_topics(self) -> list[str]:
        raw = self.params.get("features.market_topics", "[]")
        try:
            topics = json.loads(raw.replace("'", '"'))
        except (ValueError, AttributeError):
            return []
        return [str(t) for t in topics] if isinstance(topics, list) else []


# ---------------------------------------------------------------------------------------------
# Pure content: frames in, frames and sentences out


def feature_descriptions() -> dict[str, str]:
    """One-line description of every catalogued feature (dynamic attribute columns by prefix)."""
    from features.build import FAMILIES

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
    """True for the ``share`` of customers with the highest predicted value (ties broken by customer_id)."""
    order = predictions.sort_values(["predicted", "customer_id"], ascending=[False, True], kind="stable")
    k = math.ceil(share * len(order))
    flags = pd.Series(False, index=order["customer_id"].to_numpy())
    flags.iloc[:k] = True
    return flags


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
    from training.metrics import decile_table

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


@dataclass
class Table:
    """An HTML table: caption, column headers, rows of (row header, cells)."""

    caption: str
    columns: list[str]
    rows: list[tuple[str, list[str]]]
    numeric: list[bool] | None = None


@dataclass
class Figure:
    name: str  # file stem
    png: bytes
    alt: str
    caption: str

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    @property
    def size(self) -> tuple[int, int]:
        # PNG IHDR: width and height are big-endian uint32 at bytes 16-24.
        return int.from_bytes(self.png[16:20], "big"), int.from_bytes(self.png[20:24], "big")


# ---------------------------------------------------------------------------------------------
# Loading a run


def _parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    if not uri.startswith("models:/"):
        raise ValueError(f"model URI must look like models:/NAME@ALIAS or models:/NAME/VERSION, got {uri!r}")
    rest = uri[len("models:/"):]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, alias, None
    if "/" in rest:
        name, version = rest.rsplit("/", 1)
        return name, None, version
    raise ValueError(f"model URI names no alias or version: {uri!r}")


def resolve_run(client, *, model_uri: str | None, run_id: str | None):
    """(run_id, model_name, model_version, aliases, model_uri) for a model URI or a run id."""
    if model_uri is not None and run_id is not None:
        raise ValueError("pass a model URI or a run id, not both")
    if run_id is None:
        model_uri = model_uri or DEFAULT_MODEL_URI
        name, alias, version = _parse_model_uri(model_uri)
        from mlflow.exceptions import MlflowException

        try:
            mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        except MlflowException as err:
            raise LookupError(f"no model {model_uri} in the registry: {err}") from None
        if not mv.run_id:
            raise LookupError(f"{model_uri} (version {mv.version}) has no training run to report on")
        return mv.run_id, name, str(mv.version), tuple(getattr(mv, "aliases", ()) or ()), model_uri
    run = client.get_run(run_id)
    name, version = run.data.tags.get("model_name"), run.data.tags.get("model_version")
    aliases: tuple[str, ...] = ()
    if name and version:
        try:
            aliases = tuple(client.get_model_version(name, version).aliases or ())
        except Exception:  # noqa: BLE001 - a deleted version still leaves a readable run
            aliases = ()
    else:
        found = sorted(client.search_model_versions(f"run_id = '{run_id}'"), key=lambda v: int(v.version))
        if found:
            name, version, aliases = found[-1].name, str(found[-1].version), tuple(found[-1].aliases or ())
    return run_id, name, version, aliases, (f"models:/{name}/{version}" if name and version else None)


def _download(run_id: str, path: str, folder: Path, tracking_uri: str) -> Path | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(folder),
                                                        tracking_uri=tracking_uri))
    except (MlflowException, OSError):
        return None


def load_run(*, model_uri: str | None = None, run_id: str | None = None, tracking_uri: str | None = None) -> RunRecord:
    """Read a training run (and its ablation child and report inputs) from MLflow."""
    import mlflow

    from training import tracking

    tracking.quiet_mlflow_warnings()
    uri = tracking_uri or tracking.tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id, name, version, aliases, resolved_uri = resolve_run(client, model_uri=model_uri, run_id=run_id)
    run = client.get_run(run_id)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="clv-report-") as tmp:
        importance_path = _download(run_id, "feature_importance.csv", Path(tmp), uri)
        if importance_path is None:
            raise LookupError(f"run {run_id} has no feature_importance.csv: it is not a `clv train` run")
        importance = pd.read_csv(importance_path)
        deciles_path = _download(run_id, "deciles.csv", Path(tmp), uri)
        deciles = pd.read_csv(deciles_path) if deciles_path is not None else None
    metrics = dict(run.data.metrics)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    ablation_run_id = children[0].info.run_id if children else None
    if ablation_run_id and not any(k.startswith("ablation_test_") for k in metrics):
        metrics.update({f"ablation_{k}": v for k, v in children[0].data.metrics.items() if k.startswith("test_")})
    try:
        predictions, shap_sample = load_report_inputs(run_id, tracking_uri=uri)
    except MissingReportInputs as err:
        predictions = shap_sample = None
        notes.append(str(err))
    return RunRecord(run_id=run_id, metrics=metrics, params=dict(run.data.params), tags=dict(run.data.tags),
                     importance=importance, model_name=name, model_version=version, model_uri=resolved_uri,
                     aliases=aliases, ablation_run_id=ablation_run_id, deciles=deciles, predictions=predictions,
                     shap_sample=shap_sample, notes=notes)


# ---------------------------------------------------------------------------------------------
# Assembling the page


@dataclass
class ReportPage:
    """Everything the template renders (sections in reading order)."""

    run_id: str
    title: str
    subtitle: str
    summary: list[str]
    drivers: list[str]
    caution: str
    importance_figures: list[Figure]
    importance_tables: list[Table]
    dependence_figures: list[Figure]
    dependence_notes: list[str]
    quadrant_text: str
    quadrant_figures: list[Figure]
    quadrant_tables: list[Table]
    quadrant_notes: list[str]
    decile_figures: list[Figure]
    decile_tables: list[Table]
    decile_notes: list[str]
    ablation_text: list[str]
    ablation_tables: list[Table]
    card: list[tuple[str, str]]
    card_tables: list[Table]
    limitations: list[str]
    notes: list[str]

    @property
    def figures(self) -> list[Figure]:
        return (self.importance_figures + self.dependence_figures + self.quadrant_figures + self.decile_figures)


def _float(metrics: dict, key: str) -> float:
    value = metrics.get(key)
    return float(value) if value is not None else math.nan


def _summary(record: RunRecord, features: pd.DataFrame) -> tuple[list[str], list[str], str]:
    m = record.metrics
    drivers = []
    for row in top_drivers(features).itertuples():
        what = f" ({row.description})" if row.description else ""
        drivers.append(f"{row.feature}{what}: {fmt_share(row.share)} of the attribution; {row.effect}.")
    new_count = ""
    if record.predictions is not None:
        n_new = int((record.predictions["tenure_days"] < NEW_CUSTOMER_TENURE_DAYS).sum())
        new_count = f", {n_new:,} customers"
    summary = [
        lift_sentence(_float(m, "social_lift_norm_gini"), _float(m, "social_lift_norm_gini_lo"),
                      _float(m, "social_lift_norm_gini_hi"), who="all test customers"),
        lift_sentence(_float(m, "social_lift_norm_gini_new"), _float(m, "social_lift_norm_gini_new_lo"),
                      _float(m, "social_lift_norm_gini_new_hi"),
                      who=f"new customers (under one year of tenure{new_count})"),
    ]
    by_family = family_importance(record.importance)
    social = by_family[by_family["social"]]
    detail = ", ".join(f"{r.family} {fmt_share(r.share)}" for r in social.itertuples())
    summary.append(f"Social families ({', '.join(SOCIAL_FAMILIES)}) account for "
                   f"{fmt_share(social_share(record.importance))} of the model's attribution"
                   + (f" ({detail})." if detail else "; this model has no social features."))
    topics = record.market_topics
    market = (f"the market topics configured for this run ({', '.join(topics)})" if topics
              else "the business's market (no market topics were configured for this run, so topical "
                   "relevance could not be measured)")
    caution = ("Influence is one input among many, never the value itself. Reach matters only where the audience "
               f"cares about what the business sells: followers without topical relevance to {market} are not "
               "value, and a large audience on unrelated topics can sit beside a small basket. These figures "
               "describe this business, market and period; measure them again before applying them elsewhere.")
    return summary, drivers, caution


def _importance_section(record: RunRecord, features: pd.DataFrame):
    from serving.report import figures as charts

    by_family = family_importance(record.importance)
    alt = "Horizontal bar chart of the share of attribution per feature family: " + "; ".join(
        f"{r.family}{' (social)' if r.social else ''} {fmt_share(r.share)}" for r in by_family.itertuples()) + "."
    family_fig = Figure("family_importance", charts.png_bytes(charts.family_importance_chart(by_family)), alt,
                        "Share of the model's attribution (mean absolute SHAP value on the model's log scale, "
                        "test window) per feature family. Social families are hatched and marked '(social)'.")
    head = features.head(20)
    alt = "Horizontal bar chart of the 20 largest features: " + "; ".join(
        f"{r.feature} {fmt_share(r.share)}, {r.effect}" for r in head.itertuples()) + "."
    feature_fig = Figure("feature_importance", charts.png_bytes(charts.feature_importance_chart(head)), alt,
                         f"The {len(head)} features the model relies on most, with the direction of their effect "
                         "(Spearman correlation of a feature's SHAP value with its value). Hatched bars belong to "
                         "social families.")
    family_table = Table(
        "Attribution by family", ["family", "social", "features", "share of attribution", "mean |SHAP| (log scale)"],
        [(r.family, ["yes" if r.social else "no", str(r.features), fmt_share(r.share), f"{r.mean_abs_shap:.4f}"])
         for r in by_family.itertuples()], [False, False, True, True, True])
    money = "mean |contribution| (currency)"
    feature_table = Table(
        f"Attribution by feature (top {min(25, len(features))} of {len(features)})",
        ["feature", "family", "share of attribution", "mean |SHAP| (log scale)", money, "direction", "effect",
         "what it is"],
        [(r.feature, [r.family + (" (social)" if r.social else ""), fmt_share(r.share), f"{r.mean_abs_shap:.4f}",
                      fmt_number(r.mean_abs_contribution, 2),
                      "–" if not np.isfinite(r.direction) else f"{r.direction:+.2f}", r.effect, r.description])
         for r in features.head(25).itertuples()],
        [False, False, True, True, True, True, False, False])
    return [family_fig, feature_fig], [family_table, feature_table]


def _dependence_section(record: RunRecord):
    from serving.report import figures as charts

    sample = record.shap_sample
    figures, notes = [], []
    if sample is None:
        return [], [("Dependence plots need the run's report inputs (customer-level SHAP values), which this run "
                     "does not have.")]
    for alternatives in DEPENDENCE_FEATURES:
        present = [f for f in alternatives if f in sample.columns and f"shap__{f}" in sample.columns]
        usable = [f for f in present if sample[f].notna().any()]
        if not usable:
            why = "is not among this model's features" if not present else "has no values in the test window"
            notes.append(f"{' / '.join(alternatives)} {why}: no dependence plot.")
            continue
        feature = usable[0]
        values = pd.to_numeric(sample[feature], errors="coerce")
        contrib = sample[f"shap__{feature}"]
        missing = int(values.isna().sum())
        known = values.notna()
        corr = pd.Series(values[known]).rank().corr(pd.Series(contrib[known]).rank()) if known.sum() > 2 else math.nan
        trend = effect_text(corr)
        spread = f"{contrib[known].min():,.0f} to {contrib[known].max():,.0f}" if known.any() else "–"
        alt = (f"Scatter plot of {feature} (x) against its contribution to predicted value in currency (y) for "
               f"{int(known.sum()):,} sampled customers, with a binned mean line. Trend: {trend}; contributions "
               f"range from {spread}.")
        caption = (f"{feature}: {describe_feature(feature, feature_descriptions())}. Each point is one sampled test "
                   f"customer; the line is the mean contribution within value bins. {missing:,} sampled customers "
                   f"have no value (no social data or not measured) and are not drawn; their mean contribution is "
                   f"{contrib[~known].mean():,.2f}." if missing else
                   f"{feature}: {describe_feature(feature, feature_descriptions())}. Each point is one sampled test "
                   "customer; the line is the mean contribution within value bins.")
        figures.append(Figure(f"dependence_{feature}",
                              charts.png_bytes(charts.dependence_chart(values, contrib, feature=feature)), alt, caption))
    return figures, notes


def _quadrant_section(record: RunRecord):
    from serving.report import figures as charts

    if record.shap_sample is None or record.predictions is None:
        return "", [], [], ["The influence x value quadrant needs the run's report inputs, which this run does not have."]
    column, label = influence_measure(record.shap_sample)
    if column is None:
        return "", [], [], [f"No quadrant: {label}."]
    cells, frame, median, threshold = influence_value_quadrant(record.predictions, record.shap_sample, column)
    with_social = frame[frame["influence"].notna()]
    text = (f"Customers are split by {label} (above or at/below the median of {median:,.2f} among the "
            f"{len(with_social):,} sampled customers with social data; customers without social data form their own "
            f"row, because missing is not low) and by predicted value (the top 20% of all "
            f"{len(record.predictions):,} test customers, predicted value at least {threshold:,.2f}, vs the rest). "
            f"Counts are of the {len(frame):,} customers in the seeded SHAP sample. "
            + quadrant_sentence(cells, label))
    table = Table(
        "Influence x value: customers, value and examples per cell",
        ["cell", "influence", "predicted value", "customers", "share of customers", "share of predicted value",
         "share of realised value", "mean predicted value", "example customer ids"],
        [(r.cell, [r.influence_group, r.value_label, f"{r.customers:,}", fmt_share(r.share_of_customers),
                   fmt_share(r.share_of_predicted_value), fmt_share(r.share_of_actual_value),
                   fmt_number(r.mean_predicted, 2), r.examples or "–"]) for r in cells.itertuples()],
        [False, False, False, True, True, True, True, True, False])
    figures = []
    if len(with_social):
        alt = (f"Scatter plot of {label} (x) against predicted value on a log scale (y) for {len(with_social):,} "
               f"sampled customers with social data; triangles mark the top 20% by predicted value, circles the rest. "
               "Corner labels: " + "; ".join(
                   f"{r.cell}: {r.customers:,} customers, {fmt_share(r.share_of_predicted_value)} of value"
                   for r in cells.itertuples() if r.influence_group != "none") + ".")
        fig = charts.quadrant_chart(with_social, influence_label=label, influence_median=median,
                                    value_threshold=threshold, cells=cells)
        figures.append(Figure("influence_value_quadrant", charts.png_bytes(fig), alt,
                              f"Influence x value for sampled customers with social data. Dashed line: median "
                              f"{label}; dash-dot line: the top-20% cut of predicted value. Customers without social "
                              "data are not drawn (see the table)."))
    return text, figures, [table], []


def _decile_section(record: RunRecord):
    from serving.report import figures as charts

    notes = []
    if record.predictions is not None:
        deciles, notes = decile_data(record.predictions, record.horizon_days)
    elif record.deciles is not None:
        deciles = deciles_from_csv(record.deciles, record.horizon_days)
        notes.append("Deciles come from the run's deciles.csv (no customer-level report inputs).")
    else:
        return [], [], ["This run has no decile table."]
    models = list(dict.fromkeys(deciles["model"]))
    top = deciles[deciles["decile"] == deciles["decile"].max()]
    alt = ("Line chart of the share of realised value per predicted decile, one line per model (" + ", ".join(models)
           + "). Top decile: " + "; ".join(f"{r.model} {fmt_share(r.share_of_actual)}" for r in top.itertuples()) + ".")
    lift = Figure("decile_lift", charts.png_bytes(charts.decile_lift_chart(deciles)), alt,
                  "Share of the test window's realised value held by each decile of predicted value (10 = highest). "
                  "A steeper rise to decile 10 means better ranking; 10% everywhere would be a random order. "
                  "Line styles and markers distinguish the models.")
    model_top = top[top["model"] == "model"]
    calib_alt = ("Calibration chart: mean predicted (x) against mean realised value (y) per decile, one line per "
                 "model, with the diagonal of perfect calibration."
                 + (f" Model's top decile: predicted {model_top['mean_predicted'].iloc[0]:,.0f}, realised "
                    f"{model_top['mean_actual'].iloc[0]:,.0f}." if len(model_top) else ""))
    calibration = Figure("calibration", charts.png_bytes(charts.calibration_chart(deciles)), calib_alt,
                         "Mean predicted vs mean realised value per customer in each predicted decile. Points on the "
                         "dotted diagonal are well calibrated; above it, the model under-predicts.")
    pivot = deciles.pivot(index="decile", columns="model", values="share_of_actual")[models]
    means = deciles.pivot(index="decile", columns="model", values="mean_actual")[models]
    predicted = deciles.pivot(index="decile", columns="model", values="mean_predicted")[models]
    columns = ["decile"]
    for model in models:
        columns += [f"{model}: share of realised value", f"{model}: mean predicted", f"{model}: mean realised"]
    rows = []
    for decile in pivot.index[::-1]:
        cells = []
        for model in models:
            cells += [fmt_share(pivot.loc[decile, model]), fmt_number(predicted.loc[decile, model], 0),
                      fmt_number(means.loc[decile, model], 0)]
        rows.append((str(int(decile)), cells))
    table = Table("Deciles of predicted value: realised share, mean predicted and mean realised value", columns,
                  rows, [True] * (len(columns) - 1) + [True])
    return [lift, calibration], [table], notes


def _ablation_section(record: RunRecord):
    m = record.metrics
    ablation = {k[len("ablation_"):]: v for k, v in m.items() if k.startswith("ablation_test_")}
    if not ablation:
        return ["This run has no social ablation (trained with social_ablation off, or without social features)."], []
    table = ablation_table(m, ablation)
    metrics_table = Table(
        "Test-window metrics with and without the social families",
        ["metric", "with social data", "without social data", "difference"],
        [(r.metric, [fmt_metric(r.metric, r.with_social), fmt_metric(r.metric, r.without_social),
                     "–" if not np.isfinite(r.difference) else
                     (f"{r.difference:+.4f}" if r.metric not in ("mean absolute error", "root mean squared error",
                                                                  "total error (%)") else f"{r.difference:+,.1f}")])
         for r in table.itertuples()], [False, True, True, True])
    lifts = []
    for suffix, who in (("", "all test customers"), ("_new", "new customers (tenure under one year)")):
        est, lo, hi = (_float(m, f"social_lift_norm_gini{suffix}"), _float(m, f"social_lift_norm_gini{suffix}_lo"),
                       _float(m, f"social_lift_norm_gini{suffix}_hi"))
        covers = "yes" if np.isfinite(lo) and np.isfinite(hi) and lo <= 0 <= hi else "no"
        lifts.append((who, [points(est) if np.isfinite(est) else "–", points(lo) if np.isfinite(lo) else "–",
                            points(hi) if np.isfinite(hi) else "–", covers]))
    lift_table = Table("Social lift in normalised Gini points (1 point = 0.01), paired bootstrap 90% interval",
                       ["customers", "lift", "interval low", "interval high", "interval covers zero"], lifts,
                       [False, True, True, True, False])
    interval = record.params.get("interval", "0.9")
    resamples = record.params.get("bootstrap_resamples", "?")
    text = [f"The ablation refits the same pipeline without the social families ({', '.join(SOCIAL_FAMILIES)}) "
            f"and scores both models on the same test customers. The lift is the difference in normalised Gini; its "
            f"interval comes from {resamples} paired bootstrap resamples of customers (level {interval})."
            + (f" Ablation run: {record.ablation_run_id}." if record.ablation_run_id else "")]
    return text, [metrics_table, lift_table]


def _windows(record: RunRecord) -> dict:
    try:
        return json.loads(record.tags.get("windows", "{}"))
    except ValueError:
        return {}


def _model_card(record: RunRecord):
    m, tags = record.metrics, record.tags
    windows = _windows(record)
    horizon = record.horizon_days
    as_of, test_cutoff = tags.get("as_of", "?"), tags.get("test_cutoff", windows.get("test_cutoff", "?"))
    sizes = ", ".join(f"{name} {int(m[f'rows_{name}']):,}" for name in ("train", "validation", "test", "refit")
                      if f"rows_{name}" in m)
    card = [
        ("model", f"{record.model_name or '?'} version {record.model_version or '?'}"
                  + (f" (aliases: {', '.join(record.aliases)})" if record.aliases else "")),
        ("model URI", record.model_uri or "–"),
        ("training run", record.run_id),
        ("objective", tags.get("objective", record.params.get("model.objective", "?"))),
        ("what it predicts", f"each customer's net revenue (refunds included) over the next {horizon} days"),
        ("as of", f"{as_of} (the registered model is refit on label windows that end by this date)"),
        ("test window", (f"features before {test_cutoff}; realised value from {test_cutoff} to {as_of} "
                         f"({horizon} days), never seen in training or early stopping")),
        ("training cutoffs", ", ".join(windows.get("train_cutoffs", [])) or "–"),
        ("early-stopping cutoffs", ", ".join(windows.get("validation_cutoffs", [])) or "–"),
        ("refit cutoffs", ", ".join(windows.get("refit_cutoffs", [])) or "–"),
        ("rows (customer-windows)", sizes or "–"),
        ("features", f"{len(record.importance)} ({int(record.importance['family'].isin(SOCIAL_FAMILIES).sum())} social)"),
        ("SHAP sample", f"{len(record.shap_sample):,} test customers (seeded)" if record.shap_sample is not None else "–"),
        ("market topics", ", ".join(record.market_topics) or "none configured"),
        ("BG/NBD baseline", tags.get("baseline_bgnbd_status", "–")),
        ("feature manifest hash", tags.get("feature_manifest_hash", "–")),
        ("input fingerprint", tags.get("input_fingerprint", "–")),
        ("code commit", tags.get("git_commit", "–")),
        ("promotion", f"{tags.get('promotion_decision', '–')}: {tags.get('promotion_reason', '')}".strip(": ")),
    ]
    table = metrics_vs_baselines(m, horizon)
    baseline = f"last {horizon} days"
    metrics_table = Table(
        f"Test-window metrics: model vs baselines ({baseline} = next period looks like the last; BG/NBD = "
        "buy-till-you-die purchases x Gamma-Gamma spend)",
        ["metric", "model", baseline, "BG/NBD", "what it measures"],
        [(metric, [fmt_metric(metric, model), fmt_metric(metric, last), fmt_metric(metric, bgnbd), meaning])
         for metric, model, last, bgnbd, meaning in zip(table["metric"], table["model"], table[baseline],
                                                         table["BG/NBD"], table["meaning"])],
        [False, True, True, True, False])
    mae = _float(m, "test_mae")
    limitations = [
        (f"Out-of-time evaluation on one test window ({test_cutoff} to {as_of}); figures can move on other "
         "periods, and the registered model extrapolates the same patterns one horizon further."),
        ("Attribution (SHAP) shows what the model uses, not what causes value: changing a feature (for example "
         "buying followers) need not change a customer's value."),
        ("Social features exist only for customers linked to a social profile; no social data is not low "
         "influence, and linkage quality limits what social data can add."),
        "Topical relevance is measured against the configured market topics"
        + (f" ({', '.join(record.market_topics)})" if record.market_topics else " (none were configured here)")
        + "; the vendor influence score is a third-party number whose method we do not control.",
        "The model ranks groups of customers better than it predicts any one of them"
        + (f": the mean absolute error is {mae:,.0f} per customer." if np.isfinite(mae) else "."),
        "Values are in the currency of the source data; refunds reduce value.",
    ]
    if not tags.get("baseline_bgnbd_status", "ok").startswith("ok"):
        limitations.append(f"The BG/NBD baseline failed ({tags['baseline_bgnbd_status']}), so it is not compared.")
    return card, [metrics_table], limitations


def assemble_page(record: RunRecord) -> ReportPage:
    """All sections of the report for one run (figures rendered, text written)."""
    features = feature_importance_table(record.importance, record.shap_sample)
    summary, drivers, caution = _summary(record, features)
    importance_figures, importance_tables = _importance_section(record, features)
    dependence_figures, dependence_notes = _dependence_section(record)
    quadrant_text, quadrant_figures, quadrant_tables, quadrant_notes = _quadrant_section(record)
    decile_figures, decile_tables, decile_notes = _decile_section(record)
    ablation_text, ablation_tables = _ablation_section(record)
    card, card_tables, limitations = _model_card(record)
    version = f"{record.model_name} v{record.model_version}" if record.model_name else f"run {record.run_id}"
    subtitle = (f"{version} · as of {record.tags.get('as_of', '?')} · predicted net revenue over the next "
                f"{record.horizon_days} days")
    return ReportPage(
        run_id=record.run_id, title="Customer value: what drives it, and what social influence adds", subtitle=subtitle,
        summary=summary, drivers=drivers, caution=caution,
        importance_figures=importance_figures, importance_tables=importance_tables,
        dependence_figures=dependence_figures, dependence_notes=dependence_notes,
        quadrant_text=quadrant_text, quadrant_figures=quadrant_figures, quadrant_tables=quadrant_tables,
        quadrant_notes=quadrant_notes, decile_figures=decile_figures, decile_tables=decile_tables,
        decile_notes=decile_notes, ablation_text=ablation_text, ablation_tables=ablation_tables, card=card,
        card_tables=card_tables, limitations=limitations, notes=list(record.notes),
    )


def render_html(page: ReportPage) -> str:
    """The page as one HTML document (inline CSS, figures as data URIs, no script)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(page=page)


def build_report(*, model_uri: str | None = None, run_id: str | None = None, out_dir) -> Path:
    """Write out_dir/report.html and the figures as PNG; log the same files to the run under ``report/``.

    ``model_uri`` defaults to models:/customer-value@champion (its version's training run is reported);
    pass ``run_id`` instead to report on any training run.
    """
    import mlflow

    from training import tracking

    uri = tracking.tracking_uri()
    record = load_run(model_uri=model_uri, run_id=run_id, tracking_uri=uri)
    page = assemble_page(record)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for figure in page.figures:
        path = out / f"{figure.name}.png"
        path.write_bytes(figure.png)
        written.append(path)
    html = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(render_html(page), encoding="utf-8")
    tmp.replace(html)
    written.append(html)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    for path in written:
        client.log_artifact(record.run_id, str(path), artifact_path=REPORT_ARTIFACT_DIR)
    return html
