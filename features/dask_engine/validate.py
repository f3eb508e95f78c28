"""Validating a source on Dask, bucket by bucket, with the contract's own checks.

Whole-table rules still hold: a duplicated customer_id hashes twice to the same bucket, so the
per-bucket duplicate check sees it; a transaction's customer is in its bucket if it exists anywhere;
the reject threshold and a column that parses nowhere are judged on the totals (features.dask_engine
.source). Profile snapshots are shuffled again by profile_id so each profile's history is whole:
there each profile's latest snapshot is found, and the history is routed to the bucket of every
customer the profile was ever linked to (the owner at any as_of is among them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.dask_engine.read import BUCKET, TARGET, sorted_rows
from features.families.profiles import profile_snapshots
from features.ingest.attribute_kinds import conform_attributes
from features.ingest.contract import PARSERS, ContractError, check_table, part_parsing
from features.ingest.export_checks import DEFAULT_RULES, ExportRules, export_notes
from features.ingest.id_sets import IdSet
from features.ingest.partition import ROW, bucket_of
from features.ingest.rejects import source_rows_error


def _checked(table: str, raw: pd.DataFrame, rows: np.ndarray, known: dict, rules: ExportRules = DEFAULT_RULES):
    """check_table on one bucket, never stopping on the share of rejects or on a column that
    parses nowhere in the bucket (both judged on the totals, _check_totals).

    Returns (result, rejects with ``row`` = source row); result.parsing's rows are the source's.
    """
    try:
        res = check_table(table, raw, known, reject_threshold=1.0, part=True, rules=rules)
    except ContractError as err:
        raise source_rows_error(err, rows) from None
    rejects = res.rejects
    if len(rejects):
        rejects = rejects.assign(row=rows[rejects["row"].to_numpy(dtype="int64")])
    res.parsing = part_parsing(res, rows)
    return res, rejects


def validate_bucket(
    raw_customers: pd.DataFrame,
    raw_transactions: pd.DataFrame,
    raw_social: pd.DataFrame | None,
    kinds: dict,
    dtypes: dict,
    referred: pd.Index,
    rules: ExportRules = DEFAULT_RULES,
) -> dict:
    """Contract check of one bucket's customers, their transactions and the snapshots naming them."""
    raw, rows = sorted_rows(raw_customers)
    res, rejects_c = _checked("customers", raw, rows, {}, rules)
    kept = np.setdiff1d(np.arange(len(raw)), res.rejects["row"].to_numpy(dtype="int64"))
    customers = conform_attributes(res.typed, raw, kept, kinds)
    customers = customers.astype({n: d for n, d in dtypes.items() if n in customers.columns})
    out = {
        "customers": customers,
        "rows_in": {"customers": len(raw)},
        "rejects": {"customers": rejects_c},
        "parsing": {"customers": res.parsing},
        "unknown": {},  # table -> reference column -> some unknown ids
    }
    known = {"customers": pd.Index(customers["customer_id"])}

    raw, rows = sorted_rows(raw_transactions)
    res, rejects_t = _checked("transactions", raw, rows, known, rules)
    transactions = res.typed
    out.update(transactions=transactions)
    out["rows_in"]["transactions"] = len(raw)
    out["rejects"]["transactions"] = rejects_t
    out["parsing"]["transactions"] = res.parsing
    out["unknown"]["transactions"] = res.unknown
    t = transactions["timestamp"]
    out["first_tx"] = None if t.empty else pd.Timestamp(t.min())
    out["notes"] = export_notes(customers, transactions)
    out["last_tx"] = None if t.empty else pd.Timestamp(t.max())
    mine = referred.intersection(known["customers"])
    out["referred_tx"] = transactions.loc[transactions["customer_id"].isin(mine)]

    out["social"] = None
    if raw_social is not None:
        raw, rows = sorted_rows(raw_social)
        res, rejects_s = _checked("social_profiles", raw, rows, known, rules)
        kept = np.setdiff1d(np.arange(len(raw)), res.rejects["row"].to_numpy(dtype="int64"))
        out["social"] = res.typed.assign(**{ROW: rows[kept]})
        out["rows_in"]["social_profiles"] = len(raw)
        out["rejects"]["social_profiles"] = rejects_s
        out["parsing"]["social_profiles"] = res.parsing
        out["unknown"]["social_profiles"] = res.unknown
    return out


