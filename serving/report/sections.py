"""The report's sections built from a run record (text, tables, drawn figures); ``assemble_page``."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from features.catalog import SOCIAL_FAMILIES
from serving.plain_words import family_label, label
from serving.report import figures as charts
from serving.report.content import (
    ablation_table,
    decile_data,
    deciles_from_csv,
    describe_feature,
    effect_text,
    family_importance,
    feature_descriptions,
    feature_importance_table,
    fmt_metric,
    fmt_number,
    fmt_share,
    influence_measure,
    influence_value_quadrant,
    lift_sentence,
    metrics_vs_baselines,
    points,
    quadrant_sentence,
    social_headline,
    social_share,
    top_drivers,
)
from serving.report.current_scores import CurrentScores
from serving.report.page import Figure, ReportPage, Table
from serving.report.run_record import RunRecord
from serving.report.todays_customers import coverage_sentence, todays_customers

NEW_CUSTOMER_TENURE_DAYS = 365
# Dependence plots, in order; each entry is a list of alternatives, the first present is drawn.
DEPENDENCE_FEATURES = (
    ("influence_score_max",),
    ("topical_share", "topical_engagement"),
    ("followers_log",),
    ("referrals_made",),
)


def _float(metrics: dict, key: str) -> float:
    value = metrics.get(key)
    return float(value) if value is not None else math.nan


def has_social_data(record: RunRecord) -> bool:
    """Whether the run had social data to weigh (runs before the decision: whether it had social features)."""
    decision = record.tags.get("social_decision")
    if decision is not None:
        return not decision.startswith("no social data")
    return bool(record.importance["family"].isin(SOCIAL_FAMILIES).any())


def _summary(record: RunRecord, features: pd.DataFrame) -> tuple[list[str], list[str], str]:
    m = record.metrics
    drivers = []
    for row in top_drivers(features).itertuples():
        drivers.append(f"{label(row.feature)}: the model leans on it for {fmt_share(row.share)} of what moves "
                       f"its predictions; {row.effect}.")
    interval = float(record.params.get("interval", 0.9) or 0.9)
    headline = social_headline(record.tags, m, record.importance, interval=interval)
    summary = [headline] if headline else []
    if has_social_data(record) and record.tags.get("social_included", "true") == "true":
        new_count = ""
        if record.predictions is not None:
            n_new = int((record.predictions["tenure_days"] < NEW_CUSTOMER_TENURE_DAYS).sum())
            new_count = f", {n_new:,} customers"
        if headline is None:
            summary.append(lift_sentence(_float(m, "social_lift_norm_gini"), _float(m, "social_lift_norm_gini_lo"),
                                         _float(m, "social_lift_norm_gini_hi"), who="all test customers"))
        summary.append(lift_sentence(_float(m, "social_lift_norm_gini_new"), _float(m, "social_lift_norm_gini_new_lo"),
                                     _float(m, "social_lift_norm_gini_new_hi"),
                                     who=f"new customers (under one year of tenure{new_count})"))
        by_family = family_importance(record.importance)
        social = by_family[by_family["social"]]
        detail = ", ".join(f"{r.family} {fmt_share(r.share)}" for r in social.itertuples())
        summary.append(f"The model leans on the social families ({', '.join(SOCIAL_FAMILIES)}) for "
                       f"{fmt_share(social_share(record.importance))} of its attribution"
                       + (f" ({detail})" if detail else "")
                       + ": how much it uses them, not value caused by influence; the lift above is what "
                         "the data adds.")
    kind = record.tags.get("model_kind", "lightgbm")
    if kind.startswith("fallback:"):
        summary.insert(0, f"This model is a fallback ({kind}): the learned model was not served because "
                          f"{record.tags.get('model_verdict', 'it did not beat that baseline')}. Its predictions "
                          "are the baseline's; the drivers below describe the features of the learned model's "
                          "inputs, not a learned effect.")
    topics = record.market_topics
    market = (f"the market topics configured for this run ({', '.join(topics)})" if topics
              else "the business's market (no market topics were configured for this run, so topical "
                   "relevance could not be measured)")
    caution = ("Influence is one input among many, never the value itself. Reach matters only where the audience "
               f"cares about what the business sells: followers without topical relevance to {market} are not "
               "value, and a large audience on unrelated topics can sit beside a small basket. These figures "
               "describe this business, market and period; measure them again before applying them elsewhere.")
    return summary, drivers, caution


def _importance_section(record: RunRecord, features: pd.DataFrame, currency: str | None):
    by_family = family_importance(record.importance)
    shown = by_family.assign(family=[family_label(f) for f in by_family["family"]])
    alt = "Horizontal bar chart of the share of what moves the predictions, per kind of data: " + "; ".join(
        f"{r.family}{' (social)' if r.social else ''} {fmt_share(r.share)}" for r in shown.itertuples()) + "."
    family_fig = Figure("family_importance", charts.png_bytes(charts.family_importance_chart(shown)), alt,
                        "How much the model leans on each kind of data (for analysts: share of the mean absolute "
                        "SHAP value on the model's log scale, test window). Social families (social media data) "
                        "are hatched and marked '(social)'.")
    head = features.head(20)
    labelled = head.assign(feature=[label(f) for f in head["feature"]])
    alt = "Horizontal bar chart of the 20 customer facts the model relies on most: " + "; ".join(
        f"{r.feature} {fmt_share(r.share)}, {r.effect}" for r in labelled.itertuples()) + "."
    feature_fig = Figure("feature_importance", charts.png_bytes(charts.feature_importance_chart(labelled)), alt,
                         f"The {len(head)} customer facts the model relies on most, with the direction of their "
                         "effect (for analysts: Spearman correlation of a feature's SHAP value with its value). "
                         "Hatched bars are social media data.")
    family_table = Table(
        "For analysts: attribution by feature family",
        ["kind of data", "family", "social", "features", "share of attribution", "mean |SHAP| (log scale)"],
        [(family_label(r.family), [r.family, "yes" if r.social else "no", str(r.features), fmt_share(r.share),
                                   f"{r.mean_abs_shap:.4f}"])
         for r in by_family.itertuples()], [False, False, False, True, True, True])
    contribution = f"average effect on value ({currency})" if currency else "average effect on value"
    feature_table = Table(
        f"For analysts: attribution by feature (top {min(25, len(features))} of {len(features)})",
        ["customer fact", "column", "family", "share of attribution", "mean |SHAP| (log scale)", contribution,
         "direction", "effect", "what it is"],
        [(label(r.feature), [r.feature, r.family + (" (social)" if r.social else ""), fmt_share(r.share),
                             f"{r.mean_abs_shap:.4f}", fmt_number(r.mean_abs_contribution, 2),
                             "–" if not np.isfinite(r.direction) else f"{r.direction:+.2f}", r.effect,
                             r.description])
         for r in features.head(25).itertuples()],
        [False, False, False, True, True, True, True, False, False])
    return [family_fig, feature_fig], [family_table, feature_table]


def _dependence_section(record: RunRecord, currency: str | None = None):
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
        name = label(feature)
        alt = (f"Scatter plot of {name} (x) against its contribution to predicted value in currency (y) for "
               f"{int(known.sum()):,} sampled customers, with a binned mean line. Trend: {trend}; contributions "
               f"range from {spread}.")
        caption = (f"{name} ({feature}: {describe_feature(feature, feature_descriptions())}). Each point is one sampled test "
                   f"customer; the line is the mean contribution within value bins. {missing:,} sampled customers "
                   f"have no value (no social data or not measured) and are not drawn; their mean contribution is "
                   f"{contrib[~known].mean():,.2f}." if missing else
                   f"{name} ({feature}: {describe_feature(feature, feature_descriptions())}). Each point is one "
                   "sampled test customer; the line is the mean contribution within value bins.")
        figures.append(Figure(f"dependence_{feature}",
                              charts.png_bytes(charts.dependence_chart(values, contrib, feature=name,
                                                                       currency=currency)), alt, caption))
    return figures, notes


def _quadrant_section(record: RunRecord, *, examples: bool = True):
    """The quadrant text, figure and table; ``examples=False`` names no back-test customer (the report
    then has today's top customers from the current scores, and examples from the past would contradict them)."""
    if record.shap_sample is None or record.predictions is None:
        return "", [], [], ["The influence x value quadrant needs the run's report inputs, which this run does not have."]
    column, label = influence_measure(record.shap_sample)
    if column is None:
        return "", [], [], [f"No quadrant: {label}."]
    cells, frame, median, threshold = influence_value_quadrant(record.predictions, record.shap_sample, column,
                                                               examples=3 if examples else 0)
    with_social = frame[frame["influence"].notna()]
    text = (f"Customers are split by {label} (above or at/below the median of {median:,.2f} among the "
            f"{len(with_social):,} sampled customers with social data; customers without social data form their own "
            f"row, because missing is not low) and by predicted value (the top 20% of all "
            f"{len(record.predictions):,} test customers, predicted value at least {threshold:,.2f}, vs the rest). "
            f"Counts are of the {len(frame):,} customers in the seeded SHAP sample. "
            + quadrant_sentence(cells, label))
    columns = ["cell", "influence", "predicted value", "customers", "share of customers", "share of predicted value",
               "share of realised value", "mean predicted value"]
    rows = [(r.cell, [r.influence_group, r.value_label, f"{r.customers:,}", fmt_share(r.share_of_customers),
                      fmt_share(r.share_of_predicted_value), fmt_share(r.share_of_actual_value),
                      fmt_number(r.mean_predicted, 2)] + ([r.examples or "–"] if examples else []))
            for r in cells.itertuples()]
    table = Table(
        "Influence x value: customers and value per cell" + (", with examples from the test window" if examples
                                                             else " (test window)"),
        columns + (["example customer ids"] if examples else []), rows,
        [False, False, False, True, True, True, True, True] + ([False] if examples else []))
    if not examples:
        text += (" The customers counted here are from the test window; whom to contact today is in the top "
                 "customers of the current scores, above.")
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


def _decile_section(record: RunRecord, currency: str | None = None):
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
    calibration = Figure("calibration", charts.png_bytes(charts.calibration_chart(deciles, currency=currency)), calib_alt,
                         "Mean predicted vs mean realised value per customer in each predicted decile. Points on the "
                         "dotted diagonal are well calibrated; above it, the model under-predicts.")
    pivot = deciles.pivot(index="decile", columns="model", values="share_of_actual")[models]
    means = deciles.pivot(index="decile", columns="model", values="mean_actual")[models]
    predicted = deciles.pivot(index="decile", columns="model", values="mean_predicted")[models]
    columns = ["decile"]
    for model in models:
        unit = f" ({currency})" if currency else ""
        columns += [f"{model}: share of realised value", f"{model}: mean predicted{unit}",
                    f"{model}: mean realised{unit}"]
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
    refits = record.params.get("social_refits", "1")
    text = [f"The run fits the same pipeline with and without the social families ({', '.join(SOCIAL_FAMILIES)}) "
            f"{refits} times (seeds) and scores both on the same customers. The lift is the difference in "
            f"normalised Gini: what the data adds. Its interval comes from {resamples} bootstrap resamples of "
            f"customers applied to every refit pair (level {interval}), so refitting noise alone cannot make it "
            "exclude zero. Social data stays in the registered model only when the lift's interval on the "
            "validation window (never the test window) lies above zero."
            + (f" Decision: {record.tags['social_decision']}." if record.tags.get("social_decision") else "")
            + (f" Ablation run: {record.ablation_run_id}." if record.ablation_run_id else "")]
    return text, [metrics_table, lift_table]


def _windows(record: RunRecord) -> dict:
    try:
        return json.loads(record.tags.get("windows", "{}"))
    except ValueError:
        return {}


def _model_card(record: RunRecord, currency: str | None = None):
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
        ("value ranges (80%)", coverage_sentence(record).removeprefix("Value ranges: ")),
        ("currency", currency or "not labelled (amounts in the currency of the source data)"),
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
        (f"Values are in {currency}, the currency of the source data; refunds reduce value." if currency
         else "Values are in the currency of the source data; refunds reduce value."),
    ]
    if not tags.get("baseline_bgnbd_status", "ok").startswith("ok"):
        limitations.append(f"The BG/NBD baseline failed ({tags['baseline_bgnbd_status']}), so it is not compared.")
    return card, [metrics_table], limitations


