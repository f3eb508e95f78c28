"""The decision makers' section from today's scores: tiers, the top tier's first customers, value ranges, drift.

Sentences and tables only (serving.report.page types); the scores are read by
serving.report.current_scores, the run by serving.report.run_record.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from serving.plain_words import label, money, plain_reason
from serving.report.content import fmt_share
from serving.report.current_scores import TIER_LABELS, CurrentScores
from serving.report.page import Decisions, Table
from serving.report.run_record import RunRecord


def coverage_sentence(record: RunRecord, scores: CurrentScores | None = None) -> str:
    """How often the 80% value ranges held on the test window, from the training run (or the scores'
    manifest); "not measured" for models trained before ranges were calibrated."""
    interval = (scores.interval if scores is not None else None) or {}
    coverage = record.metrics.get("test_interval_coverage", interval.get("coverage_on_test"))
    level = record.metrics.get("interval_level", interval.get("level")) or 0.8
    if coverage is None or not np.isfinite(float(coverage)):
        return ("Value ranges: coverage not measured (this model's training run did not test its ranges on "
                "the test window).")
    return (f"Value ranges: each customer's range is meant to hold their realised value {100 * float(level):.0f}% "
            f"of the time; on the test window it held for {100 * float(coverage):.1f}% of customers.")


def drift_sentence(drift: dict | None) -> str:
    """The latest drift check of the scores (population stability index), in words."""
    if not drift:
        return "Drift: no drift check is recorded with these scores."
    status = drift.get("status", "not checked")
    if status == "not checked":
        return "Drift: not checked for these scores (the model has no reference population)."
    psi = drift.get("predictions")
    threshold = drift.get("threshold", 0.25)
    shift = (f" The shift in predicted values is {psi:.2f} (population stability index; above {threshold:g} counts "
             "as drift)." if isinstance(psi, (int, float)) and np.isfinite(psi) else "")
    features = drift.get("features") or {}
    if status == "drift":
        moved = [label(f) for f in sorted(drift.get("drifted", []), key=lambda f: -float(features.get(f, 0.0)))]
        return ("Drift warning: today's customers differ from those the model learned from"
                + (f", most in: {', '.join(moved[:5])}" + (" and others" if len(moved) > 5 else "") if moved else "")
                + ". Treat the scores with care and consider retraining." + shift)
    largest = max(features.items(), key=lambda kv: kv[1]) if features else None
    return ("Drift: today's customers look like those the model learned from." + shift
            + (f" The largest change in one customer fact is {label(largest[0])} ({largest[1]:.2f})."
               if largest else ""))


def todays_customers(record: RunRecord, scores: CurrentScores, currency: str | None) -> Decisions:
    """Today's customers: the tier table, the top tier's first customers, value ranges and drift."""
    lineage = scores.lineage
    tiers = scores.tiers
    total = float(tiers["total_value"].sum())
    tier_rows = [(TIER_LABELS.get(r.tier, r.tier), [f"{int(r.customers):,}", money(r.total_value, currency),
                                                    money(r.mean_value, currency), fmt_share(r.share_of_value)])
                 for r in tiers.itertuples()]
    tier_rows.append(("All customers", [f"{scores.customers:,}", money(total, currency),
                                        money(total / scores.customers if scores.customers else math.nan, currency),
                                        fmt_share(1.0 if total else math.nan)]))
    source = "the scoring manifest" if scores.tiers_from_manifest else "the scores file"
    tier_table = Table(f"Predicted value by tier, today (from {source})",
                       ["tier", "customers", "total predicted value", "mean predicted value", "share of value"],
                       tier_rows, [False, True, True, True, True])

    top = scores.top
    has_range = bool({"value_p10", "value_p90"} <= set(top.columns) and top["value_p10"].notna().any())
    has_alive = bool("p_alive" in top.columns and top["p_alive"].notna().any())
    columns = ["rank", "customer id", "predicted value"] + (["likely range (80%)"] if has_range else []) \
        + (["chance still active"] if has_alive else []) + ["main reason"]
    rows = []
    for r in top.itertuples():
        cells = [str(r.customer_id), money(r.predicted_value, currency)]
        if has_range:
            cells.append(f"{money(r.value_p10, currency)} to {money(r.value_p90, currency)}")
        if has_alive:
            cells.append(fmt_share(r.p_alive))
        reason = getattr(r, "reason_1", None)
        cells.append(plain_reason(None if pd.isna(reason) else reason, currency) or "–")
        rows.append((f"{int(r.value_rank):,}", cells))
    tier_name = TIER_LABELS.get(scores.top_tier, scores.top_tier)
    top_table = Table(f"Today's most valuable customers: the first {len(rows)} of the {tier_name.lower()}",
                      columns, rows, [False, False, True] + [True] * (has_range + has_alive) + [False])

    top_share = tiers.loc[tiers["tier"] == scores.top_tier, "share_of_value"]
    horizon = lineage.get("horizon_days") or record.horizon_days
    intro = (f"{scores.customers:,} customers scored as of {(lineage.get('as_of') or '?')[:10]} with "
             f"{lineage.get('model_name', '?')} v{lineage.get('model_version', '?')}. Predicted value is each "
             f"customer's net revenue over the next {horizon} days"
             + (f", in {currency}" if currency else "") + "."
             + (f" The {tier_name.lower()} holds {fmt_share(float(top_share.iloc[0]))} of all predicted value."
                if len(top_share) else ""))
    findings = [coverage_sentence(record, scores), drift_sentence(scores.drift)]
    notes = []
    if not has_range:
        notes.append("No value ranges: these scores come from a model trained before ranges were calibrated.")
    if lineage.get("model_run_id") and lineage["model_run_id"] != record.run_id:
        notes.append(f"These scores come from training run {lineage['model_run_id']}, not the run this report "
                     f"describes ({record.run_id}): the drivers below belong to a different model.")
    return Decisions(intro=intro, tier_table=tier_table, top_table=top_table, findings=findings, notes=notes)
