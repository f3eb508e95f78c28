"""Batch scoring: every customer of a source valued by the registered model, in bounded memory.

``score_customers`` does the nightly job (docs/scoring.md):

1. Partition: customers and transactions are streamed from the source files into K temporary
   buckets by a stable hash of customer_id (K = ceil(customers / chunk_size)); profile snapshots into
   K buckets by profile_id. No table is held whole.
2. Validate bucket by bucket with the data contract (features.ingest.contract.check_table). A customer and
   their transactions meet in one bucket, all snapshots of a profile in another, so every row is
   judged exactly as the whole-table loader judges it.
3. Population-wide families (network centrality, topical share, referrals) are computed once over
   everyone and joined to every chunk. The interactions are streamed in batches through the
   families' own per-profile sums (features.families.interaction_sums): the graph's edges wait in files and
   the transition matrix is built one group of target profiles at a time; profile values then go
   to their owner's bucket and are summed per customer there.
4. Score chunk by chunk: build_features (the training code, with the model's FeatureConfig), the
   feature-manifest check, the MLflow pyfunc predict (signature enforced). Chunks may run in
   worker processes (which build each chunk's own families while step 3 runs); the output does
   not depend on how many.
5. Rank the whole base, add reasons (exact TreeSHAP; the top 10% by default), write the output to a
   hidden temporary file beside it, rename it into place, then write the JSON manifest.

Memory: one chunk per worker, plus what is per customer or per profile anyway (predictions, the id
sets, a few numbers per profile and the graph's transition matrix, 12 bytes per distinct edge);
no table is held whole (docs/performance.md, Scoring).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.ingest.attribute_kinds import AttributeKinds
from features.build import FAMILIES, as_timestamp, population_features, select_families
from features.ingest.contract import ContractError, check_table
from features.ingest.id_sets import IdSet
from features.families.interaction_sums import GRAPH_KINDS, TOPIC_COUNTS, InteractionSums
from features.families.network import FEATURES as NETWORK_FEATURES
from features.families.network import network_by_customer
from features.ingest.partition import (
    BucketWriter,
    bucket_of,
    count_rows,
    iter_batches,
    n_buckets,
    partition_table,
    read_arrow,
)
from features.families.profiles import empty_features, on_market_topic
from features.families.referral import revenue_rows
from features.ingest.source import fingerprint, is_database_url, read_table, table_files
from features.tables import TABLE_NAMES, Tables
from features.families.topical import FEATURES as TOPICAL_FEATURES
from features.families.topical import topical_by_customer
from serving.scoring.buckets import (
    BucketRunner,
    ChunkContext,
    CustomerBucket,
    ProfileBucket,
    ScoredBucket,
    local_features_bucket,
    parsed_ids,
    score_bucket,
    validate_customer_bucket,
    validate_profile_bucket,
)
from serving.scoring.interaction_codes import profile_positions
from serving.scoring.memory import release_freed_memory
from serving.scoring.reasons import reason_columns, top_reasons
from features.ingest.rejects import RejectLog, checked_part, write_part
from serving.scoring.model import (
    DEFAULT_MODEL_URI,
    ScoringModel,
    ScoringSkewError,
    check_model_features,
    load_scoring_model,
)
from serving.scoring.tiers import tier_sizes, value_ranks

__all__ = ["DEFAULT_MODEL_URI", "REASONS_FOR", "ScoringModel", "ScoringSkewError", "check_model_features",
           "load_scoring_model", "manifest_path", "rejects_path", "remove_stale_temporaries",
           "score_customers"]

REASONS_FOR = ("top10", "all", "none")
OUTPUT_ROW_GROUP = 100_000
INTERACTION_BATCH_ROWS = 1_000_000  # a batch's check holds a few hundred bytes a row, for a moment
# The interaction graph's transition matrix is built in groups of rows of this many profiles, from
# edges that wait in files until then (features.families.interaction_sums).
GRAPH_GROUP_PROFILES = 1_000_000
FAMILY_FEATURES = {"network": NETWORK_FEATURES, "topical": TOPICAL_FEATURES}
# Below this many customers worker processes cost more (start-up, loading the model) than they save.
PARALLEL_MIN_CUSTOMERS = 200_000


def score_customers(data, *, out, as_of=None, model_uri: str = DEFAULT_MODEL_URI, reasons: int = 3,
                    reasons_for: str = "top10", chunk_size: int = 100_000, progress: bool = True,
                    workers: int | None = None, rejects=None, reject_threshold: float | None = None,
                    model: ScoringModel | None = None) -> dict:
    """Score every customer of ``data`` into the Parquet file ``out``; returns the run's summary.

    data: a source directory (or a postgresql:// URL, read through features.ingest.database).
    as_of: scoring date; default the day after the latest valid transaction.
    reasons / reasons_for: reason columns per row, and who gets them: ``top10`` (the first
        ceil(n / 10) ranks), ``all`` or ``none``.
    chunk_size: customers per chunk (memory grows with it, the number of chunks with the base).
    workers: processes scoring chunks in parallel (default: 2 CPUs' worth for 200k+ customers, else 1).
    rejects: directory for rejected rows (default OUT_STEM.rejects/ beside the output).
    reject_threshold: largest share of rejected rows per table (default: the model's feature config).
    model: an already loaded ScoringModel (else ``model_uri`` is loaded).

    The summary is also written as JSON to OUT_STEM.manifest.json. Nothing is written when the
    source breaks the contract or the model's features do not match this code (ScoringSkewError).
    """
    started, cpu_started = time.perf_counter(), _tree_cpu_seconds()
    scored_at = pd.Timestamp.now(tz="UTC").tz_localize(None).as_unit("ns")
    if reasons_for not in REASONS_FOR:
        raise ValueError(f"reasons_for must be one of {REASONS_FOR}, got {reasons_for!r}")
    if reasons < 0:
        raise ValueError(f"reasons must be >= 0, got {reasons}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    model = model if model is not None else load_scoring_model(model_uri)
    threshold = model.config.reject_threshold if reject_threshold is None else float(reject_threshold)
    as_of = None if as_of is None else as_timestamp(as_of)

    work = _temp_name(out, "work")
    work.mkdir()
    tmp_out = _temp_name(out, "parquet")
    runner = None
    try:
        with _Progress(progress) as bar:
            clock = _Stopwatch()
            source, prints = _source_files(data, work)
            for table in ("customers", "transactions"):
                if table not in source:
                    raise ContractError(f"{table}: required table is missing")
            if "social_interactions" in source and "social_profiles" not in source:
                raise ContractError("social_interactions: needs the social_profiles table to resolve profile ids")
            n_customers = count_rows(source["customers"])
            run = _Run(work, n_buckets(n_customers, chunk_size), RejectLog(work), threshold, bar)
            if workers is None:
                workers = min(2, os.cpu_count() or 1) if n_customers >= PARALLEL_MIN_CUSTOMERS else 1
            if model.local_path is None:
                workers = 1
            runner = BucketRunner(work, workers)

            with clock("partition"):
                run.partition(source)
                release_freed_memory()  # the readers' buffers: not held while the workers run
            with clock("validate_customers"):
                run.validate_customers(runner, _referred_ids(source))
            if as_of is None:
                if run.latest_ns is None:
                    raise ContractError("transactions: no valid transaction to date the run from; pass as_of")
                as_of = as_timestamp(pd.Timestamp(run.latest_ns).normalize() + pd.Timedelta(days=1))
            with clock("validate_profiles"):
                run.validate_profiles(runner, as_of)
            model_key = runner.share_model(model)
            with clock("population_and_chunk_features"):
                # Each chunk's own families run in the workers while this process computes the
                # population-wide ones (in turn, without workers).
                pending = runner.submit(local_features_bucket, run.buckets, run.ctx, as_of, model_key,
                                        run.profiles[0].empty if run.profiles else None)
                with clock("population_features"):
                    run.population(source, as_of, model)
                local = pending.results()
            keep_inputs = reasons > 0 and reasons_for != "none"
            with clock("score_chunks"):
                scored = run.score(runner, as_of, model_key, local, keep_inputs)
            runner.close()
            with clock("rank_reasons_write"):
                written = _write_output(run, model, scored, tmp_out, as_of, scored_at, reasons, reasons_for)
                published = run.log.publish(Path(rejects) if rejects is not None else rejects_path(out))
        os.replace(tmp_out, out)
        summary = _summary(out, model, run, written, scored, prints, as_of, scored_at, published,
                           chunk_size, reasons, reasons_for, workers)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        summary["cpu_seconds"] = round(_tree_cpu_seconds() - cpu_started, 3)
        summary["customers_per_second"] = round(written.rows / summary["seconds"], 1)
        summary["stage_seconds"] = clock.seconds
        summary["stage_cpu_seconds"] = clock.cpu_seconds
        summary["peak_rss_mb_main_process_after_stage"] = clock.peak_rss_mb
        _write_json_atomic(summary, manifest_path(out))
        return summary
    finally:
        if runner is not None:
            runner.close()
        shutil.rmtree(work, ignore_errors=True)
        tmp_out.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The stages


class _Run:
    """What the stages of one run hand to each other (per-bucket lists are in bucket order)."""

    def __init__(self, work: Path, buckets: int, log: RejectLog, threshold: float, bar: _Progress):
        self.work, self.buckets, self.log, self.threshold, self.bar = work, buckets, log, threshold, bar
        self.ctx: ChunkContext | None = None
        self.customers: list[CustomerBucket] = []
        self.profiles: list[ProfileBucket] = []
        self.latest_ns: int | None = None

    @property
    def n_valid_customers(self) -> int:
        return int(sum(len(c.ids) for c in self.customers))

    def customer_set(self) -> IdSet:
        return IdSet([c.ids for c in self.customers], [c.hashes for c in self.customers])

    def take_profile_set(self) -> IdSet:
        """The set of valid profile ids; the buckets' pieces are dropped (the set holds a copy)."""
        ids, hashes = [p.profile_ids for p in self.profiles], [p.hashes for p in self.profiles]
        for bucket in self.profiles:
            bucket.profile_ids = bucket.hashes = None
        return IdSet(ids, hashes)

    def _record(self, parts, totals, final: bool) -> None:
        for part in parts:
            self.log.record(part)
            self.log.check_table(part.table, totals[part.table], self.threshold, final=final)

    def partition(self, source: dict[str, Path]) -> None:
        """Customers and transactions into buckets by customer, profile snapshots by profile."""
        kinds = AttributeKinds()
        targets = [("customers", "customer_id", kinds.add), ("transactions", "customer_id", None)]
        if "social_profiles" in source:
            targets.append(("social_profiles", "profile_id", None))
        files = {}
        for table, key, keep in targets:
            task = self.bar.task(f"partition {table}", None)
            files[table] = partition_table(
                source[table], table, key, self.buckets, self.work,
                keep=(lambda batch, where, f=keep: f(batch)) if keep else None,
                on_rows=lambda n, t=task: self.bar.advance(t, n))
            self.bar.done(task)
        self.ctx = ChunkContext(self.work, self.buckets, files, kinds.kinds())

    def validate_customers(self, runner: BucketRunner, referred: pd.Index) -> None:
        files = self.ctx.files
        totals = {"customers": files["customers"].rows_in, "transactions": files["transactions"].rows_in}
        task = self.bar.task("validate customers", self.buckets)
        done = Counter()

        def on_result(b, result: CustomerBucket):
            done["n"] += 1
            self._record(result.rejects, totals, final=done["n"] == self.buckets)
            self.bar.advance(task)

        self.customers = runner.map(validate_customer_bucket, self.buckets, self.ctx,
                                    runner.share("referred", referred), on_result=on_result)
        latest = [c.latest_ns for c in self.customers if c.latest_ns is not None]
        self.latest_ns = max(latest) if latest else None
        if self.n_valid_customers == 0:
            raise ContractError("customers: the table has no valid rows")

    def validate_profiles(self, runner: BucketRunner, as_of: pd.Timestamp) -> None:
        if "social_profiles" not in self.ctx.files:
            return
        totals = {"social_profiles": self.ctx.files["social_profiles"].rows_in}
        task = self.bar.task("validate social profiles", self.buckets)
        done = Counter()

        def on_result(b, result: ProfileBucket):
            done["n"] += 1
            self._record(result.rejects, totals, final=done["n"] == self.buckets)
            self.bar.advance(task)

        self.profiles = runner.map(validate_profile_bucket, self.buckets, self.ctx, as_of,
                                   runner.share("customers", self.customer_set()), on_result=on_result)

    def population(self, source: dict[str, Path], as_of: pd.Timestamp, model: ScoringModel) -> None:
        """The population-wide families, computed once over everyone, saved bucket by bucket.

        Referrals: from the referrals, the customers they name and the referred customers'
        transactions (population_features on those tables). Network and topical: the interactions
        are streamed through features.families.interaction_sums (the families' own sums; the graph's edges
        wait in files), then each profile's values are routed with its owner to the owner's bucket
        and summed per customer there (the families' own aggregation). Rows equal to what
        build_features gives a customer without a row are dropped (it rebuilds them exactly). Each
        bucket's customers' rows go to ctx.population_path(bucket), so a worker holds one chunk's.
        """
        task = self.bar.task("population features", None)
        names = [f.name for f in select_families(model.families) if f.population_wide]
        parts: list[dict[str, pd.DataFrame]] = [{} for _ in range(self.buckets)]
        if "referral" in names and "referrals" not in source:
            # Without the table every customer's referral features are unknown (NaN), not FILL:
            # the family says so bucket by bucket, from each bucket's customers alone.
            for b, bucket in enumerate(self.customers):
                parts[b]["referral"] = self._referral_features({}, as_of, model, bucket.ids, bucket.signups)
        elif "referral" in names:
            frame = self._referral_features(source, as_of, model)
            where = bucket_of(frame.index.to_series(), self.buckets)
            for b in range(self.buckets):
                parts[b]["referral"] = frame.iloc[np.flatnonzero(where == b)]
            del frame, where
        social = [name for name in ("network", "topical") if name in names]
        if social:
            self._social_features(source, as_of, model.config, social, parts)
        release_freed_memory()
        for b in range(self.buckets):
            frames = {}
            for name in names:  # registry order, as population_features returns them
                frame = _compact(name, parts[b].pop(name))
                # as_of stamp: build_features checks it against the chunk's
                frame.attrs = {"as_of": str(as_of), "family": name}
                frames[name] = frame
            pd.to_pickle(frames, self.ctx.population_path(b))
        self.bar.done(task)

    def _referral_features(self, source: dict[str, Path], as_of: pd.Timestamp, model: ScoringModel,
                           ids: pa.Array | None = None, signups: np.ndarray | None = None) -> pd.DataFrame:
        """The referral family over the customers the referrals name (no other customer has a row
        that differs from the family's FILL) and the referred customers' revenue
        (features.families.referral.revenue_rows of each bucket's referred transactions); or, given
        customers' ``ids`` and ``signups``, over those customers alone."""
        referrals = None
        if "referrals" in source:
            raw = read_table(source["referrals"])
            named = pd.concat([parsed_ids(raw[c]) for c in ("referrer_id", "referred_id") if c in raw])
            res = check_table("referrals", raw, {"customers": self.customer_set().known(named)}, self.threshold)
            self.log.record(write_part(self.work, "referrals", "all", res.rows_in, res.rejects, None))
            referrals = res.typed
            del raw, res, named
        if ids is None:
            mentioned = pa.array([], type=pa.string()) if referrals is None else pa.array(
                pd.concat([referrals["referrer_id"], referrals["referred_id"]]).unique(), type=pa.string())
            masks = [pc.is_in(c.ids, value_set=mentioned).to_numpy(zero_copy_only=False) for c in self.customers]
            ids = pa.chunked_array([c.ids.filter(pa.array(m)) for c, m in zip(self.customers, masks, strict=True)],
                                   type=pa.string())
            signups = np.concatenate([c.signups[m] for c, m in zip(self.customers, masks, strict=True)])
        customers = pd.DataFrame({"customer_id": pd.array(ids.to_pandas(), dtype="str"),
                                  "signup_date": signups.view("datetime64[ns]")})
        # One row per referred customer: the family reads only their revenue before as_of.
        revenue = [revenue_rows(pd.read_pickle(self.ctx.referred_path(b)), as_of)
                   for b in (range(self.buckets) if referrals is not None else [])]
        transactions = pd.concat(revenue, ignore_index=True) if revenue else pd.DataFrame(
            {"customer_id": pd.Series([], dtype="str"), "timestamp": pd.Series([], dtype="datetime64[ns]"),
             "amount": pd.Series([], dtype="float64")})
        del revenue
        tables = Tables(customers=customers, transactions=transactions, referrals=referrals)
        return population_features(tables, as_of, model.config, families=["referral"])["referral"]

    def _social_features(self, source: dict[str, Path], as_of: pd.Timestamp, config, names: list[str],
                         parts: list[dict[str, pd.DataFrame]]) -> None:
        """Network and topical features of every bucket's customers into ``parts``."""
        if not self.profiles or "social_interactions" not in source:
            for b in range(self.buckets):  # what the families give without both social tables
                for name in names:
                    parts[b][name] = empty_features(FAMILY_FEATURES[name])
            return
        profile_set = self.take_profile_set()
        codes = self._latest_codes(profile_set)
        sums = self._interaction_sums(source["social_interactions"], profile_set, as_of, config, codes)
        del profile_set
        release_freed_memory()
        values = dict(sums.centrality(config.pagerank_damping)) if "network" in names else {}
        topical = "topical" in names and sums.topics  # else the family gives an empty frame
        if topical:
            values.update(sums.counts)
        del sums
        release_freed_memory()
        self._route_to_owners(values, codes)
        del values, codes
        release_freed_memory()
        for b in range(self.buckets):
            paths = [self.ctx.owned_path(p, b) for p in range(self.buckets)]
            tables = [read_arrow(path) for path in paths if path.exists()]
            for path in paths:
                path.unlink(missing_ok=True)
            if not tables:  # no customer of this bucket owns a profile
                for name in names:
                    parts[b][name] = empty_features(FAMILY_FEATURES[name])
                continue
            rows = pa.concat_tables(tables).to_pandas()
            owners = rows["customer_id"].astype("str")
            if "network" in names:
                parts[b]["network"] = network_by_customer(
                    owners, {name: rows[name].to_numpy("float64") for name in NETWORK_FEATURES})
            if "topical" in names:
                parts[b]["topical"] = (
                    topical_by_customer(owners, rows["engagements"].to_numpy("float64"),
                                        {name: rows[name].to_numpy("int64") for name in TOPIC_COUNTS})
                    if topical else empty_features(TOPICAL_FEATURES))

    def _latest_codes(self, profile_set: IdSet) -> list[np.ndarray]:
        """Each profile bucket's latest snapshots as codes (positions in ``profile_set``), in the
        order of ctx.latest_path's rows."""
        codes = []
        for b in range(self.buckets):
            latest = read_arrow(self.ctx.latest_path(b))
            found = profile_set.positions(latest.column("profile_id").combine_chunks())
            if (found < 0).any():
                raise AssertionError("a latest snapshot's profile is missing from the run's profile set")
            codes.append(found.astype(np.int32))
        return codes

    def _interaction_sums(self, path: Path, profiles: IdSet, as_of: pd.Timestamp, config,
                          latest_codes: list[np.ndarray]) -> InteractionSums:
        """The interactions checked batch by batch and added to features.families.interaction_sums.

        Each batch is checked against the known profiles it mentions, so a batch costs time in
        proportion to its own rows, not to the number of profiles (which grows with the base); it
        is then reduced to profile codes (positions in ``profiles``) and dropped.
        """
        topics = tuple(sorted({t.strip().lower() for t in config.market_topics}))
        sums, offset = None, 0

        def start(has_topic: bool) -> InteractionSums:
            out = InteractionSums(len(profiles), as_of, config.interaction_half_life_days,
                                  topics=bool(topics) and has_topic,
                                  blocks=-(-len(profiles) // GRAPH_GROUP_PROFILES), spill=self.work / "graph")
            for codes in latest_codes:
                out.add_profiles(codes)
            return out

        # Parquet footers give the row count for early stops; a CSV is judged once it has been read.
        total = count_rows(path) if path.is_dir() or path.name.endswith(".parquet") else None
        self.log.rows_in["social_interactions"] += 0  # listed even when the table has no rows
        batches = iter_batches(path, table="social_interactions", batch_rows=INTERACTION_BATCH_ROWS)
        for part, batch in enumerate(batches):
            raw = batch.to_pandas()
            rows = np.arange(offset, offset + len(raw), dtype="int64")
            offset += len(raw)
            mentioned = pd.concat([parsed_ids(raw[c]) for c in ("source_profile_id", "target_profile_id")
                                   if c in raw])
            mentioned = pa.array(mentioned.unique(), type=pa.string())
            where = profiles.positions(mentioned)
            known = pd.Index(mentioned.filter(pa.array(where >= 0)).to_pandas(), dtype="str")
            res, reject_part = checked_part("social_interactions", raw, {"profiles": known},
                                            rows, self.work, f"{part:05d}")
            self.log.record(reject_part)
            if total:
                self.log.check_table("social_interactions", total, self.threshold, final=False)
            del raw
            typed = res.typed
            if sums is None:
                sums = start("topic" in typed.columns)
            source, target = profile_positions(typed, mentioned, where)
            sums.add(source, target, typed["timestamp"].to_numpy("datetime64[ns]").view("int64"),
                     typed["kind"].isin(GRAPH_KINDS).to_numpy(),
                     typed["topic"].notna().to_numpy() if sums.topics else None,
                     on_market_topic(typed["topic"], topics) if sums.topics else None)
            del res, typed, source, target
            release_freed_memory()
        self.log.check_table("social_interactions", offset, self.threshold, final=True)
        return sums if sums is not None else start(False)

    def _route_to_owners(self, values: dict[str, np.ndarray], codes: list[np.ndarray]) -> None:
        """Every owned profile's values (taken by its code), owner and latest engagements, written
        to the owner's bucket (ctx.owned_path), one profile bucket at a time."""
        for p, profile_codes in enumerate(codes):
            latest = read_arrow(self.ctx.latest_path(p))
            owned = latest.column("customer_id").is_valid().to_numpy(zero_copy_only=False)
            if not owned.any():
                continue
            taken = profile_codes[owned]
            mask = pa.array(owned)
            columns = {"customer_id": latest.column("customer_id").filter(mask),
                       "engagements": latest.column("engagements").filter(mask)}
            columns.update({name: pa.array(v[taken]) for name, v in values.items()})
            table = pa.table(columns)
            writer = BucketWriter(lambda b, p=p: self.ctx.owned_path(p, b), table.schema)
            try:
                writer.write(table, bucket_of(table.column("customer_id").to_pandas(), self.buckets), self.buckets)
            finally:
                writer.close()

    def score(self, runner: BucketRunner, as_of: pd.Timestamp, model_key: str, local: list,
              keep_inputs: bool) -> list[ScoredBucket]:
        task = self.bar.task("score", self.buckets)
        return runner.map(_score_one, self.buckets, self.ctx, as_of, model_key, local,
                          keep_inputs, on_result=lambda b, r: self.bar.advance(task))


def _score_one(b: int, ctx: ChunkContext, as_of, model_key: str, local: list,
               keep_inputs: bool) -> ScoredBucket:
    return score_bucket(b, ctx, as_of, model_key, local[b], keep_inputs)


def _source_files(data, work: Path) -> tuple[dict[str, Path], dict]:
    """The file of each table, and the inputs' fingerprint.

    A database source is streamed chunk by chunk (a server-side cursor, one snapshot) into a
    partitioned Parquet directory in the work directory; from there the run is the same.
    """
    if is_database_url(data):
        from features.ingest.database import export_database

        prints = export_database(str(data), work / "source")
        return {table: paths[0] for table, paths in table_files(work / "source").items()}, prints
    files = table_files(data)
    return {table: paths[0] for table, paths in files.items()}, fingerprint(files)


def _referred_ids(source: dict[str, Path]) -> pd.Index:
    """Customers named as referred in the referrals table: their transactions feed referral revenue."""
    if "referrals" not in source:
        return pd.Index([], dtype="str")
    parts = [parsed_ids(batch.column("referred_id").to_pandas())
             for batch in iter_batches(source["referrals"], table="referrals")
             if "referred_id" in batch.schema.names]
    return pd.Index(pd.concat(parts).unique() if parts else [], dtype="str")


def _compact(family: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The family's frame without the rows build_features rebuilds for a customer it has no row for
    (every value equal to the family's FILL, or NaN where it has none): same features, less memory."""
    fill = next(f.fill for f in FAMILIES if f.name == family)
    same = np.ones(len(frame), dtype=bool)
    for column in frame.columns:
        values = frame[column]
        numeric = pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype)
        if numeric and column in fill:
            same &= values.to_numpy(dtype="float64", na_value=np.nan) == fill[column]
        else:
            same &= values.isna().to_numpy()
    out = frame.loc[~same]
    out.attrs = dict(frame.attrs)
    return out


# ---------------------------------------------------------------------------------------------
# Ranking, reasons and the output file


@dataclass
class _Written:
    rows: int
    reasons_rows: int
    reasons_seconds: float
    tiers: dict = field(default_factory=dict)


def _write_output(run: _Run, model: ScoringModel, scored: list[ScoredBucket], tmp_out: Path,
                  as_of: pd.Timestamp, scored_at: pd.Timestamp, reasons: int, reasons_for: str) -> _Written:
    """Rank the whole base, add reasons, write the output sorted by value_rank to ``tmp_out``.

    The ranking needs every prediction, so predictions (id, value) are held until here: they are
    the output itself. Reasons are computed bucket by bucket, for the customers ranked high enough,
    from the model inputs saved while scoring.
    """
    names = reason_columns(reasons)
    constants = {
        "model_name": pa.scalar(model.name, pa.string()),
        "model_version": pa.scalar(model.version, pa.string()),
        "model_run_id": pa.scalar(model.run_id, pa.string()),
        "as_of": pa.scalar(as_of.to_datetime64(), pa.timestamp("ns")),
        "horizon_days": pa.scalar(model.horizon_days, pa.int64()),
        "scored_at": pa.scalar(scored_at.to_datetime64(), pa.timestamp("ns")),
    }
    schema = pa.schema(
        [("customer_id", pa.string()), ("predicted_value", pa.float64()), ("value_rank", pa.int64()),
         ("value_percentile", pa.float64()), ("value_tier", pa.string())]
        + [(name, pa.string()) for name in names]
        + [(name, value.type) for name, value in constants.items()]
    )
    with pq.ParquetWriter(tmp_out, schema) as writer:
        ids = pa.chunked_array([s.ids for s in scored], type=pa.string()).combine_chunks()
        values = np.concatenate([s.values for s in scored])
        n = len(values)
        ranked = value_ranks(ids, values)
        rank = ranked["value_rank"].to_numpy()
        cut = {"top10": tier_sizes(n)["top_10pct"], "all": n, "none": 0}[reasons_for] if reasons else 0
        texts, reasons_rows, reasons_seconds = _reasons_by_rank(run, scored, model, rank, cut, names)
        columns = {
            "customer_id": ids,
            "predicted_value": pa.array(values, type=pa.float64()),
            "value_rank": pa.array(rank, type=pa.int64()),
            "value_percentile": pa.array(ranked["value_percentile"].to_numpy(), type=pa.float64()),
            "value_tier": pa.array(ranked["value_tier"].array, type=pa.string()),
            **texts,
        }
        order = np.argsort(rank, kind="stable")
        for start in range(0, max(n, 1), OUTPUT_ROW_GROUP):
            take = pa.array(order[start: start + OUTPUT_ROW_GROUP], type=pa.int64())
            arrays = [columns[name].take(take) for name in columns]
            arrays += [pa.repeat(value, len(take)) for value in constants.values()]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    tiers = ranked["value_tier"].value_counts()
    return _Written(n, reasons_rows, reasons_seconds, {str(k): int(v) for k, v in tiers.items()})


def _reasons_by_rank(run: _Run, scored: list[ScoredBucket], model: ScoringModel, rank: np.ndarray, cut: int,
                     names: list[str]) -> tuple[dict, int, float]:
    """reason_1..k aligned with the predictions (null outside the first ``cut`` ranks), bucket by bucket."""
    parts: dict[str, list] = {name: [] for name in names}
    rows, seconds, offset = 0, 0.0, 0
    task = run.bar.task("reasons", run.buckets) if cut else None
    for bucket in scored:
        m = len(bucket.values)
        wanted = np.flatnonzero(rank[offset: offset + m] <= cut)
        found = None
        if len(wanted):
            start = time.perf_counter()
            inputs = read_arrow(bucket.inputs).take(pa.array(wanted)).to_pandas()
            found = top_reasons(model.python_model.contributions(inputs), inputs, len(names))
            seconds += time.perf_counter() - start
            rows += len(wanted)
        for name in names:
            full = np.full(m, None, dtype=object)
            if found is not None:
                full[wanted] = found[name].to_numpy(dtype=object, na_value=None)
            parts[name].append(pa.array(full, type=pa.string()))
        offset += m
        run.bar.advance(task)
    return {name: pa.chunked_array(p, type=pa.string()) for name, p in parts.items()}, rows, seconds


def _summary(out: Path, model: ScoringModel, run: _Run, written: _Written, scored: list[ScoredBucket],
             prints: dict, as_of: pd.Timestamp, scored_at: pd.Timestamp, rejects: list[Path],
             chunk_size: int, reasons: int, reasons_for: str, workers: int) -> dict:
    """The run's manifest; checks on the way that every customer of the source is accounted for."""
    tables = run.log.summary()
    customers_in = tables["customers"]["rows_in"]
    rejected = tables["customers"]["rows_rejected"]
    not_yet = run.n_valid_customers - written.rows
    if written.rows + not_yet + rejected != customers_in or not_yet < 0:
        raise AssertionError(f"customers unaccounted for: {customers_in} in, {written.rows} scored, "
                             f"{not_yet} not yet customers, {rejected} rejected")
    unseen: Counter = Counter()
    for bucket in scored:
        unseen.update(bucket.unseen_levels)
    return {
        "output": str(out),
        "manifest": str(manifest_path(out)),
        "rejects": [str(p) for p in rejects],
        "customers_in": customers_in,
        "scored": written.rows,
        "rejected_customers": rejected,
        "not_yet_customers": not_yet,
        "tables": tables,
        "tiers": written.tiers,
        "as_of": str(as_of),
        "horizon_days": model.horizon_days,
        "scored_at": str(scored_at),
        "model": model.describe(),
        "feature_manifest_hash": model.manifest.manifest_hash,
        "unseen_category_levels": dict(unseen),
        "inputs": prints,
        "chunks": run.buckets,
        "chunk_size": chunk_size,
        "workers": workers,
        "reasons": {
            "per_customer": reasons, "for": reasons_for, "rows": written.reasons_rows,
            "seconds": round(written.reasons_seconds, 3),
            "rows_per_second": (round(written.reasons_rows / written.reasons_seconds, 1)
                                if written.reasons_seconds else None),
        },
        "features_seconds": round(sum(s.feature_seconds for s in scored), 3),
        "predict_seconds": round(sum(s.predict_seconds for s in scored), 3),
    }


# ---------------------------------------------------------------------------------------------
# Files of one run


def _temp_name(out: Path, kind: str) -> Path:
    """A hidden name beside the output, naming this process: .OUT.PID-XXXXXXXX.KIND.tmp"""
    return out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.{kind}.tmp"


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the hidden temporaries left beside ``out`` (and its manifest and rejects) by killed runs.

    A temporary names the process that wrote it; those of a process still running are left alone.
    """
    removed = []
    candidates = [(out.parent, out.name), (out.parent, manifest_path(out).name)]
    candidates += [(rejects_path(out), f"{table}.csv") for table in TABLE_NAMES]
    for directory, name in candidates:
        for path in directory.glob(f".{name}.*.tmp"):
            match = re.match(rf"\.{re.escape(name)}\.(\d+)", path.name)
            if match and int(match.group(1)) != os.getpid() and _alive(int(match.group(1))):
                continue  # another run writing the same output right now
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def manifest_path(out: Path) -> Path:
    """OUT_STEM.manifest.json beside OUT_STEM.parquet."""
    return out.with_name(f"{out.name.removesuffix('.parquet')}.manifest.json")


def rejects_path(out: Path) -> Path:
    """OUT_STEM.rejects/ beside OUT_STEM.parquet: one <table>.csv per table with rejected rows."""
    return out.with_name(f"{out.name.removesuffix('.parquet')}.rejects")


def _write_json_atomic(value: dict, path: Path) -> Path:
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# Progress and timing


class _Progress:
    """A rich progress bar per stage on stderr (nothing when disabled)."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=False)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False

    def task(self, description: str, total: int | None):
        return None if self.bar is None else self.bar.add_task(description, total=total)

    def advance(self, task, n: int = 1) -> None:
        if self.bar is not None and task is not None:
            self.bar.advance(task, n)

    def done(self, task) -> None:
        if self.bar is not None and task is not None:
            total = self.bar.tasks[task].total
            self.bar.update(task, completed=total if total is not None else 1, total=total or 1)


class _Stopwatch:
    """Wall and CPU seconds per stage (CPU of this process and its workers), and this process's peak
    memory when each stage ended; reported in the manifest, for docs/performance.md."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start, cpu = time.perf_counter(), _tree_cpu_seconds()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 3)
            self.cpu_seconds[stage] = round(self.cpu_seconds.get(stage, 0.0) + _tree_cpu_seconds() - cpu, 3)
            self.peak_rss_mb[stage] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process, its finished children and its live worker processes."""
    me = psutil.Process()
    times = me.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    return total
