"""The scoring core both engines share: options, output columns and lineage, reasons, accounting, manifest.

A scorer (serving.scoring.chunked on one machine, serving.scoring.dask_engine on a cluster) gets
predictions for every customer its own way; from there the output is made here: ranks and tiers
over the whole base (serving.scoring.tiers), reasons for the customers ranked high enough
(serving.scoring.reasons), the lineage columns naming the model and the cutoff, the check that every
customer of the source is accounted for, and the manifest (published with the scores by
serving.scoring.publish).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features import atomic
from features.errors import UserError
from features.ingest.contract import OPTIONAL_COLUMNS, ContractError
from features.ingest.export_checks import ExportRules
from features.tables import OPTIONAL_TABLES, TABLE_NAMES
from serving.scoring.model import ScoringModel
from serving.scoring.reasons import reason_columns, top_reasons
from serving.scoring.tiers import TIER_NAMES, tier_sizes
from training.config import currency_label
from training.drift import THRESHOLD, add_counts, bin_counts, drift_report

REASONS_FOR = ("top10", "all", "none")
SCORE_COLUMNS = ("customer_id", "predicted_value", "value_rank", "value_percentile", "value_tier")
# Per customer, beside the value: its 80% interval (training.intervals) and, where the model has the
# buy-till-you-die features, the chance the customer is still active and the orders expected in the
# horizon. Null where the model cannot tell (no interval table, no btyd family).
EXTRA_COLUMNS = ("value_p10", "value_p90", "p_alive", "expected_orders")
BTYD_COLUMNS = {"p_alive": "btyd_p_alive", "expected_orders": "btyd_expected_orders"}


def check_options(reasons: int, reasons_for: str, chunk_size: int, drift_threshold: float | None = None,
                  currency: str | None = None) -> None:
    """The scoring options a user gives, checked before anything is read."""
    if currency is not None:
        currency_label(currency)
    if drift_threshold is not None and not (0 < drift_threshold < 10):
        raise UserError(f"drift threshold must be a PSI above 0 (0.25 is usual), not {drift_threshold}")
    if reasons_for not in REASONS_FOR:
        raise UserError(f"reasons_for must be one of {', '.join(REASONS_FOR)}, not {reasons_for!r}")
    if reasons < 0:
        raise UserError(f"reasons must be >= 0, not {reasons}")
    if chunk_size < 1:
        raise UserError(f"chunk_size must be positive, not {chunk_size}")


def reason_cut(n: int, reasons: int, reasons_for: str) -> int:
    """Customers ranked 1..cut get reasons: the top 10% (ceil), all of them, or none."""
    if not reasons:
        return 0
    return {"top10": tier_sizes(n)["top_10pct"], "all": n, "none": 0}[reasons_for]


def lineage(model: ScoringModel, as_of: pd.Timestamp, scored_at: pd.Timestamp) -> dict[str, pa.Scalar]:
    """The columns every output row carries: which model scored it, as of when, for what horizon."""
    return {
        "model_name": pa.scalar(model.name, pa.string()),
        "model_version": pa.scalar(model.version, pa.string()),
        "model_run_id": pa.scalar(model.run_id, pa.string()),
        "model_kind": pa.scalar(model.kind, pa.string()),
        "as_of": pa.scalar(as_of.as_unit("ns").to_datetime64(), pa.timestamp("ns")),
        "horizon_days": pa.scalar(model.horizon_days, pa.int64()),
        "scored_at": pa.scalar(scored_at.as_unit("ns").to_datetime64(), pa.timestamp("ns")),
    }


def output_schema(reasons: int, constants: dict[str, pa.Scalar]) -> pa.Schema:
    """customer_id, predicted_value, value_rank, value_percentile, value_tier, value_p10, value_p90,
    p_alive, expected_orders, reason_1..k, lineage."""
    return pa.schema(
        [("customer_id", pa.string()), ("predicted_value", pa.float64()), ("value_rank", pa.int64()),
         ("value_percentile", pa.float64()), ("value_tier", pa.string())]
        + [(name, pa.float64()) for name in EXTRA_COLUMNS]
        + [(name, pa.string()) for name in reason_columns(reasons)]
        + [(name, value.type) for name, value in constants.items()]
    )


def output_columns(ids: pa.Array, values: np.ndarray, ranked: pd.DataFrame, extras: dict[str, np.ndarray],
                   reasons: dict[str, pa.Array]) -> dict[str, pa.Array]:
    """The scored columns of some customers, in their order (ranked: serving.scoring.tiers.value_ranks;
    extras: customer_extras, NaN written as null)."""
    return {
        "customer_id": ids,
        "predicted_value": pa.array(values, type=pa.float64()),
        "value_rank": pa.array(ranked["value_rank"].to_numpy(), type=pa.int64()),
        "value_percentile": pa.array(ranked["value_percentile"].to_numpy(), type=pa.float64()),
        "value_tier": pa.array(ranked["value_tier"].array, type=pa.string()),
        **{name: pa.array(extras[name], type=pa.float64(), from_pandas=True) for name in EXTRA_COLUMNS},
        **reasons,
    }


def customer_extras(model: ScoringModel, inputs: pd.DataFrame, values: np.ndarray) -> dict[str, np.ndarray]:
    """value_p10 / value_p90 (the model's interval for each predicted value) and p_alive /
    expected_orders (the btyd features of the model input); NaN where the model does not have them."""
    n = len(values)
    nothing = np.full(n, np.nan)
    interval = getattr(model.python_model, "value_interval", None)
    if interval is not None and getattr(model.python_model, "interval_table", None) and n:
        low, high = (np.asarray(a, dtype="float64") for a in interval(np.asarray(values, dtype="float64")))
    else:
        low, high = nothing, nothing
    out = {"value_p10": low, "value_p90": high}
    for name, feature in BTYD_COLUMNS.items():
        out[name] = (inputs[feature].to_numpy(dtype="float64", na_value=np.nan) if feature in inputs.columns
                     else nothing)
    return out


def concat_extras(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The extras of several parts, in part order."""
    return {name: np.concatenate([p[name] for p in parts]) if parts else np.array([], dtype="float64")
            for name in EXTRA_COLUMNS}


def tier_economics(values: np.ndarray, tiers) -> list[dict]:
    """Per tier (in tier order, tiers with customers only): customers, total and mean predicted
    value, and the tier's share of the whole base's predicted value."""
    frame = pd.DataFrame({"value": np.asarray(values, dtype="float64"), "tier": np.asarray(tiers, dtype=object)})
    grouped = frame.groupby("tier", sort=False)["value"].agg(["size", "sum"])
    total = float(frame["value"].sum())
    out = []
    for name in TIER_NAMES:
        if name in grouped.index and grouped.loc[name, "size"]:
            customers, value = int(grouped.loc[name, "size"]), float(grouped.loc[name, "sum"])
            out.append({"tier": name, "customers": customers, "total_value": round(value, 2),
                        "mean_value": round(value / customers, 2),
                        "share_of_value": round(value / total, 4) if total > 0 else None})
    return out


def output_table(columns: dict, order: np.ndarray, constants: dict[str, pa.Scalar],
                 schema: pa.Schema) -> pa.Table:
    """The rows ``order`` of ``columns`` (positions), with the lineage columns, as an Arrow table."""
    take = pa.array(order, type=pa.int64())
    arrays = [columns[name].take(take) for name in columns]
    arrays += [pa.repeat(value, len(take)) for value in constants.values()]
    return pa.Table.from_arrays(arrays, schema=schema)


@dataclass
class Reasons:
    """reason_1..k of one partition, aligned with its rows (null outside the wanted rows)."""

    columns: dict[str, pa.Array]
    rows: int = 0
    seconds: float = 0.0


def partition_reasons(model: ScoringModel, inputs, rank: np.ndarray, cut: int, reasons: int) -> Reasons:
    """Reasons for the rows of one partition ranked 1..cut. ``inputs``: the partition's model input
    frame, or a callable returning the rows at the given positions (read only when needed)."""
    names = reason_columns(reasons)
    wanted = np.flatnonzero(rank <= cut)
    found, seconds = None, 0.0
    if len(wanted):
        start = time.perf_counter()
        rows = inputs(wanted) if callable(inputs) else inputs.iloc[wanted]
        found = top_reasons(model.python_model.contributions(rows), rows, len(names))
        seconds = time.perf_counter() - start
    columns = {}
    for name in names:
        full = np.full(len(rank), None, dtype=object)
        if found is not None:
            full[wanted] = found[name].to_numpy(dtype=object, na_value=None)
        columns[name] = pa.array(full, type=pa.string())
    return Reasons(columns, len(wanted), seconds)


def tier_counts(tiers) -> dict[str, int]:
    """Customers per tier, in tier order, from every customer's tier (or from counts per tier)."""
    counts = dict(tiers) if isinstance(tiers, Counter) else pd.Series(tiers, dtype="str").value_counts().to_dict()
    return {name: int(counts[name]) for name in TIER_NAMES if counts.get(name)}


def check_accounted(customers_in: int, scored: int, not_yet: int, rejected: int) -> None:
    """Every customer row of the source is scored, not yet a customer at as_of, or rejected.

    The counts come from different places (predictions, signup dates, the contract check), so a
    customer lost or duplicated anywhere between the source and the output stops the run.
    """
    if scored + not_yet + rejected != customers_in or not_yet < 0:
        raise AssertionError(f"customers unaccounted for: {customers_in} in, {scored} scored, "
                             f"{not_yet} not yet customers, {rejected} rejected")


@dataclass
class ScoredRun:
    """What a scorer hands to the manifest, whichever engine ran."""

    out: Path
    model: ScoringModel
    tables: dict  # table -> rows_in, rows_kept, rows_rejected, top_reason
    scored: int
    not_yet: int
    tiers: dict[str, int]
    as_of: pd.Timestamp
    scored_at: pd.Timestamp
    rejects: list[Path]
    fingerprint: dict
    chunks: int
    chunk_size: int
    reasons: int
    reasons_for: str
    reasons_rows: int
    reasons_seconds: float
    unseen_levels: Counter = field(default_factory=Counter)
    features_seconds: float = 0.0
    predict_seconds: float = 0.0
    missing_tables: list[str] = field(default_factory=list)  # allowed by --allow-missing
    notes: list[str] = field(default_factory=list)  # facts about kept rows (ExportNotes.lines)
    economics: list[dict] = field(default_factory=list)  # tier_economics
    currency: str | None = None  # labels money in the summary, the report and the contact list
    drift: dict = field(default_factory=dict)  # training.drift.drift_report


# The optional tables each feature family reads: a model with features of that family needs them.
FAMILY_TABLES = {"social": ("social_profiles",), "coverage": ("social_profiles",),
                 "network": ("social_profiles", "social_interactions"),
                 "topical": ("social_profiles", "social_interactions"), "referral": ("referrals",)}


def export_rules(model: ScoringModel, decimal: str | None = None, max_amount: float | None = None) -> ExportRules:
    """How the source writes values: as the model's training data did, unless the run says otherwise."""
    rules = model.config.export_rules()
    return ExportRules(decimal=rules.decimal if decimal is None else decimal,
                       max_amount=rules.max_amount if max_amount is None else float(max_amount))


def check_model_tables(model: ScoringModel, present: set[str], allow_missing=()) -> list[str]:
    """The optional tables the model was trained with that the source lacks, when all are allowed;
    otherwise a ContractError (scoring without them would silently change the predictions)."""
    columns = {f"{t}.{c}" for t, names in OPTIONAL_COLUMNS.items() for c in names}
    unknown = sorted(set(allow_missing) - set(OPTIONAL_TABLES) - columns)
    if unknown:
        raise ContractError(f"--allow-missing takes optional tables ({', '.join(OPTIONAL_TABLES)}) or optional "
                            "columns as TABLE.COLUMN (e.g. transactions.margin), not "
                            + ", ".join(repr(t) for t in unknown))
    families = set(model.manifest.families.values())
    needed = {t for f in families for t in FAMILY_TABLES.get(f, ())}
    missing = sorted(needed - set(present))
    refused = [t for t in missing if t not in set(allow_missing)]
    if refused:
        raise ContractError(
            f"the model was trained with {', '.join(refused)}, which this source lacks: its predictions "
            f"would change without them; add {'them' if len(refused) > 1 else 'it'}, or pass "
            + " ".join(f"--allow-missing {t}" for t in refused) + " to score anyway (recorded in the manifest)")
    return missing


def check_model_columns(model: ScoringModel, present: dict[str, list[str]], allow_missing=()) -> list[str]:
    """The optional columns (``table.column``) the model was trained with that the source lacks, when
    all are allowed (by name or by their table); otherwise a ContractError. Models that did not record
    their training columns are not checked."""
    trained = getattr(model.python_model, "source_columns", None) or {}
    missing = sorted(f"{table}.{column}" for table, names in trained.items() if table in present
                     for column in names if column not in present[table])
    refused = [m for m in missing if m not in set(allow_missing) and m.split(".")[0] not in set(allow_missing)]
    if refused:
        raise ContractError(
            f"the model was trained with column{'s' if len(refused) > 1 else ''} {', '.join(refused)}, which this "
            "source lacks: its predictions would change without "
            f"{'them' if len(refused) > 1 else 'it'}; add {'them' if len(refused) > 1 else 'it'}, or pass "
            + " ".join(f"--allow-missing {m}" for m in refused) + " to score anyway (recorded in the manifest)")
    return missing


def check_run(tables: dict, scored: int, not_yet: int, as_of: pd.Timestamp) -> None:
    """Before anything of a run is published: every customer accounted for (check_accounted), and
    someone scored (e.g. an --as-of before anyone signed up: an empty file would pass for a result)."""
    customers_in = tables["customers"]["rows_in"]
    rejected = tables["customers"]["rows_rejected"]
    check_accounted(customers_in, scored, not_yet, rejected)
    if scored == 0:
        raise ContractError(f"no customer had signed up before as_of {as_of.date()} ({not_yet:,} not yet "
                            f"customers, {rejected:,} rejected): nothing to score; choose a later --as-of")


def scoring_manifest(run: ScoredRun) -> dict:
    """The run's manifest (also its summary); checks the run (check_run) on the way."""
    check_run(run.tables, run.scored, run.not_yet, run.as_of)
    customers_in = run.tables["customers"]["rows_in"]
    rejected = run.tables["customers"]["rows_rejected"]
    return {
        "output": str(run.out),
        "manifest": str(manifest_path(run.out)),
        "rejects": [str(p) for p in run.rejects],
        "customers_in": customers_in,
        "scored": run.scored,
        "rejected_customers": rejected,
        "not_yet_customers": run.not_yet,
        "tables": run.tables,
        "tiers": run.tiers,
        "currency": run.currency,
        "tier_economics": run.economics,
        "interval": interval_facts(run.model),
        "drift": run.drift,
        "as_of": str(run.as_of),
        "horizon_days": run.model.horizon_days,
        "scored_at": str(run.scored_at),
        "model": run.model.describe(),
        "feature_manifest_hash": run.model.manifest.manifest_hash,
        "unseen_category_levels": dict(run.unseen_levels),
        "missing_tables_allowed": list(run.missing_tables),
        "notes": list(run.notes),
        "inputs": run.fingerprint,
        "chunks": run.chunks,
        "chunk_size": run.chunk_size,
        "reasons": {
            "per_customer": run.reasons, "for": run.reasons_for, "rows": run.reasons_rows,
            "seconds": round(run.reasons_seconds, 3),
            "rows_per_second": (round(run.reasons_rows / run.reasons_seconds, 1)
                                if run.reasons_seconds else None),
        },
        "features_seconds": round(run.features_seconds, 3),
        "predict_seconds": round(run.predict_seconds, 3),
    }


def interval_facts(model: ScoringModel) -> dict:
    """What the scores' value_p10 / value_p90 mean, from the model's interval table."""
    table = getattr(model.python_model, "interval_table", None)
    if not table:
        return {"level": None, "coverage_on_test": None, "method": None,
                "reason": "the model has no interval table (trained before intervals); retrain for value_p10/p90"}
    return {"level": table.get("level"), "coverage_on_test": table.get("coverage_on_test"),
            "method": table.get("method")}


def currency_of(model: ScoringModel, currency: str | None) -> str | None:
    """The currency money is labelled with: the run's --currency, else the training run's, else none."""
    if currency:
        return currency_label(currency)
    return getattr(model.python_model, "currency", None) or None


def drift_counts(model: ScoringModel, inputs: pd.DataFrame, values: np.ndarray) -> dict | None:
    """One part's customers in the bins of the model's drift reference (None: the model has none)."""
    reference = getattr(model.python_model, "drift_reference", None)
    return bin_counts(reference, inputs, values) if reference else None


def drift_of(model: ScoringModel, parts: list, threshold: float | None = None) -> dict:
    """The run's drift report from its parts' counts (training.drift)."""
    reference = getattr(model.python_model, "drift_reference", None)
    counts = add_counts(p for p in parts if p) if reference else None
    return drift_report(reference, counts, threshold=THRESHOLD if threshold is None else threshold)


def manifest_path(out: Path) -> Path:
    """OUT_STEM.manifest.json beside OUT_STEM.parquet."""
    return out.with_name(f"{out.name.removesuffix('.parquet')}.manifest.json")


def rejects_path(out: Path) -> Path:
    """OUT_STEM.rejects/ beside OUT_STEM.parquet: one <table>.csv per table with rejected rows."""
    return out.with_name(f"{out.name.removesuffix('.parquet')}.rejects")


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the hidden temporaries left beside ``out``, its manifest and rejects by killed runs
    (the runs' work directories are serving.scoring.work_dir's)."""
    removed = atomic.remove_stale(out) + atomic.remove_stale(manifest_path(out))
    for table in TABLE_NAMES:
        removed += atomic.remove_stale(rejects_path(out) / f"{table}.csv")
    return removed
