"""Batch scoring: every customer of a source valued by the registered model, in bounded memory.

One call, ``score_customers``, does the nightly job (see docs/scoring.md):

1. Partition: the customer-keyed tables (customers, transactions) are streamed from the source files
   into K temporary buckets by a stable hash of customer_id (K = ceil(customers / chunk_size));
   social profile snapshots into K buckets by profile_id. Nothing is held whole.
2. Validate per bucket with the data contract (features.contract.check_table): a customer, their
   transactions and their profiles meet in one bucket, so every row is judged exactly as the
   whole-table loader judges it (a transaction of an unknown customer is rejected as unknown).
3. Population-wide families (network centrality, topical share, referrals) are computed once, from
   the interactions, one latest snapshot per profile, the referrals and the referred customers'
   transactions, and joined to every chunk.
4. Score chunk by chunk: build_features (same code and config as training, from the model's feature
   manifest), the MLflow pyfunc predict (signature enforced).
5. Rank the whole base, add reasons (TreeSHAP, for the top 10% by default), write the output to a
   hidden temporary file beside it and rename it into place; then the JSON manifest.

Memory holds one chunk plus what is per customer anyway (the output columns and population features)
and the social interaction graph (see docs/performance.md, Scoring).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
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
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import ipc

from features.build import FAMILIES, FAMILY_NAMES, as_timestamp, build_features, population_features
from features.config import FeatureConfig
from features.contract import PARSERS, ContractError, check_table
from features.manifest import (
    FeatureManifest,
    FeatureSkewError,
    check_compatible,
    code_hash,
    manifest_for,
)
from features.social import profile_snapshots
from features.source import fingerprint, is_database_url, read_table, table_files
from features.tables import Tables
from serving.attribute_kinds import AttributeKinds, conform_attributes
from serving.id_sets import IdSet, hash_ids, is_in
from serving.partition import (
    BucketFiles,
    BucketWriter,
    bucket_of,
    count_rows,
    iter_batches,
    n_buckets,
    partition_table,
    read_arrow,
)
from serving.reasons import reason_columns, top_reasons
from serving.tiers import tier_sizes, value_ranks

DEFAULT_MODEL_URI = "models:/customer-value@champion"
REASONS_FOR = ("top10", "all", "none")
OUTPUT_ROW_GROUP = 100_000
INTERACTION_BATCH_ROWS = 2_000_000


class ScoringSkewError(ContractError, FeatureSkewError):
    """The model's feature manifest does not match the features this code builds: scoring is refused."""


# ---------------------------------------------------------------------------------------------
# The model


@dataclass
class ScoringModel:
    """A loaded pyfunc model with what the scorer needs to know about it."""

    pyfunc: object  # mlflow.pyfunc.PyFuncModel: predict() enforces the logged signature
    python_model: object  # training.model.CustomerValueModel: encoder, contributions()
    uri: str
    name: str
    version: str | None
    run_id: str | None
    manifest: FeatureManifest
    config: FeatureConfig
    families: tuple[str, ...]

    @property
    def horizon_days(self) -> int:
        return int(self.config.horizon_days)

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "run_id": self.run_id, "uri": self.uri,
                "feature_manifest_hash": self.manifest.manifest_hash,
                "objective": getattr(self.python_model, "objective", None)}


