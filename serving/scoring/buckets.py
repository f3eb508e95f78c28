"""The per-bucket steps of a scoring run: validate a bucket, build its features, score it.

Each step takes the bucket number and the run's ChunkContext (where its files are), reads its
bucket's files and writes its outputs beside them; serving.scoring.runner runs it here or in a
worker process.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import ipc

from features.build import build_features, select_families
from features.encoding import customer_codes
from features.families.btyd import btyd_predictions, purchase_summary
from features.families.profiles import profile_snapshots
from features.ingest.attribute_kinds import conform_attributes
from features.ingest.contract import parsed_ids
from features.ingest.export_checks import DEFAULT_RULES, ExportNotes, ExportRules, export_notes
from features.ingest.id_sets import hash_ids, is_in, is_member
from features.ingest.partition import BucketFiles, BucketWriter, bucket_of, read_arrow
from features.ingest.rejects import RejectPart, checked_part
from features.population import precomputed
from features.tables import Tables
from serving.scoring import core
from serving.scoring.model import check_model_features
from serving.scoring.runner import shared

# ---------------------------------------------------------------------------------------------
# The context every step gets


@dataclass(frozen=True)
class ChunkContext:
    work: Path
    buckets: int
    files: dict[str, BucketFiles]
    kinds: dict[str, str]  # attribute column -> "number" | "text" (whole-table kinds)
    rules: ExportRules = DEFAULT_RULES  # how the exports write values (decimal mark, largest amount)

    def typed_path(self, bucket: int) -> Path:
        return self.work / f"typed-{bucket:05d}.pkl"

    def social_path(self, source_bucket: int, bucket: int) -> Path:
        return self.work / f"social-{source_bucket:05d}-{bucket:05d}.arrow"

    def features_path(self, bucket: int) -> Path:
        return self.work / f"features-{bucket:05d}.pkl"

    def inputs_path(self, bucket: int) -> Path:
        return self.work / f"inputs-{bucket:05d}.arrow"

    def referred_path(self, bucket: int) -> Path:
        return self.work / f"referred-{bucket:05d}.pkl"

    def customers_path(self, bucket: int) -> Path:
        return self.work / f"customers-{bucket:05d}.arrow"

    def referral_path(self, bucket: int) -> Path:
        return self.work / f"referral-{bucket:05d}.pkl"

    def population_path(self, bucket: int) -> Path:
        return self.work / f"population-{bucket:05d}.pkl"

    def latest_path(self, profile_bucket: int) -> Path:
        return self.work / f"latest-{profile_bucket:05d}.arrow"

    def owned_path(self, profile_bucket: int, bucket: int) -> Path:
        return self.work / f"owned-{profile_bucket:05d}-{bucket:05d}.arrow"

    def summary_path(self, bucket: int) -> Path:
        return self.work / f"summary-{bucket:05d}.pkl"

    def btyd_fit_path(self) -> Path:
        return self.work / "btyd-fit.pkl"


def ready_imports() -> None:
    """A worker's first warm-up (BucketRunner.warm_up), while the main process loads the model: the
    imports loading it needs (MLflow, LightGBM and scikit-learn: most of its 4 s)."""
    import lightgbm  # noqa: F401
    import mlflow.pyfunc  # noqa: F401


def ready_worker(model_key: str) -> None:
    """A worker's warm-up (BucketRunner.warm_up): this module's imports and the model, loaded before
    its first bucket."""
    shared(model_key)


# ---------------------------------------------------------------------------------------------
# Step 1: customers and their transactions


# What the referral family reads of the referred customers' transactions (ctx.referred_path).
REFERRED_COLUMNS = ("customer_id", "timestamp", "amount")


@dataclass
class CustomerBucket:
    ids: pa.Array | None  # valid customer ids (None once the run has let them go: _Run.validate_profiles)
    hashes: np.ndarray | None
    latest_ns: int | None  # latest valid transaction
    rejects: list[RejectPart]
    referred_rows: int
    notes: ExportNotes = field(default_factory=ExportNotes)  # before-signup rows, largest amounts


def validate_customer_bucket(b: int, ctx: ChunkContext, referred_key: str) -> CustomerBucket:
    """Contract check of a bucket's customers and transactions; typed frames saved for scoring, the
    valid customers' ids and signups (ctx.customers_path) for the referral family.

    Every transaction of a customer of this bucket is in this bucket: anything else names an
    unknown customer and is rejected as such, exactly as by the whole-table check.
    """
    raw, rows = ctx.files["customers"].take(b)
    res, cust_part = checked_part("customers", raw, {}, rows, ctx.work, f"{b:05d}", ctx.rules)
    kept = np.setdiff1d(np.arange(len(raw)), res.rejects["row"].to_numpy(dtype="int64"))
    customers = conform_attributes(res.typed, raw.reset_index(drop=True), kept, ctx.kinds)
    del raw, res

    raw_tx, tx_rows = ctx.files["transactions"].take(b)
    known = {"customers": pd.Index(customers["customer_id"])}
    tx, tx_part = checked_part("transactions", raw_tx, known, tx_rows, ctx.work, f"{b:05d}", ctx.rules)
    transactions = tx.typed
    del raw_tx, tx

    pd.to_pickle({"customers": customers, "transactions": transactions}, ctx.typed_path(b))
    referred = shared(referred_key)
    mine = transactions.loc[referred.contains(transactions["customer_id"])] if len(referred) else transactions.iloc[:0]
    pd.to_pickle(mine[list(REFERRED_COLUMNS)], ctx.referred_path(b))
    ids = pa.array(customers["customer_id"].array, type=pa.string())
    signups = pa.array(customers["signup_date"].to_numpy("datetime64[ns]").view("int64"))
    _write_arrow(pa.table({"customer_id": ids, "signup_ns": signups}), ctx.customers_path(b))
    latest = (int(transactions["timestamp"].to_numpy("datetime64[ns]").view("int64").max())
              if len(transactions) else None)
    return CustomerBucket(
        ids=ids,
        hashes=hash_ids(ids) if len(ids) else np.array([], dtype="uint64"),
        latest_ns=latest,
        rejects=[cust_part, tx_part],
        referred_rows=len(mine),
        notes=export_notes(customers, transactions),
    )


def valid_ids(ctx: ChunkContext, b: int) -> pa.Array:
    """Bucket b's valid customer ids, as validate_customer_bucket saved them."""
    return read_arrow(ctx.customers_path(b)).column("customer_id").combine_chunks()