def bucket_stats(validated: dict) -> dict:
    """What the client needs of a validated bucket: counts, rejects, dates (no table data)."""
    return {
        "rows_in": validated["rows_in"],
        "rejects": validated["rejects"],
        "parsing": validated["parsing"],
        "unknown": validated["unknown"],
        "notes": validated["notes"],
        "customers": len(validated["customers"]),
        "first_tx": validated["first_tx"],
        "last_tx": validated["last_tx"],
    }


def slim(customers: pd.DataFrame) -> pd.DataFrame:
    return customers[["customer_id", "signup_date"]]


def referred_ids(raw: pd.DataFrame | None) -> pd.Index:
    """Every id a raw referrals table names as referred (parsed; a superset of the valid ones)."""
    if raw is None or "referred_id" not in raw.columns:
        return pd.Index([], dtype="str")
    return pd.Index(PARSERS["id"](raw["referred_id"]).dropna().unique(), dtype="str")


def validate_referrals(raw: pd.DataFrame, slims: list[pd.DataFrame], rules: ExportRules = DEFAULT_RULES) -> dict:
    """Referrals checked against every valid customer: {typed, rejects, rows_in}."""
    ids = IdSet([pa.array(s["customer_id"].array, type=pa.string()) for s in slims])
    mentioned = pd.concat(
        [PARSERS["id"](raw[c]) for c in ("referrer_id", "referred_id") if c in raw]
    )
    res = check_table("referrals", raw, {"customers": ids.known(mentioned)}, reject_threshold=1.0, rules=rules)
    return {"typed": res.typed, "rejects": res.rejects, "rows_in": res.rows_in}


def validate_interactions(raw_part: pd.DataFrame, profiles: IdSet, rules: ExportRules = DEFAULT_RULES) -> dict:
    """One raw partition of interactions checked against every valid profile id: {typed (with ROW),
    rejects, rows_in}."""
    raw, rows = sorted_rows(raw_part)
    mentioned = pd.concat(
        [PARSERS["id"](raw[c]) for c in ("source_profile_id", "target_profile_id") if c in raw]
    )
    res, rejects = _checked(
        "social_interactions", raw, rows, {"profiles": profiles.known(mentioned)}, rules
    )
    kept = np.setdiff1d(np.arange(len(raw)), res.rejects["row"].to_numpy(dtype="int64"))
    return {"typed": res.typed.assign(**{ROW: rows[kept]}), "rejects": rejects, "rows_in": len(raw),
            "parsing": res.parsing}


def profile_bucket(frame: pd.DataFrame, buckets: int) -> pd.DataFrame:
    return frame.assign(**{BUCKET: bucket_of(frame["profile_id"], buckets).astype("int64")})


def route_to_customers(frame: pd.DataFrame, buckets: int) -> pd.DataFrame:
    """Every snapshot of a profile once per bucket of a customer the profile was ever linked to.

    A profile's owner at any as_of is one of the customers it has been linked to, so each of those
    buckets gets the whole history and decides ownership itself (profile_snapshots); a bucket whose
    customer is not the owner at that as_of gets a row for a customer it does not hold, which
    build_features drops.
    """
    frame = frame.reset_index(drop=True).drop(columns=[BUCKET], errors="ignore")
    links = frame.loc[frame["customer_id"].notna(), ["profile_id", "customer_id"]].drop_duplicates()
    targets = pd.DataFrame(
        {
            "profile_id": links["profile_id"].to_numpy(),
            TARGET: bucket_of(links["customer_id"], buckets).astype("int64"),
        }
    ).drop_duplicates()
    return frame.merge(targets, on="profile_id", how="inner", sort=False)


def latest_profiles(frame: pd.DataFrame, as_of: pd.Timestamp, columns: list[str]) -> pd.DataFrame:
    """Latest snapshot before as_of of every profile in a profile bucket, customer_id = its owner.

    The population families read snapshots only through profile_snapshots (latest row and owner),
    which returns exactly these rows again, so the history never has to meet in one place.
    """
    frame = frame.sort_values(ROW, kind="stable")
    before = frame.loc[frame["snapshot_date"] < as_of, columns]
    latest = profile_snapshots(before.reset_index(drop=True), as_of).reset_index()
    return latest[[c for c in columns if c in latest.columns]]