def feature_config_of(manifest: FeatureManifest) -> FeatureConfig:
    """The FeatureConfig a model was trained with, rebuilt from its manifest (lists back to tuples)."""
    names = {f.name for f in dataclasses.fields(FeatureConfig)}
    unknown = sorted(set(manifest.config) - names)
    if unknown:
        raise ScoringSkewError(f"the model's feature config has settings this code does not know: {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in manifest.config.items()}
    return FeatureConfig(**values)


def model_families(manifest: FeatureManifest) -> tuple[str, ...]:
    """The feature families the model was built with, identified by its manifest's code hash.

    Training hashes the code of every family it selected, including families that happened to
    produce no column (attributes without attribute columns), so the candidates are all families
    and the families that produced the model's features. No match means the feature code changed.
    """
    present = tuple(name for name in FAMILY_NAMES if name in set(manifest.families.values()))
    for candidate in (FAMILY_NAMES, present):
        if code_hash(candidate) == manifest.code_hash:
            return tuple(candidate)
    raise ScoringSkewError(
        "the model was trained with different feature code (manifest code_hash "
        f"{manifest.code_hash[:12]}, this code {code_hash(FAMILY_NAMES)[:12]}): retrain it with "
        "this code, or score with the code it was trained with"
    )


def check_model_features(model: ScoringModel, features: pd.DataFrame) -> None:
    """Refuse to score when the built features differ from the model's (names, order, dtypes, families).

    Category levels are not compared: the model maps categories by their text to its training
    levels, and a level it never saw is treated as missing.
    """
    actual = manifest_for(features, model.config, model.families)
    expected = model.manifest
    categories = {name: expected.categories.get(name, levels) for name, levels in actual.categories.items()}
    fields = {f.name: getattr(actual, f.name) for f in dataclasses.fields(actual)}
    actual = FeatureManifest(**{**fields, "categories": categories, "manifest_hash": ""})
    try:
        check_compatible(expected, actual)
    except FeatureSkewError as err:
        raise ScoringSkewError(f"model {model.uri} refused: {err}") from None


def load_scoring_model(model_uri: str = DEFAULT_MODEL_URI) -> ScoringModel:
    """Load a pyfunc model (registry alias or version, runs:/ or a path) and check its feature manifest."""
    import mlflow
    import mlflow.pyfunc

    from training import tracking

    tracking.quiet_mlflow_warnings()
    uri = tracking.tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(model_uri)
    except Exception as err:  # noqa: BLE001 - MlflowException, OSError...: one clear line for the CLI
        raise ContractError(f"cannot load model {model_uri!r}: {str(err).splitlines()[0]}") from None
    python_model = pyfunc.unwrap_python_model()
    text = getattr(python_model, "manifest_json", None)
    if not text:
        raise ScoringSkewError(f"model {model_uri} carries no feature manifest: it cannot be checked "
                               "against this feature code, so it is not used")
    manifest = FeatureManifest.from_json(text)
    name, version, run_id = _registry_facts(model_uri, pyfunc)
    model = ScoringModel(pyfunc, python_model, model_uri, name, version, run_id, manifest,
                         feature_config_of(manifest), ())
    model.families = model_families(manifest)
    return model


def _registry_facts(model_uri: str, pyfunc) -> tuple[str, str | None, str | None]:
    """(name, version, run id) of a model: from the registry for models:/ URIs, else from its metadata."""
    import mlflow

    run_id = getattr(pyfunc.metadata, "run_id", None)
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    if match is None:
        return model_uri, None, run_id
    name, alias, number = match.groups()
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    return name, str(mv.version), mv.run_id or run_id


# ---------------------------------------------------------------------------------------------
# Rejected rows


class RejectLog:
    """Rejected rows per table, appended chunk by chunk to CSV files in the work directory."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.rows_in: Counter = Counter()
        self.rejected: Counter = Counter()
        self.reasons: dict[str, Counter] = {}
        self.columns: dict[str, list[str]] = {}

    def add(self, table: str, rows_in: int, rejects: pd.DataFrame, source_rows: np.ndarray | None) -> None:
        """Record a checked part of ``table``; ``source_rows`` maps part positions to source rows."""
        self.rows_in[table] += rows_in
        if not len(rejects):
            return
        rejects = rejects.copy()
        if source_rows is not None:
            rejects["row"] = source_rows[rejects["row"].to_numpy(dtype="int64")]
        path = self.directory / f"rejects-{table}.csv"
        if table not in self.columns:
            self.columns[table] = list(rejects.columns)
        rejects = rejects.reindex(columns=self.columns[table])
        rejects.to_csv(path, mode="a", header=not path.exists(), index=False)
        self.rejected[table] += len(rejects)
        short = rejects["reason"].str.replace(r" '.*?'", "", regex=True)
        self.reasons.setdefault(table, Counter()).update(short.tolist())

    def register(self, table: str) -> None:
        """Count a table as read even if it had no rows."""
        self.rows_in[table] += 0

    def check_threshold(self, table: str, total_rows: int, threshold: float, *, final: bool) -> None:
        """Stop, as the whole-table loader does, when too many rows of a table are invalid.

        Checked after every part (``final=False``) so a hopeless source stops early: the count is
        then a lower bound.
        """
        bad = self.rejected[table]
        if total_rows and bad / total_rows > threshold:
            counts = Counter()
            for reason, n in self.reasons.get(table, Counter()).items():
                for part in reason.split("; "):
                    counts[part] += n
            detail = "; ".join(f"{n} x {r}" for r, n in counts.most_common(6))
            raise ContractError(
                f"{table}: {'' if final else 'at least '}{bad} of {total_rows} rows "
                f"({bad / total_rows:.1%}) are invalid, more than "
                f"the reject threshold of {threshold:.1%}; {detail}"
            )

    def summary(self) -> dict:
        return {t: {"rows_in": int(self.rows_in[t]), "rows_kept": int(self.rows_in[t] - self.rejected[t]),
                    "rows_rejected": int(self.rejected[t]),
                    "top_reason": (self.reasons[t].most_common(1)[0][0] if self.rejected[t] else "")}
                for t in self.rows_in}

    def publish(self, directory: Path) -> list[Path]:
        """Sorted by source row, one ``<table>.csv`` per table with rejects; stale ones removed."""
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for table in self.rows_in:
            target = directory / f"{table}.csv"
            path = self.directory / f"rejects-{table}.csv"
            if not path.exists():
                target.unlink(missing_ok=True)
                continue
            frame = pd.read_csv(path, dtype="str", keep_default_na=False, na_values=[""])
            frame = frame.iloc[np.argsort(frame["row"].astype("int64").to_numpy(), kind="stable")]
            tmp = directory / f".{table}.csv.{os.getpid()}.tmp"
            frame.to_csv(tmp, index=False)
            os.replace(tmp, target)
            written.append(target)
        return written


_ROWS_IN_MESSAGE = re.compile(r"\(rows ([\d, ]+)(, \.\.\.)?;")


def _source_rows_message(err: ContractError, source_rows: np.ndarray) -> ContractError:
    """A structural error raised on a part of a table, with its row numbers mapped to the source's."""
    def mapped(match):
        rows = [str(int(source_rows[int(p)])) for p in match.group(1).split(", ")]
        return f"(rows {', '.join(rows)}{match.group(2) or ''};"

    return ContractError(_ROWS_IN_MESSAGE.sub(mapped, str(err)))


def _checked(table: str, raw: pd.DataFrame, known: dict, source_rows: np.ndarray):
    """check_table on a part of a table, never stopping on the share of rejects (judged whole later)."""
    try:
        return check_table(table, raw, known, reject_threshold=1.0)
    except ContractError as err:
        raise _source_rows_message(err, source_rows) from None


# ---------------------------------------------------------------------------------------------
# Files of one run


def _temp_name(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.{kind}.tmp"


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the hidden temporaries (.OUT.PID-XXXX.*.tmp) left by runs that were killed."""
    removed = []
    for path in out.parent.glob(f".{out.name}.*.tmp"):
        match = re.match(rf"\.{re.escape(out.name)}\.(\d+)-", path.name)
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
    """FILE.manifest.json beside FILE.parquet."""
    stem = out.name.removesuffix(".parquet")
    return out.with_name(f"{stem}.manifest.json")


def rejects_path(out: Path) -> Path:
    stem = out.name.removesuffix(".parquet")
    return out.with_name(f"{stem}.rejects")


def _write_json_atomic(value: dict, path: Path) -> Path:
    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    tmp.write_text(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# Progress


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


# ---------------------------------------------------------------------------------------------
# The run


class _Stopwatch:
    """Wall seconds per stage, and the process's peak memory when each ended (for docs/performance.md)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 3)
            self.peak_rss_mb[stage] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@dataclass
class _State:
    """What the stages of one run hand to each other (per-bucket lists are in bucket order)."""

    work: Path
    buckets: int
    files: dict[str, BucketFiles] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    customer_ids: list = field(default_factory=list)  # valid customer ids (pa.Array)
    customer_hashes: list = field(default_factory=list)
    signups: list = field(default_factory=list)  # their signup dates (int64 ns)
    latest_ns: int | None = None  # latest valid transaction
    tx_empty: pd.DataFrame | None = None  # typed transactions without rows (the dtypes)
    referred_tx: list = field(default_factory=list)  # typed transactions of referred customers
    profiles: list = field(default_factory=list)  # latest snapshot before as_of per profile, owner as customer_id
    profile_ids: list = field(default_factory=list)  # valid profile ids (pa.Array, distinct per bucket)
    profile_hashes: list = field(default_factory=list)
    social_empty: pd.DataFrame | None = None  # typed social_profiles without rows
    social_schema: pa.Schema | None = None

    def customer_set(self) -> IdSet:
        return IdSet(self.customer_ids, self.customer_hashes)

    def profile_set(self) -> IdSet:
        return IdSet(self.profile_ids, self.profile_hashes)

    @property
    def n_valid_customers(self) -> int:
        return int(sum(len(ids) for ids in self.customer_ids))


def score_customers(data, *, out, as_of=None, model_uri: str = DEFAULT_MODEL_URI, reasons: int = 3,
                    reasons_for: str = "top10", chunk_size: int = 100_000, progress: bool = True,
                    rejects=None, reject_threshold: float | None = None, model: ScoringModel | None = None
                    ) -> dict:
    """Score every customer of ``data`` into the Parquet file ``out``; returns the run summary.

    data: a source directory (or a postgresql:// URL, read through features.database).
    as_of: scoring date; default the day after the latest valid transaction.
    reasons / reasons_for: reason columns per row, and who gets them: ``top10`` (the first
        ceil(n / 10) ranks), ``all`` or ``none``.
    chunk_size: customers per chunk (memory grows with it; the number of chunks with the base).
    rejects: directory of rejected rows (default OUT_STEM.rejects/ beside the output).
    reject_threshold: largest share of rejected rows per table (default: the model's feature config).
    model: an already loaded ScoringModel (else ``model_uri`` is loaded).
    The summary is also written as JSON to OUT_STEM.manifest.json.
    """
    started = time.perf_counter()
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
    try:
        with _Progress(progress) as bar:
            source, prints = _source_files(data, work)
            for table in ("customers", "transactions"):
                if table not in source:
                    raise ContractError(f"{table}: required table is missing")
            if "social_interactions" in source and "social_profiles" not in source:
                raise ContractError("social_interactions: needs the social_profiles table to resolve profile ids")
            state = _State(work=work, buckets=n_buckets(count_rows(source["customers"]), chunk_size))
            log = RejectLog(work)
            clock = _Stopwatch()

            with clock("partition"):
                _partition(source, state, bar)
            with clock("validate_customers"):
                _validate_customers(state, log, threshold, _referred_ids(source), bar)
            if as_of is None:
                if state.latest_ns is None:
                    raise ContractError("transactions: no valid transaction to date the run from; pass as_of")
                as_of = as_timestamp(pd.Timestamp(state.latest_ns).normalize() + pd.Timedelta(days=1))
            with clock("validate_profiles"):
                _validate_profiles(state, log, threshold, as_of, bar)
            with clock("population_features"):
                population = _population(source, state, log, threshold, as_of, model, bar)
            keep_inputs = reasons > 0 and reasons_for != "none"
            with clock("score_chunks"):
                scored = _score_chunks(state, model, as_of, population, keep_inputs, bar)
            del population
            with clock("rank_reasons_write"):
                written = _write_output(state, model, scored, tmp_out, as_of, scored_at, reasons,
                                        reasons_for, bar)
                published = log.publish(Path(rejects) if rejects is not None else rejects_path(out))
        os.replace(tmp_out, out)
        seconds = time.perf_counter() - started
        summary = _summary(out, model, log, written, scored, prints, as_of, scored_at, seconds,
                           published, state, chunk_size, reasons, reasons_for)
        summary["stage_seconds"] = clock.seconds
        summary["peak_rss_mb_after_stage"] = clock.peak_rss_mb
        _write_json_atomic(summary, manifest_path(out))
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)
        tmp_out.unlink(missing_ok=True)


def _source_files(data, work: Path) -> tuple[dict[str, Path], dict]:
    """The file of each table, and the inputs' fingerprint.

    A database source is read whole through features.database and spilled to Parquet in the work
    directory first (that reader holds each table in memory; see docs/scoring.md).
    """
    if is_database_url(data):
        from features.database import read_database

        read = read_database(str(data))
        paths = {}
        for table, frame in read.raw.items():
            paths[table] = work / f"source-{table}.parquet"
            frame.to_parquet(paths[table], index=False)
        del read
        return paths, {}
    files = table_files(data)
    return {table: paths[0] for table, paths in files.items()}, fingerprint(files)


def _parsed_ids(raw: pd.Series) -> pd.Series:
    """The distinct ids of a raw column, parsed as the contract parses ids (missing dropped)."""
    distinct = pd.Series(raw.dropna().unique(), dtype=raw.dtype)
    return PARSERS["id"](distinct).dropna()


def _referred_ids(source: dict[str, Path]) -> pd.Index:
    """Customers named as referred in the referrals table: their transactions feed referral revenue."""
    if "referrals" not in source:
        return pd.Index([], dtype="str")
    parts = [_parsed_ids(batch.column("referred_id").to_pandas())
             for batch in iter_batches(source["referrals"], table="referrals")
             if "referred_id" in batch.schema.names]
    return pd.Index(pd.concat(parts).unique() if parts else [], dtype="str")


def _partition(source: dict[str, Path], state: _State, bar: _Progress) -> None:
    """Customers and transactions into buckets by customer, profile snapshots by profile."""
    kinds = AttributeKinds()
    targets = [("customers", "customer_id", kinds.add), ("transactions", "customer_id", None)]
    if "social_profiles" in source:
        targets.append(("social_profiles", "profile_id", None))
    for table, key, keep in targets:
        task = bar.task(f"partition {table}", None)
        state.files[table] = partition_table(
            source[table], table, key, state.buckets, state.work,
            keep=(lambda batch, where, f=keep: f(batch)) if keep else None,
            on_rows=lambda n, t=task: bar.advance(t, n))
        bar.done(task)
    state.kinds = kinds.kinds()


def _validate_customers(state: _State, log: RejectLog, threshold: float, referred: pd.Index,
                        bar: _Progress) -> None:
    """Contract check of each bucket's customers and their transactions; typed chunks to disk."""
    cust_files, tx_files = state.files["customers"], state.files["transactions"]
    task = bar.task("validate customers", state.buckets)
    for b in range(state.buckets):
        raw, rows = cust_files.read(b)
        res = _checked("customers", raw, {}, rows)
        kept = np.setdiff1d(np.arange(len(raw)), res.rejects["row"].to_numpy(dtype="int64"))
        customers = conform_attributes(res.typed, raw.reset_index(drop=True), kept, state.kinds)
        log.add("customers", res.rows_in, res.rejects, rows)
        log.check_threshold("customers", cust_files.rows_in, threshold, final=b == state.buckets - 1)
        del raw, res

        # Every transaction of a customer of this bucket is in this bucket: anything else names an
        # unknown customer, and is rejected as such, exactly as by the whole-table check.
        raw_tx, tx_rows = tx_files.read(b)
        tx = _checked("transactions", raw_tx, {"customers": pd.Index(customers["customer_id"])}, tx_rows)
        log.add("transactions", tx.rows_in, tx.rejects, tx_rows)
        log.check_threshold("transactions", tx_files.rows_in, threshold, final=b == state.buckets - 1)
        transactions = tx.typed
        del raw_tx, tx

        pd.to_pickle({"customers": customers, "transactions": transactions}, _typed_path(state, b))
        ids = pa.array(customers["customer_id"].array, type=pa.string())
        state.customer_ids.append(ids)
        state.customer_hashes.append(hash_ids(ids) if len(ids) else np.array([], dtype="uint64"))
        state.signups.append(customers["signup_date"].to_numpy("datetime64[ns]").view("int64"))
        if state.tx_empty is None:
            state.tx_empty = transactions.iloc[:0]
        if len(transactions):
            latest = int(transactions["timestamp"].to_numpy("datetime64[ns]").view("int64").max())
            state.latest_ns = latest if state.latest_ns is None else max(state.latest_ns, latest)
        if len(referred):
            state.referred_tx.append(transactions.loc[is_in(transactions["customer_id"], referred)])
        bar.advance(task)
    if state.n_valid_customers == 0:
        raise ContractError("customers: the table has no valid rows")


def _typed_path(state: _State, bucket: int) -> Path:
    return state.work / f"typed-{bucket:05d}.pkl"


def _validate_profiles(state: _State, log: RejectLog, threshold: float, as_of: pd.Timestamp,
                       bar: _Progress) -> None:
    """Contract check of profile snapshots, per profile bucket (all of a profile's rows together).

    There the profile's owner (newest link before as_of) and latest snapshot are decided exactly as
    features.social.profile_snapshots decides them. The rows of owned profiles go to the owner's
    bucket (for the per-customer social families); every profile's latest snapshot is kept for the
    population-wide families.
    """
    if "social_profiles" not in state.files:
        return
    files = state.files["social_profiles"]
    customers = state.customer_set()
    writer = None
    task = bar.task("validate social profiles", state.buckets)
    try:
        for b in range(state.buckets):
            raw, rows = files.read(b)
            referenced = _parsed_ids(raw["customer_id"]) if "customer_id" in raw else pd.Series([], dtype="str")
            res = _checked("social_profiles", raw, {"customers": customers.known(referenced)}, rows)
            log.add("social_profiles", res.rows_in, res.rejects, rows)
            log.check_threshold("social_profiles", files.rows_in, threshold, final=b == state.buckets - 1)
            typed = res.typed
            del raw, res
            if state.social_empty is None:
                state.social_empty = typed.iloc[:0]
            ids = pa.array(typed["profile_id"].unique(), type=pa.string())
            state.profile_ids.append(ids)
            state.profile_hashes.append(hash_ids(ids) if len(ids) else np.array([], dtype="uint64"))

            # Leakage: no family reads snapshots dated on or after as_of; they are dropped here.
            before = typed.loc[typed["snapshot_date"] < as_of]
            latest = profile_snapshots(before, as_of)
            state.profiles.append(latest)
            owners = latest["customer_id"].dropna()
            owned = before.loc[is_in(before["profile_id"], owners.index)]
            if len(owned):
                writer = _route_rows(owned, owners.reindex(owned["profile_id"]).to_numpy(), state, writer)
            bar.advance(task)
    finally:
        if writer is not None:
            writer.close()


def _route_rows(frame: pd.DataFrame, owner: np.ndarray, state: _State, writer: BucketWriter | None
                ) -> BucketWriter:
    """Append rows to the social file of their owner's customer bucket."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if writer is None:
        state.social_schema = table.schema
        writer = BucketWriter(lambda b: _social_path(state, b), state.social_schema)
    writer.write(table.cast(state.social_schema), bucket_of(owner, state.buckets), state.buckets)
    return writer


def _social_path(state: _State, bucket: int) -> Path:
    return state.work / f"social-{bucket:05d}.arrow"


def _population(source: dict[str, Path], state: _State, log: RejectLog, threshold: float,
                as_of: pd.Timestamp, model: ScoringModel, bar: _Progress) -> dict[str, pd.DataFrame]:
    """The population-wide families, computed once over everyone.

    Inputs: every valid customer (id, signup date), the referred customers' transactions, one latest
    snapshot per profile, the interactions and the referrals. Rows that equal what build_features
    gives a customer without a row are dropped (it rebuilds them exactly) to save memory.
    """
    task = bar.task("population features", None)
    customers = state.customer_set()
    profiles = None
    interactions = None
    if "social_profiles" in state.files:
        profiles = _latest_profiles(state)
        if "social_interactions" in source:
            interactions = _validated_interactions(source["social_interactions"], state.profile_set(), log,
                                                   threshold, as_of)
    referrals = None
    if "referrals" in source:
        raw = read_table(source["referrals"])
        mentioned = pd.concat([_parsed_ids(raw[c]) for c in ("referrer_id", "referred_id") if c in raw])
        res = check_table("referrals", raw, {"customers": customers.known(mentioned)}, threshold)
        log.add("referrals", res.rows_in, res.rejects, None)
        referrals = res.typed
        del raw, res
    everyone = pd.DataFrame({
        "customer_id": pd.array(pa.chunked_array(state.customer_ids, type=pa.string()).to_pandas(),
                                dtype="str"),
        "signup_date": np.concatenate(state.signups).view("datetime64[ns]"),
    })
    referred_tx = (pd.concat(state.referred_tx, ignore_index=True) if state.referred_tx else state.tx_empty)
    tables = Tables(customers=everyone, transactions=referred_tx, social_profiles=profiles,
                    social_interactions=interactions, referrals=referrals)
    frames = population_features(tables, as_of, model.config, families=model.families)
    out = {name: _compact(name, frame) for name, frame in frames.items()}
    state.referred_tx, state.profiles = [], []
    del tables, everyone, referred_tx, profiles, interactions, referrals, frames
    gc.collect()
    bar.done(task)
    return out


def _latest_profiles(state: _State) -> pd.DataFrame:
    """One row per profile: its latest snapshot before as_of, with customer_id set to its owner.

    The population-wide families read profiles only through features.social.profile_snapshots
    (latest snapshot and owner, no history), which returns exactly these rows again; so the
    snapshot history is never held whole. (tests/serving/test_score.py checks chunked scores
    against the whole-table build on re-linked profiles.)
    """
    parts = [p for p in state.profiles if len(p)]
    if not parts:
        return state.social_empty
    frame = pd.concat(parts).reset_index()
    return frame[[c for c in state.social_empty.columns if c in frame.columns]]


def _validated_interactions(path: Path, profiles: IdSet, log: RejectLog, threshold: float,
                            as_of: pd.Timestamp) -> pd.DataFrame:
    """Interactions checked batch by batch; only those dated before as_of are kept (no family reads later ones)."""
    kept, offset, empty = [], 0, None
    for batch in iter_batches(path, table="social_interactions", batch_rows=INTERACTION_BATCH_ROWS):
        raw = batch.to_pandas()
        rows = np.arange(offset, offset + len(raw), dtype="int64")
        offset += len(raw)
        mentioned = pd.concat([_parsed_ids(raw[c]) for c in ("source_profile_id", "target_profile_id")
                               if c in raw])
        res = _checked("social_interactions", raw, {"profiles": profiles.known(mentioned)}, rows)
        log.add("social_interactions", res.rows_in, res.rejects, rows)
        log.check_threshold("social_interactions", offset, threshold, final=False)
        kept.append(res.typed.loc[res.typed["timestamp"] < as_of])
        del raw, res
    log.register("social_interactions")
    log.check_threshold("social_interactions", offset, threshold, final=True)
    if not kept:
        empty = pd.DataFrame({c: pd.Series([], dtype="str") for c in
                              ("source_profile_id", "target_profile_id", "timestamp", "kind")})
        return check_table("social_interactions", empty, {"profiles": pd.Index([], dtype="str")}, 1.0).typed
    return pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0]


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


@dataclass
class _Scored:
    """Predictions per bucket, in bucket order; the model inputs saved for reasons."""

    ids: list = field(default_factory=list)  # pa.Array of customer ids
    values: list = field(default_factory=list)  # float64 predictions
    inputs: list = field(default_factory=list)  # Path of the saved model input, or None
    unseen_levels: Counter = field(default_factory=Counter)
    predict_seconds: float = 0.0
    feature_seconds: float = 0.0


def _score_chunks(state: _State, model: ScoringModel, as_of: pd.Timestamp, population: dict,
                  keep_inputs: bool, bar: _Progress) -> _Scored:
    """Features and predictions bucket by bucket (the skew check runs on the first chunk's features)."""
    encoder = model.python_model.encoder
    scored = _Scored()
    task = bar.task("score", state.buckets)
    for b in range(state.buckets):
        start = time.perf_counter()
        typed = pd.read_pickle(_typed_path(state, b))
        social = None
        if "social_profiles" in state.files:
            path = _social_path(state, b)
            social = read_arrow(path).to_pandas() if path.exists() else state.social_empty
        tables = Tables(customers=typed["customers"], transactions=typed["transactions"], social_profiles=social)
        features = build_features(tables, as_of, model.config, families=model.families, precomputed=population)
        if b == 0:
            check_model_features(model, features)
        inputs = encoder.model_input(features)
        scored.feature_seconds += time.perf_counter() - start
        _count_unseen_levels(inputs, encoder, scored.unseen_levels)
        start = time.perf_counter()
        values = (np.asarray(model.pyfunc.predict(inputs), dtype="float64") if len(inputs)
                  else np.array([], dtype="float64"))
        scored.predict_seconds += time.perf_counter() - start
        scored.ids.append(pa.array(features.index.array, type=pa.string()))
        scored.values.append(values)
        path = None
        if keep_inputs:
            path = state.work / f"inputs-{b:05d}.arrow"
            _write_arrow(inputs.reset_index(drop=True), path)
        scored.inputs.append(path)
        _typed_path(state, b).unlink()
        del typed, tables, social, features, inputs
        bar.advance(task)
    return scored


def _write_arrow(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)


def _count_unseen_levels(inputs: pd.DataFrame, encoder, counts: Counter) -> None:
    """Rows whose category the model never saw in training (it treats them as missing)."""
    for name, levels in encoder.levels.items():
        values = inputs[name]
        unseen = values.notna().to_numpy() & ~is_in(values, list(levels))
        if unseen.any():
            counts[name] += int(unseen.sum())


@dataclass
class _Written:
    rows: int
    reasons_rows: int
    reasons_seconds: float
    tiers: dict


def _write_output(state: _State, model: ScoringModel, scored: _Scored, tmp_out: Path, as_of: pd.Timestamp,
                  scored_at: pd.Timestamp, reasons: int, reasons_for: str, bar: _Progress) -> _Written:
    """Rank the whole base, add reasons, write the output sorted by value_rank to ``tmp_out``.

    The ranking needs every prediction, so predictions (id, value) are held until here; reasons are
    computed bucket by bucket for the customers ranked high enough, from the saved model inputs.
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
        ids = pa.chunked_array(scored.ids, type=pa.string()).combine_chunks()
        values = np.concatenate(scored.values) if scored.values else np.array([], dtype="float64")
        n = len(values)
        ranked = value_ranks(ids, values)
        rank = ranked["value_rank"].to_numpy()
        cut = {"top10": tier_sizes(n)["top_10pct"], "all": n, "none": 0}[reasons_for] if reasons else 0
        texts, reasons_rows, reasons_seconds = _reasons_by_rank(scored, model, rank, cut, names, state, bar)

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


def _reasons_by_rank(scored: _Scored, model: ScoringModel, rank: np.ndarray, cut: int, names: list[str],
                     state: _State, bar: _Progress) -> tuple[dict, int, float]:
    """reason_1..k (null outside the first ``cut`` ranks) aligned with the predictions, bucket by bucket."""
    parts: dict[str, list] = {name: [] for name in names}
    rows, seconds, offset = 0, 0.0, 0
    task = bar.task("reasons", state.buckets) if cut else None
    for b, bucket_values in enumerate(scored.values):
        m = len(bucket_values)
        wanted = np.flatnonzero(rank[offset: offset + m] <= cut)
        found = None
        if len(wanted):
            start = time.perf_counter()
            inputs = read_arrow(scored.inputs[b]).take(pa.array(wanted)).to_pandas()
            found = top_reasons(model.python_model.contributions(inputs), inputs, len(names))
            seconds += time.perf_counter() - start
            rows += len(wanted)
        for name in names:
            full = np.full(m, None, dtype=object)
            if found is not None:
                full[wanted] = found[name].to_numpy(dtype=object, na_value=None)
            parts[name].append(pa.array(full, type=pa.string()))
        offset += m
        bar.advance(task)
    texts = {name: pa.chunked_array(p, type=pa.string()) for name, p in parts.items()}
    return texts, rows, seconds


def _summary(out: Path, model: ScoringModel, log: RejectLog, written: _Written, scored: _Scored, prints: dict,
             as_of: pd.Timestamp, scored_at: pd.Timestamp, seconds: float, rejects: list[Path],
             state: _State, chunk_size: int, reasons: int, reasons_for: str) -> dict:
    """The run's manifest; also checks that every customer of the source is accounted for."""
    tables = log.summary()
    customers_in = tables["customers"]["rows_in"]
    rejected = tables["customers"]["rows_rejected"]
    not_yet = state.n_valid_customers - written.rows
    if written.rows + not_yet + rejected != customers_in or not_yet < 0:
        raise AssertionError(f"customers unaccounted for: {customers_in} in, {written.rows} scored, "
                             f"{not_yet} not yet customers, {rejected} rejected")
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
        "unseen_category_levels": dict(scored.unseen_levels),
        "inputs": prints,
        "chunks": state.buckets,
        "chunk_size": chunk_size,
        "reasons": {
            "per_customer": reasons, "for": reasons_for, "rows": written.reasons_rows,
            "seconds": round(written.reasons_seconds, 3),
            "rows_per_second": (round(written.reasons_rows / written.reasons_seconds, 1)
                                if written.reasons_seconds else None),
        },
        "seconds": round(seconds, 3),
        "features_seconds": round(scored.feature_seconds, 3),
        "predict_seconds": round(scored.predict_seconds, 3),
        "customers_per_second": round(written.rows / seconds, 1) if seconds else None,
    }