def valid_customers(ctx: ChunkContext, b: int) -> pd.DataFrame:
    """Bucket b's valid customers (customer_id, signup_date), as validate_customer_bucket saved them."""
    table = read_arrow(ctx.customers_path(b))
    ids = table.column("customer_id").combine_chunks()
    return pd.DataFrame({"customer_id": pd.array(ids.to_pandas(), dtype="str"),
                         "signup_date": table.column("signup_ns").to_numpy().view("datetime64[ns]")})


def known_customers(bucket_ids, buckets: int, ids) -> pd.Index:
    """The distinct valid customers among parsed ``ids``, as IdSet.known gives them (first-seen
    order), looked up bucket by bucket: bucket_ids(b) gives bucket b's valid ids (a pa.Array), and
    is asked only for the buckets some id hashes to.

    A valid customer sits in the bucket of its id's hash (partition.bucket_of), which is also the
    hash_ids of its id, so each id is compared only with its own bucket's customers: the whole
    base's customer set (millions of ids and hashes, a few hundred MB while it is built) is not
    made for it.
    """
    distinct = pa.array(pd.Series(ids, dtype="str").dropna().unique(), type=pa.string())
    found = np.zeros(len(distinct), dtype=bool)
    if len(distinct) and buckets:
        where = hash_ids(distinct) % np.uint64(buckets)
        for b in range(buckets):
            mine = np.flatnonzero(where == b)
            valid = bucket_ids(b) if len(mine) else None
            if valid is not None and len(valid):
                found[mine] = is_member(distinct.take(pa.array(mine)), valid)
    return pd.Index(distinct.filter(pa.array(found)).to_pandas(), dtype="str")


def _write_arrow(table: pa.Table, path: Path) -> None:
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)


# ---------------------------------------------------------------------------------------------
# Step 2: social profile snapshots, per profile bucket


# What the population-wide families read of each profile's latest snapshot (ctx.latest_path).
LATEST_COLUMNS = ("profile_id", "customer_id", "engagements", "followers")


