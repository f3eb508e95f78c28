"""The per-bucket work of a scoring run, run in this process or in worker processes (one bucket each).

Every step reads its bucket's files from the run's work directory and writes its outputs there, so
a worker needs only the bucket number and a few shared objects (the model, the population-wide
features, the set of valid customer ids), which ``BucketRunner.share`` hands over once per worker.
Results come back in bucket order whatever the number of workers: the output does not depend on it.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import ipc

from features.ingest.attribute_kinds import conform_attributes
from features.build import build_features, select_families
from features.ingest.id_sets import hash_ids, is_in
from features.ingest.partition import BucketFiles, BucketWriter, bucket_of, read_arrow
from features.families.profiles import profile_snapshots
from features.tables import Tables
from features.ingest.rejects import RejectPart, checked_part
from serving.scoring.model import check_model_features

# ---------------------------------------------------------------------------------------------
# Shared objects


_SHARED: dict[str, object] = {}


def shared(key: str):
    """An object handed to the bucket steps: cached in this process, loaded on first use in a worker."""
    if key not in _SHARED:
        if key.startswith("model:"):
            from serving.scoring.model import load_local_model

            path, uri = key[len("model:"):].split("\n", 1)
            _SHARED[key] = load_local_model(path, uri)
        else:
            with open(key, "rb") as fh:
                _SHARED[key] = pickle.load(fh)
    return _SHARED[key]


class BucketRunner:
    """Runs a bucket step over every bucket, here (workers=1) or in a pool of spawned processes."""

    def __init__(self, work: Path, workers: int):
        self.work = work
        self.workers = max(1, int(workers))
        self.pool: ProcessPoolExecutor | None = None
        self.keys: list[str] = []

    def share(self, name: str, value) -> str:
        """Make ``value`` available to the steps under the returned key."""
        key = str(self.work / f"shared-{name}.pkl")
        _SHARED[key] = value
        self.keys.append(key)
        if self.workers > 1:
            with open(key, "wb") as fh:
                pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return key

    def share_model(self, model) -> str:
        """The model, loaded once per worker from its local files (a pyfunc is not picklable)."""
        key = f"model:{model.local_path}\n{model.uri}"
        _SHARED[key] = model
        self.keys.append(key)
        if self.workers > 1 and model.local_path is None:
            raise ValueError("a model without local files cannot be used by worker processes; use workers=1")
        return key

    def map(self, step, buckets: int, *args, on_result=None) -> list:
        """[step(b, *args) for b in range(buckets)], calling on_result(b, result) as each one ends."""
        results: list = [None] * buckets
        if self.workers == 1 or buckets == 1:
            for b in range(buckets):
                results[b] = step(b, *args)
                if on_result is not None:
                    on_result(b, results[b])
            return results
        self._start_pool()
        pending = {self.pool.submit(step, b, *args): b for b in range(buckets)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    b = pending.pop(future)
                    results[b] = future.result()
                    if on_result is not None:
                        on_result(b, results[b])
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        return results

    def submit(self, step, buckets: int, *args) -> Pending:
        """Start step(b, *args) on every bucket; with workers, it runs while this process goes on."""
        if self.workers == 1 or buckets == 1:
            return Pending(results=[step(b, *args) for b in range(buckets)])
        self._start_pool()
        return Pending(futures=[self.pool.submit(step, b, *args) for b in range(buckets)])

    def _start_pool(self) -> None:
        # Spawned, not forked: LightGBM's OpenMP and Arrow's thread pools do not survive a fork.
        if self.pool is None:
            self.pool = ProcessPoolExecutor(max_workers=self.workers, initializer=_one_thread_each,
                                            mp_context=multiprocessing.get_context("spawn"))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        for key in self.keys:
            _SHARED.pop(key, None)


def _one_thread_each() -> None:
    """Worker start-up: the workers already share the cores, so each runs LightGBM (OpenMP) and Arrow
    on one thread; more threads per worker only make them wait on each other."""
    os.environ["OMP_NUM_THREADS"] = "1"
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


class Pending:
    """Results of BucketRunner.submit, in bucket order once ``results`` returns."""

    def __init__(self, results=None, futures=None):
        self.results_, self.futures = results, futures

    def results(self) -> list:
        if self.futures is not None:
            try:
                self.results_ = [future.result() for future in self.futures]
            finally:
                for future in self.futures:
                    future.cancel()
            self.futures = None
        return self.results_


# ---------------------------------------------------------------------------------------------
# The context every step gets


@dataclass(frozen=True)
class ChunkContext:
    work: Path
    buckets: int
    files: dict[str, BucketFiles]
    kinds: dict[str, str]  # attribute column -> "number" | "text" (whole-table kinds)

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

    def population_path(self, bucket: int) -> Path:
        return self.work / f"population-{bucket:05d}.pkl"

    def latest_path(self, profile_bucket: int) -> Path:
        return self.work / f"latest-{profile_bucket:05d}.arrow"

    def owned_path(self, profile_bucket: int, bucket: int) -> Path:
        return self.work / f"owned-{profile_bucket:05d}-{bucket:05d}.arrow"


# ---------------------------------------------------------------------------------------------
# Step 1: customers and their transactions


# What the referral family reads of the referred customers' transactions (ctx.referred_path).
REFERRED_COLUMNS = ("customer_id", "timestamp", "amount")


@dataclass
class CustomerBucket:
    ids: pa.Array  # valid customer ids
    hashes: np.ndarray
    signups: np.ndarray  # int64 ns
    latest_ns: int | None  # latest valid transaction
    rejects: list[RejectPart]
    referred_rows: int


def validate_customer_bucket(b: int, ctx: ChunkContext, referred_key: str) -> CustomerBucket:
    """Contract check of a bucket's customers and transactions; typed frames saved for scoring.

    Every transaction of a customer of this bucket is in this bucket: anything else names an
    unknown customer and is rejected as such, exactly as by the whole-table check.
    """
    raw, rows = ctx.files["customers"].read(b)
    res, cust_part = checked_part("customers", raw, {}, rows, ctx.work, f"{b:05d}")
    kept = np.setdiff1d(np.arange(len(raw)), res.rejects["row"].to_numpy(dtype="int64"))
    customers = conform_attributes(res.typed, raw.reset_index(drop=True), kept, ctx.kinds)
    del raw, res

    raw_tx, tx_rows = ctx.files["transactions"].read(b)
    known = {"customers": pd.Index(customers["customer_id"])}
    tx, tx_part = checked_part("transactions", raw_tx, known, tx_rows, ctx.work, f"{b:05d}")
    transactions = tx.typed
    del raw_tx, tx

    pd.to_pickle({"customers": customers, "transactions": transactions}, ctx.typed_path(b))
    referred = shared(referred_key)
    mine = transactions.loc[is_in(transactions["customer_id"], referred)] if len(referred) else transactions.iloc[:0]
    pd.to_pickle(mine[list(REFERRED_COLUMNS)], ctx.referred_path(b))
    ids = pa.array(customers["customer_id"].array, type=pa.string())
    latest = (int(transactions["timestamp"].to_numpy("datetime64[ns]").view("int64").max())
              if len(transactions) else None)
    return CustomerBucket(
        ids=ids,
        hashes=hash_ids(ids) if len(ids) else np.array([], dtype="uint64"),
        signups=customers["signup_date"].to_numpy("datetime64[ns]").view("int64"),
        latest_ns=latest,
        rejects=[cust_part, tx_part],
        referred_rows=len(mine),
    )


# ---------------------------------------------------------------------------------------------
# Step 2: social profile snapshots, per profile bucket


# What the population-wide families read of each profile's latest snapshot (ctx.latest_path).
LATEST_COLUMNS = ("profile_id", "customer_id", "engagements")


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
    raw, rows = ctx.files["social_profiles"].read(b)
    referenced = parsed_ids(raw["customer_id"]) if "customer_id" in raw else pd.Series([], dtype="str")
    known = {"customers": shared(customers_key).known(referenced)}
    res, part = checked_part("social_profiles", raw, known, rows, ctx.work, f"{b:05d}")
    typed = res.typed
    del raw, res
    ids = pa.array(typed["profile_id"].unique(), type=pa.string())

    # Leakage: no family reads snapshots dated on or after as_of; they are dropped here.
    before = typed.loc[typed["snapshot_date"] < as_of]
    latest = profile_snapshots(before, as_of)
    owners = latest["customer_id"].dropna()
    owned = before.loc[is_in(before["profile_id"], owners.index)]
    if len(owned):
        table = pa.Table.from_pandas(owned, preserve_index=False)
        writer = BucketWriter(lambda k: ctx.social_path(b, k), table.schema)
        try:
            writer.write(table, bucket_of(owners.reindex(owned["profile_id"]).to_numpy(), ctx.buckets),
                         ctx.buckets)
        finally:
            writer.close()
    columns = latest.reset_index()[list(LATEST_COLUMNS)]
    columns["engagements"] = columns["engagements"].to_numpy("float64")
    table = pa.Table.from_pandas(columns, preserve_index=False).cast(
        pa.schema([("profile_id", pa.string()), ("customer_id", pa.string()), ("engagements", pa.float64())]))
    with ipc.new_file(str(ctx.latest_path(b)), table.schema) as writer:
        writer.write_table(table)
    return ProfileBucket(ids, hash_ids(ids) if len(ids) else np.array([], dtype="uint64"), len(latest),
                         [part], typed.iloc[:0])


def parsed_ids(raw: pd.Series) -> pd.Series:
    """The distinct ids of a raw column, parsed as the contract parses ids (missing dropped)."""
    from features.ingest.contract import PARSERS

    distinct = pd.Series(raw.dropna().unique(), dtype=raw.dtype)
    return PARSERS["id"](distinct).dropna()


# ---------------------------------------------------------------------------------------------
# Step 3: features and predictions


@dataclass
class LocalFeatures:
    columns: dict[str, list[str]]  # family -> its columns, for the families computed per chunk
    seconds: float


def local_features_bucket(b: int, ctx: ChunkContext, as_of: pd.Timestamp, model_key: str,
                          social_empty: pd.DataFrame | None) -> LocalFeatures:
    """The families that read only this bucket's customers (history, attributes, social, ...).

    Each family is built by build_features on its own; concatenated in registry order with the
    population-wide ones (score_bucket), the blocks are exactly what one build_features call makes.
    With worker processes this runs while the population-wide families are computed.
    """
    start = time.perf_counter()
    model = shared(model_key)
    typed = pd.read_pickle(ctx.typed_path(b))
    social = None
    if social_empty is not None:
        parts = [read_arrow(p).to_pandas() for p in sorted(ctx.work.glob(f"social-*-{b:05d}.arrow"))]
        social = pd.concat(parts, ignore_index=True) if parts else social_empty
    tables = Tables(customers=typed["customers"], transactions=typed["transactions"], social_profiles=social)
    blocks = {f.name: build_features(tables, as_of, model.config, families=[f.name])
              for f in select_families(model.families) if not f.population_wide}
    rows = build_features(tables, as_of, model.config, families=[])
    frame = pd.concat([rows, *blocks.values()], axis=1)
    pd.to_pickle({"features": frame, "customers": typed["customers"][["customer_id", "signup_date"]],
                  "transactions": typed["transactions"].iloc[:0]}, ctx.features_path(b))
    ctx.typed_path(b).unlink()
    return LocalFeatures({name: list(block.columns) for name, block in blocks.items()},
                         time.perf_counter() - start)


@dataclass
class ScoredBucket:
    ids: pa.Array
    values: np.ndarray
    inputs: Path | None  # the model input saved for reasons
    unseen_levels: Counter = field(default_factory=Counter)
    feature_seconds: float = 0.0
    predict_seconds: float = 0.0


def score_bucket(b: int, ctx: ChunkContext, as_of: pd.Timestamp, model_key: str, local: LocalFeatures,
                 keep_inputs: bool) -> ScoredBucket:
    """The bucket's full feature frame (its customers' population-wide rows joined), the manifest
    check, predictions."""
    start = time.perf_counter()
    model = shared(model_key)
    saved = pd.read_pickle(ctx.features_path(b))
    tables = Tables(customers=saved["customers"], transactions=saved["transactions"])
    population = pd.read_pickle(ctx.population_path(b))
    blocks = []
    for family in select_families(model.families):
        if family.name in local.columns:
            blocks.append(saved["features"][local.columns[family.name]])
        else:
            blocks.append(build_features(tables, as_of, model.config, families=[family.name],
                                         precomputed=population))
    features = pd.concat([saved["features"].iloc[:, :0], *blocks], axis=1)
    check_model_features(model, features)
    encoder = model.python_model.encoder
    inputs = encoder.model_input(features)
    out = ScoredBucket(pa.array(features.index.array, type=pa.string()), np.array([], dtype="float64"), None)
    out.feature_seconds = local.seconds + time.perf_counter() - start
    del saved, tables, features, blocks

    for name, levels in encoder.levels.items():
        unseen = inputs[name].notna().to_numpy() & ~is_in(inputs[name], list(levels))
        if unseen.any():
            out.unseen_levels[name] += int(unseen.sum())
    start = time.perf_counter()
    if len(inputs):
        out.values = np.asarray(model.pyfunc.predict(inputs), dtype="float64")
    out.predict_seconds = time.perf_counter() - start
    if keep_inputs:
        out.inputs = ctx.inputs_path(b)
        table = pa.Table.from_pandas(inputs.reset_index(drop=True), preserve_index=False)
        with ipc.new_file(str(out.inputs), table.schema) as writer:
            writer.write_table(table)
    ctx.features_path(b).unlink()
    ctx.population_path(b).unlink()
    return out
