"""Batch scoring on one machine: every customer of a source valued by the registered model, in chunks.

``score_customers`` does the nightly job (docs/scoring.md):

1. Partition: customers and transactions are streamed from the source files into K temporary
   buckets by a stable hash of customer_id (K = ceil(customers / chunk_size)); profile snapshots into
   K buckets by profile_id. No table is held whole.
2. Validate bucket by bucket with the data contract (features.ingest.contract.check_table). A
   customer and their transactions meet in one bucket, all snapshots of a profile in another, so
   every row is judged exactly as the whole-table loader judges it.
3. Population-wide families (network centrality, topical share, referrals, the btyd fit) are
   computed once over everyone (serving.scoring.population_step, feeding features.population) and
   joined to every chunk. With worker processes, they take the referrals and the btyd fit, then
   build each chunk's own families, while the main process does the social graph.
4. Score chunk by chunk: build_features (the training code, with the model's FeatureConfig), the
   feature-manifest check, the MLflow pyfunc predict (signature enforced). Chunks may run in
   worker processes; the output does not depend on how many.
5. Rank the whole base, add reasons (exact TreeSHAP; the top 10% by default) and write the output
   (serving.scoring.core) in the run's work directory (serving.scoring.work_dir); once every
   customer is accounted for, publish the rejects, then the scores and their manifest as a
   checkable pair (serving.scoring.publish).

Memory: one chunk per worker, plus what is per customer or per profile anyway (predictions, the id
sets, a few numbers per profile and the graph's transition matrix, 12 bytes per distinct edge);
no table is held whole (docs/performance.md, Scoring).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.ingest.attribute_kinds import AttributeKinds
from features.ingest.contract import check_has_customers, check_table_set, parsed_ids
from features.ingest.database import export_database
from features.ingest.export_checks import DEFAULT_RULES, ExportNotes, ExportRules
from features.ingest.id_sets import IdSet
from features.ingest.mapping import SourceMapping, as_mapping
from features.ingest.partition import (
    BucketFiles,
    count_rows,
    iter_batches,
    n_buckets,
    partition_table,
    read_arrow,
    table_columns,
)
from features.ingest.rejects import RejectLog
from features.ingest.source import fingerprint, is_database_url, table_files
from features.run_request import check_cutoff, default_as_of
from serving.scoring import core
from serving.scoring.buckets import (
    ChunkContext,
    CustomerBucket,
    ProfileBucket,
    ScoredBucket,
    local_features_bucket,
    ready_imports,
    ready_worker,
    score_bucket,
    valid_ids,
    validate_customer_bucket,
    validate_profile_bucket,
)
from serving.scoring.memory import release_freed_memory
from serving.scoring.model import DEFAULT_MODEL_URI, MODEL_FILES, ScoringModel, load_scoring_model
from serving.scoring.population_step import compute_population, start_worker_families
from serving.scoring.progress import Progress, Stopwatch, tree_cpu_seconds
from serving.scoring.publish import publish_scores
from serving.scoring.reasons import reason_columns
from serving.scoring.runner import BucketRunner
from serving.scoring.tiers import ranked_order, value_ranks
from serving.scoring.tracked_run import track_and_check
from serving.scoring.work_dir import (
    make_work_directory,
    release_work_directory,
    remove_dead_work_directories,
    remove_dead_workers_folders,
)
from training.model_source import check_model_source

OUTPUT_ROW_GROUP = 100_000
# Below this many customers worker processes cost more (start-up, loading the model) than they save.
PARALLEL_MIN_CUSTOMERS = 200_000


def score_customers(data, *, out, as_of: pd.Timestamp | None = None, model_uri: str = DEFAULT_MODEL_URI,
                    reasons: int = 3, reasons_for: str = "top10", chunk_size: int = 100_000,
                    progress: bool = True, workers: int | None = None, rejects=None,
                    reject_threshold: float | None = None, model: ScoringModel | None = None,
                    allow_missing=(), decimal: str | None = None, max_amount: float | None = None,
                    mapping=None, trust_model_from=None, currency: str | None = None,
                    drift_threshold: float | None = None, fail_on_drift: bool = False,
                    track: bool = True) -> dict:
    """Score every customer of ``data`` into the Parquet file ``out``; returns the run's summary.

    data: a source directory (or a postgresql:// URL, read through features.ingest.database).
    as_of: scoring date; None: the day after the latest valid transaction.
    reasons / reasons_for: reason columns per row, and who gets them: ``top10`` (the first
        ceil(n / 10) ranks), ``all`` or ``none``.
    chunk_size: customers per chunk (memory grows with it, the number of chunks with the base).
    workers: processes scoring chunks in parallel (default: 2 CPUs' worth for 200k+ customers, else 1).
    rejects: directory for rejected rows (default OUT_STEM.rejects/ beside the output).
    reject_threshold: largest share of rejected rows per table (default: the model's feature config).
    model: an already loaded ScoringModel (else ``model_uri`` is loaded).
    trust_model_from: a local folder whose models may be loaded although they are not in the
        MLflow store (``model_uri`` a path at or under it); otherwise only models:/ and runs:/
        URIs are loaded (training.model_source, docs/security.md).
    allow_missing: optional tables the model was trained with that the source may lack (recorded
        in the manifest); any other missing one stops the run (core.check_model_tables).
    decimal / max_amount: how the exports write values (default: as the model was trained).
    mapping: table and column names of the source that differ from the contract
        (features.ingest.mapping.SourceMapping, a dict or a JSON/TOML file).
    currency: labels money in the manifest (default: the training run's ``currency``).
    drift_threshold / fail_on_drift: the PSI above which a feature or the predictions count as
        drifted (default 0.25); with ``fail_on_drift`` a drifted run publishes nothing and raises
        serving.scoring.tracked_run.DriftError (the scoring run is still logged).
    track: log the run to MLflow (serving.scoring.tracked_run), in the experiment
        ``<model name>-scoring``.

    The summary is also written as JSON to OUT_STEM.manifest.json. Nothing is written when the
    source breaks the contract or the model's features do not match this code (ScoringSkewError).
    """
    started, cpu_started = time.perf_counter(), tree_cpu_seconds()
    scored_at = pd.Timestamp.now(tz="UTC").tz_localize(None).as_unit("ns")
    core.check_options(reasons, reasons_for, chunk_size, drift_threshold, currency)
    if as_of is not None:
        check_cutoff(as_of)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    core.remove_stale_temporaries(out)
    remove_dead_work_directories(out)  # killed runs' leftovers, whatever output they were writing
    remove_dead_workers_folders()  # and their worker pools' in the system's temporary directory
    clock = Stopwatch()
    work = make_work_directory(out)
    tmp_out = work / out.name  # the scores until they are published
    runner = None
    try:
        if model is None:
            check_model_source(model_uri, trust_model_from)  # refused before any worker starts
        early = _early_workers(data, mapping, workers, model, chunk_size)
        if early > 1:  # they import what they need (4 s each) while this process loads the model
            runner = BucketRunner(work, early)
            runner.warm_up(ready_imports)
        with clock("load_model"):  # its files go into the work directory: removed with it, even if killed
            model = model if model is not None else load_scoring_model(
                model_uri, trust_model_from=trust_model_from, files_in=work / MODEL_FILES)
        threshold = model.config.reject_threshold if reject_threshold is None else float(reject_threshold)
        rules = core.export_rules(model, decimal, max_amount)
        with Progress(progress) as bar:
            with clock("read_source"):  # fingerprints the files; a database is exported first
                source, prints, renames = _source_files(data, work, mapping)
                check_table_set(set(source))
                missing = core.check_model_tables(model, set(source), allow_missing)
                missing += core.check_model_columns(
                    model, {t: table_columns(p, renames.renaming(t)) for t, p in source.items()}, allow_missing)
                n_customers = count_rows(source["customers"])
            run = _Run(work, n_buckets(n_customers, chunk_size), RejectLog(work), threshold, bar, rules,
                       mapping=renames)
            workers = 1 if model.local_path is None else _worker_count(workers, n_customers)
            if runner is None or runner.workers != workers:
                if runner is not None:
                    runner.close()
                runner = BucketRunner(work, workers)
            model_key = runner.share_model(model)
            # The workers start (imports, the model) while this process partitions the source.
            if run.buckets > 1:
                runner.warm_up(ready_worker, model_key)

            with clock("partition"):
                run.partition(source)
                release_freed_memory()  # the readers' buffers: not held while the workers run
            with clock("validate_customers"):
                run.validate_customers(runner, _referred_ids(source, renames))
            if as_of is None:
                as_of = default_as_of(None if run.latest_ns is None else pd.Timestamp(run.latest_ns))
            with clock("validate_profiles"):
                run.validate_profiles(runner, as_of)
            with clock("population_and_chunk_features"):
                # The workers compute the referral family and the btyd fit, then build each chunk's
                # own families, while this process computes the social graph's.
                in_workers = start_worker_families(run, runner, source, as_of, model)
                pending = runner.submit(local_features_bucket, run.buckets, run.ctx, as_of, model_key,
                                        run.profiles[0].empty if run.profiles else None)
                with clock("population_features"):
                    compute_population(run, source, as_of, model, in_workers)
                local = pending.results()
                in_workers.wait()
            keep_inputs = reasons > 0 and reasons_for != "none"
            with clock("score_chunks"):
                scored = run.score(runner, as_of, model_key, local, keep_inputs)
            runner.close()
            with clock("rank_reasons_write"):
                written = _write_output(run, model, scored, tmp_out, as_of, scored_at, reasons, reasons_for)
                core.check_run(run.log.summary(), written.rows, run.n_valid_customers - written.rows, as_of)
                published = run.log.publish(Path(rejects) if rejects is not None else core.rejects_path(out))
        unseen: Counter = Counter()
        for bucket in scored:
            unseen.update(bucket.unseen_levels)
        manifest = core.scoring_manifest(core.ScoredRun(
            out=out, model=model, tables=run.log.summary(), scored=written.rows,
            not_yet=run.n_valid_customers - written.rows, tiers=written.tiers, as_of=as_of,
            scored_at=scored_at, rejects=published, fingerprint=prints, chunks=run.buckets,
            chunk_size=chunk_size, reasons=reasons, reasons_for=reasons_for,
            reasons_rows=written.reasons.rows, reasons_seconds=written.reasons.seconds, unseen_levels=unseen,
            features_seconds=sum(s.feature_seconds for s in scored),
            predict_seconds=sum(s.predict_seconds for s in scored), missing_tables=missing,
            notes=sum((c.notes for c in run.customers), ExportNotes()).lines(),
            economics=written.economics, currency=core.currency_of(model, currency),
            drift=core.drift_of(model, [s.drift_counts for s in scored], drift_threshold)))
        manifest["engine"] = "pandas"
        manifest["workers"] = workers
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        manifest["cpu_seconds"] = round(tree_cpu_seconds() - cpu_started, 3)
        manifest["customers_per_second"] = round(written.rows / manifest["seconds"], 1)
        manifest["stage_seconds"] = clock.seconds
        manifest["stage_cpu_seconds"] = clock.cpu_seconds
        manifest["peak_rss_mb_main_process_after_stage"] = clock.peak_rss_mb
        track_and_check(manifest, model, track=track, fail_on_drift=fail_on_drift)
        return publish_scores(tmp_out, out, manifest)
    except BaseException:  # an error, or the process told to stop (SIGTERM, Ctrl-C)
        if runner is not None:
            runner.abort()  # at once, not after each worker's step
        raise
    finally:
        if runner is not None:
            runner.close()  # first: the workers load the model from the work directory
        release_work_directory(work)


# ---------------------------------------------------------------------------------------------
# The stages


class _Run:
    """What the stages of one run hand to each other (per-bucket lists are in bucket order)."""

    def __init__(self, work: Path, buckets: int, log: RejectLog, threshold: float, bar: Progress,
                 rules: ExportRules = DEFAULT_RULES, *, mapping: SourceMapping | None = None):
        self.work, self.buckets, self.log, self.threshold, self.bar = work, buckets, log, threshold, bar
        self.rules = rules
        self.mapping = mapping or SourceMapping()  # renames the source files' columns as they are read
        self.ctx: ChunkContext | None = None
        self.customers: list[CustomerBucket] = []
        self.profiles: list[ProfileBucket] = []
        self.latest_ns: int | None = None
        self._valid_customers = 0

    @property
    def n_valid_customers(self) -> int:
        return self._valid_customers

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

        def one(table: str, key: str, keep) -> BucketFiles:
            task = self.bar.task(f"partition {table}", None)
            out = partition_table(
                source[table], table, key, self.buckets, self.work,
                keep=(lambda batch, where, f=keep: f(batch)) if keep else None,
                on_rows=lambda n, t=task: self.bar.advance(t, n), renaming=self.mapping.renaming(table))
            self.bar.done(task)
            return out

        # The snapshots are partitioned beside the customers and transactions: reading Parquet,
        # hashing ids and writing Arrow files mostly run outside the GIL. Each table stays in one
        # thread, so its bucket files are the same as in a serial run; an error is raised in table order.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="clv-partition") as pool:
            first = pool.submit(lambda: {t: one(t, k, f) for t, k, f in targets[:2]})
            rest = [(t, pool.submit(one, t, k, f)) for t, k, f in targets[2:]]
            files = first.result()
            files.update({t: future.result() for t, future in rest})
        self.ctx = ChunkContext(self.work, self.buckets, files, kinds.kinds(), self.rules)

    def validate_customers(self, runner: BucketRunner, referred: IdSet) -> None:
        files = self.ctx.files
        totals = {"customers": files["customers"].rows_in, "transactions": files["transactions"].rows_in}
        referred_key = runner.share("referred", referred)
        self.customers = self._checked_map(runner, "validate customers", totals, validate_customer_bucket,
                                           referred_key)
        runner.unshare(referred_key)
        self._valid_customers = int(sum(len(c.ids) for c in self.customers))
        latest = [c.latest_ns for c in self.customers if c.latest_ns is not None]
        self.latest_ns = max(latest) if latest else None
        check_has_customers(self.n_valid_customers)

    def validate_profiles(self, runner: BucketRunner, as_of: pd.Timestamp) -> None:
        """The profile buckets checked against the valid customers; then the customers' ids are let
        go here and in the workers (a few hundred MB at millions of customers, under the population
        step's peak otherwise): later steps read them from the customer step's files."""
        if "social_profiles" in self.ctx.files:
            totals = {"social_profiles": self.ctx.files["social_profiles"].rows_in}
            customers_key = runner.share("customers", self.customer_set())
            self.profiles = self._checked_map(runner, "validate social profiles", totals, validate_profile_bucket,
                                              as_of, customers_key)
            runner.unshare(customers_key)
        for bucket in self.customers:
            bucket.ids = bucket.hashes = None
        self.log.known_ids = lambda target: self._saved_customer_ids() if target == "customers" else None
        release_freed_memory()

    def _saved_customer_ids(self) -> pd.Index | None:
        """The valid customers' ids as the customer step saved them (ctx.customers_path; a bucket's
        file is gone once the bucket is scored)."""
        parts = [valid_ids(self.ctx, b) for b in range(self.buckets) if self.ctx.customers_path(b).exists()]
        return pd.Index(pa.concat_arrays(parts).to_pandas(), dtype="str") if parts else None

    def _checked_map(self, runner: BucketRunner, label: str, totals: dict[str, int], step, *args) -> list:
        """A validation step over every bucket; each bucket's rejects are recorded as it ends, and the
        tables' whole-table rules judged once the last one is in."""
        task = self.bar.task(label, self.buckets)
        done = Counter()
        valid_ids: list[pa.Array] = []  # customers validated so far, for a message naming unknown ids
        if self.log.known_ids is None:
            self.log.known_ids = lambda target: (
                pd.Index(pa.concat_arrays(valid_ids).to_pandas(), dtype="str")
                if target == "customers" and valid_ids else None)

        def on_result(b, result: CustomerBucket | ProfileBucket):
            done["n"] += 1
            if isinstance(result, CustomerBucket) and len(result.ids):
                valid_ids.append(result.ids)
            self._record(result.rejects, totals, final=done["n"] == self.buckets)
            self.bar.advance(task)

        return runner.map(step, self.buckets, self.ctx, *args, on_result=on_result)

    def score(self, runner: BucketRunner, as_of: pd.Timestamp, model_key: str, local: list,
              keep_inputs: bool) -> list[ScoredBucket]:
        task = self.bar.task("score", self.buckets)
        return runner.map(_score_one, self.buckets, self.ctx, as_of, model_key, local,
                          keep_inputs, on_result=lambda b, r: self.bar.advance(task))


def _worker_count(workers: int | None, n_customers: int) -> int:
    """Worker processes: as asked, else 2 CPUs' worth for large bases (PARALLEL_MIN_CUSTOMERS)."""
    if workers is not None:
        return max(1, int(workers))
    return min(2, os.cpu_count() or 1) if n_customers >= PARALLEL_MIN_CUSTOMERS else 1


def _early_workers(data, mapping, workers: int | None, model: ScoringModel | None, chunk_size: int) -> int:
    """The run's worker processes when they are known before the model loads: the source is a folder
    whose customers are Parquet (rows counted from the footers). 1 when not known yet: the workers
    then start once the source is read. A source that cannot be read here is told about later,
    after the model's own errors, as before."""
    if is_database_url(data) or (model is not None and model.local_path is None):
        return 1
    try:
        customers = table_files(data, as_mapping(mapping)).get("customers") or []
        parquet = len(customers) == 1 and (customers[0].is_dir() or customers[0].name.endswith(".parquet"))
        n_customers = count_rows(customers[0]) if parquet else 0
    except (OSError, ValueError, pa.ArrowException):  # ContractError is a ValueError
        return 1
    return _worker_count(workers, n_customers) if n_buckets(n_customers, chunk_size) > 1 else 1


def _score_one(b: int, ctx: ChunkContext, as_of, model_key: str, local: list,
               keep_inputs: bool) -> ScoredBucket:
    return score_bucket(b, ctx, as_of, model_key, local[b], keep_inputs)


def _source_files(data, work: Path, mapping=None) -> tuple[dict[str, Path], dict, SourceMapping]:
    """The file of each table, the inputs' fingerprint, and the mapping still to apply to the files'
    columns as they are read.

    A database source is streamed chunk by chunk (a server-side cursor, one snapshot) into a
    partitioned Parquet directory in the work directory, under contract names; from there the run is
    the same.
    """
    if is_database_url(data):
        prints = export_database(str(data), work / "source", mapping=mapping)
        return {table: paths[0] for table, paths in table_files(work / "source").items()}, prints, SourceMapping()
    mapping = as_mapping(mapping)
    files = table_files(data, mapping)
    return {table: paths[0] for table, paths in files.items()}, fingerprint(files, mapping), mapping


def _referred_ids(source: dict[str, Path], mapping: SourceMapping) -> IdSet:
    """Customers named as referred in the referrals table: their transactions feed referral revenue.
    A set built once for every bucket (IdSet.contains), not a hash table per bucket."""
    if "referrals" not in source:
        return IdSet([])
    parts = [parsed_ids(batch.column("referred_id").to_pandas())
             for batch in iter_batches(source["referrals"], table="referrals",
                                       renaming=mapping.renaming("referrals"))
             if "referred_id" in batch.schema.names]
    ids = pd.concat(parts).dropna().unique() if parts else []
    return IdSet([pa.array(ids, type=pa.string())])


# ---------------------------------------------------------------------------------------------
# Ranking, reasons and the output file


class _Written:
    """Rows written, customers and value per tier, and the reasons computed."""

    def __init__(self, rows: int, tiers: dict[str, int], reasons: core.Reasons, economics: list[dict]):
        self.rows, self.tiers, self.reasons, self.economics = rows, tiers, reasons, economics


def _write_output(run: _Run, model: ScoringModel, scored: list[ScoredBucket], tmp_out: Path,
                  as_of: pd.Timestamp, scored_at: pd.Timestamp, reasons: int, reasons_for: str) -> _Written:
    """Rank the whole base, add reasons, write the output sorted by value_rank to ``tmp_out``.

    The ranking needs every prediction, so predictions (id, value) are held until here: they are
    the output itself. Reasons are computed bucket by bucket, for the customers ranked high enough,
    from the model inputs saved while scoring.
    """
    constants = core.lineage(model, as_of, scored_at)
    schema = core.output_schema(reasons, constants)
    ids = pa.chunked_array([s.ids for s in scored], type=pa.string()).combine_chunks()
    values = np.concatenate([s.values for s in scored])
    n = len(values)
    ranked = value_ranks(ids, values)
    rank = ranked["value_rank"].to_numpy()
    found = _reasons_by_rank(run, scored, model, rank, core.reason_cut(n, reasons, reasons_for), reasons)
    extras = core.concat_extras([s.extras for s in scored])
    columns = core.output_columns(ids, values, ranked, extras, found.columns)
    order = ranked_order(ids, rank)
    with pq.ParquetWriter(tmp_out, schema) as writer:
        for start in range(0, max(n, 1), OUTPUT_ROW_GROUP):
            writer.write_table(core.output_table(columns, order[start: start + OUTPUT_ROW_GROUP], constants, schema))
    return _Written(n, core.tier_counts(ranked["value_tier"]), found,
                    core.tier_economics(values, ranked["value_tier"].to_numpy(dtype=object)))


def _reasons_by_rank(run: _Run, scored: list[ScoredBucket], model: ScoringModel, rank: np.ndarray, cut: int,
                     reasons: int) -> core.Reasons:
    """reason_1..k aligned with the predictions (null outside the first ``cut`` ranks), bucket by bucket."""
    parts: list[core.Reasons] = []
    offset = 0
    task = run.bar.task("reasons", run.buckets) if cut else None
    for bucket in scored:
        m = len(bucket.values)

        def inputs(wanted, path=bucket.inputs):
            return read_arrow(path).take(pa.array(wanted)).to_pandas()

        parts.append(core.partition_reasons(model, inputs, rank[offset: offset + m], cut, reasons))
        offset += m
        run.bar.advance(task)
    columns = {name: pa.chunked_array([p.columns[name] for p in parts], type=pa.string())
               for name in reason_columns(reasons)}
    return core.Reasons(columns, sum(p.rows for p in parts), sum(p.seconds for p in parts))