@dataclass
class ProfileBucket:
    profile_ids: pa.Array | None  # distinct valid profile ids (None once the run's set is built)
    hashes: np.ndarray | None
    latest_rows: int  # profiles with a snapshot before as_of (their latest in ctx.latest_path)
    rejects: list[RejectPart]
    empty: pd.DataFrame  # typed social_profiles without rows


def validate_profile_bucket(b: int, ctx: ChunkContext, as_of: pd.Timestamp, customers_key: str) -> ProfileBucket:
    """Contract check of a profile bucket's snapshots (all of a profile's rows are together here).

    The profile's owner (newest link before as_of) and latest snapshot are decided as
    features.families.profiles.profile_snapshots decides them; the rows of owned profiles are routed to the
    owner's customer bucket (social-<this bucket>-<owner's bucket>.arrow) for the per-customer
    social families, and every profile's latest snapshot (LATEST_COLUMNS, customer_id = owner) is
    saved to ctx.latest_path for the population-wide ones.
    """
    raw, rows = ctx.files["social_profiles"].take(b)
    referenced = parsed_ids(raw["customer_id"]) if "customer_id" in raw else pd.Series([], dtype="str")
    known = {"customers": shared(customers_key).known(referenced)}
    res, part = checked_part("social_profiles", raw, known, rows, ctx.work, f"{b:05d}", ctx.rules)
    typed = res.typed
    del raw, res
    ids = pa.array(typed["profile_id"].unique(), type=pa.string())

    # Leakage: no family reads snapshots dated on or after as_of; they are dropped here.
    before = typed.loc[typed["snapshot_date"] < as_of]
    latest = profile_snapshots(before, as_of)
    owners = latest["customer_id"].dropna()
    # Each snapshot's owner, by position among the owned profiles (one Arrow encoding: a pandas
    # reindex on text made every profile id a Python string).
    owner = customer_codes(owners.index, before["profile_id"])
    is_owned = owner >= 0
    owned = before.loc[is_owned]
    if len(owned):
        table = pa.Table.from_pandas(owned, preserve_index=False)
        writer = BucketWriter(lambda k: ctx.social_path(b, k), table.schema)
        try:
            writer.write(table, bucket_of(owners.to_numpy()[owner[is_owned]], ctx.buckets), ctx.buckets)
        finally:
            writer.close()
    columns = latest.reset_index()[list(LATEST_COLUMNS)]
    for metric in ("engagements", "followers"):
        columns[metric] = columns[metric].to_numpy("float64")
    table = pa.Table.from_pandas(columns, preserve_index=False).cast(
        pa.schema([("profile_id", pa.string()), ("customer_id", pa.string()), ("engagements", pa.float64()),
                   ("followers", pa.float64())]))
    _write_arrow(table, ctx.latest_path(b))
    return ProfileBucket(ids, hash_ids(ids) if len(ids) else np.array([], dtype="uint64"), len(latest),
                         [part], typed.iloc[:0])


# ---------------------------------------------------------------------------------------------
# Step 3: features and predictions


@dataclass
class LocalFeatures:
    seconds: float  # spent building the bucket's own families


def local_features_bucket(b: int, ctx: ChunkContext, as_of: pd.Timestamp, model_key: str,
                          social_empty: pd.DataFrame | None) -> LocalFeatures:
    """The families that read only this bucket's customers (history, attributes, social, ...).

    Each is built by build_features on its own and saved; score_bucket hands them to build_features
    again as ``precomputed``, beside the population-wide ones, for the bucket's whole feature frame.
    With worker processes this runs while the population-wide families are computed.
    """
    start = time.perf_counter()
    model = shared(model_key)
    typed = pd.read_pickle(ctx.typed_path(b))
    social = None
    if social_empty is not None:
        paths = sorted(ctx.work.glob(f"social-*-{b:05d}.arrow"))
        parts = [read_arrow(p).to_pandas() for p in paths]
        for path in paths:  # read once: their pages are freed now, not when the run ends
            path.unlink()
        social = pd.concat(parts, ignore_index=True) if parts else social_empty
    tables = Tables(customers=typed["customers"], transactions=typed["transactions"], social_profiles=social)
    frames = {f.name: build_features(tables, as_of, model.config, families=[f.name])
              for f in select_families(model.families) if not f.population_wide}
    pd.to_pickle({"features": frames, "customers": typed["customers"][["customer_id", "signup_date"]],
                  "transactions": typed["transactions"].iloc[:0]}, ctx.features_path(b))
    return LocalFeatures(time.perf_counter() - start)