def report_currency(explicit: str | None, scores: CurrentScores | None, record: RunRecord) -> str | None:
    """The currency money is labelled with: --currency, else the scores' manifest, else the training
    run's ``currency`` tag or param; None (plain amounts) when none says."""
    for value in (explicit, scores.currency if scores is not None else None, record.tags.get("currency"),
                  record.params.get("currency")):
        if value and str(value).strip() and str(value).strip().lower() != "none":
            return str(value).strip()
    return None


def assemble_page(record: RunRecord, scores: CurrentScores | None = None, *, currency: str | None = None) -> ReportPage:
    """All sections of the report for one run (figures rendered, text written); with ``scores``, the
    decision makers' section from today's scores, and no example customer from the test window."""
    currency = report_currency(currency, scores, record)
    features = feature_importance_table(record.importance, record.shap_sample)
    summary, drivers, caution = _summary(record, features)
    decisions = todays_customers(record, scores, currency) if scores is not None else None
    importance_figures, importance_tables = _importance_section(record, features, currency)
    dependence_figures, dependence_notes = _dependence_section(record, currency)
    quadrant_text, quadrant_figures, quadrant_tables, quadrant_notes = _quadrant_section(
        record, examples=scores is None)
    decile_figures, decile_tables, decile_notes = _decile_section(record, currency)
    ablation_text, ablation_tables = _ablation_section(record)
    card, card_tables, limitations = _model_card(record, currency)
    version = f"{record.model_name} v{record.model_version}" if record.model_name else f"run {record.run_id}"
    subtitle = (f"{version} · as of {record.tags.get('as_of', '?')} · predicted net revenue over the next "
                f"{record.horizon_days} days" + (f" ({currency})" if currency else "")
                + (f" · today's scores as of {(scores.lineage.get('as_of') or '?')[:10]}" if scores is not None else ""))
    return ReportPage(
        run_id=record.run_id, title="Customer value: what drives it, and what social influence adds", subtitle=subtitle,
        summary=summary, drivers=drivers, caution=caution, decisions=decisions,
        importance_figures=importance_figures, importance_tables=importance_tables,
        dependence_figures=dependence_figures, dependence_notes=dependence_notes,
        quadrant_text=quadrant_text, quadrant_figures=quadrant_figures, quadrant_tables=quadrant_tables,
        quadrant_notes=quadrant_notes, decile_figures=decile_figures, decile_tables=decile_tables,
        decile_notes=decile_notes, ablation_text=ablation_text, ablation_tables=ablation_tables,
        social_data=has_social_data(record), card=card,
        card_tables=card_tables, limitations=limitations, notes=list(record.notes),
    )