def purchase_summary_bucket(b: int, ctx: ChunkContext, as_of: pd.Timestamp) -> int:
    """The bucket's customers' purchase summary, saved (ctx.summary_path) for the btyd family: the
    population step fits on every bucket's buyers, score_bucket applies the fit to this bucket's
    customers. Returns its rows. (Kept on disk, not returned: every customer's summary would
    otherwise wait in the main process through the interactions.)"""
    typed = pd.read_pickle(ctx.typed_path(b))
    summary = purchase_summary(typed["customers"], typed["transactions"], as_of)
    pd.to_pickle(summary, ctx.summary_path(b))
    return len(summary)


def btyd_rows(b: int, ctx: ChunkContext, as_of: pd.Timestamp, horizon_days: int) -> dict[str, pd.DataFrame]:
    """The btyd family's precomputed frame for bucket b: the population's fit (ctx.btyd_fit_path,
    written by the population step when the model has the family) applied to the bucket's summary.
    btyd_predictions works row by row, so these are the whole-population frame's rows."""
    if not ctx.btyd_fit_path().exists():
        return {}
    summary = pd.read_pickle(ctx.summary_path(b))
    frame = btyd_predictions(summary, pd.read_pickle(ctx.btyd_fit_path()), horizon_days)
    return precomputed({"btyd": frame}, as_of)


@dataclass
class ScoredBucket:
    ids: pa.Array
    values: np.ndarray
    inputs: Path | None  # the model input saved for reasons
    unseen_levels: Counter = field(default_factory=Counter)
    feature_seconds: float = 0.0
    predict_seconds: float = 0.0
    extras: dict = field(default_factory=dict)  # core.customer_extras: interval, p_alive, expected_orders
    drift_counts: dict | None = None  # core.drift_counts: customers per drift-reference bin


def score_bucket(b: int, ctx: ChunkContext, as_of: pd.Timestamp, model_key: str, local: LocalFeatures,
                 keep_inputs: bool) -> ScoredBucket:
    """The bucket's full feature frame (its customers' population-wide rows joined), the manifest
    check, predictions."""
    start = time.perf_counter()
    model = shared(model_key)
    saved = pd.read_pickle(ctx.features_path(b))
    tables = Tables(customers=saved["customers"], transactions=saved["transactions"])
    population = {**pd.read_pickle(ctx.population_path(b)), **btyd_rows(b, ctx, as_of, model.config.horizon_days)}
    features = build_features(tables, as_of, model.config, families=model.families,
                              precomputed={**saved["features"], **population})
    check_model_features(model, features)
    encoder = model.python_model.encoder
    inputs = encoder.model_input(features)
    out = ScoredBucket(pa.array(features.index.array, type=pa.string()), np.array([], dtype="float64"), None)
    out.feature_seconds = local.seconds + time.perf_counter() - start
    del saved, tables, features, population

    for name, levels in encoder.levels.items():
        unseen = inputs[name].notna().to_numpy() & ~is_in(inputs[name], list(levels))
        if unseen.any():
            out.unseen_levels[name] += int(unseen.sum())
    start = time.perf_counter()
    if len(inputs):
        out.values = np.asarray(model.pyfunc.predict(inputs), dtype="float64")
    out.predict_seconds = time.perf_counter() - start
    out.extras = core.customer_extras(model, inputs, out.values)
    out.drift_counts = core.drift_counts(model, inputs, out.values)
    if keep_inputs:
        out.inputs = ctx.inputs_path(b)
        _write_arrow(pa.Table.from_pandas(inputs.reset_index(drop=True), preserve_index=False), out.inputs)
    for path in (ctx.typed_path(b), ctx.features_path(b), ctx.population_path(b)):
        path.unlink()
    for path in (ctx.summary_path(b), ctx.customers_path(b)):
        path.unlink(missing_ok=True)
    return out
