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

import dataclasses
import gc
import json
import os
import re
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.build import as_timestamp, population_features, select_families, FAMILY_NAMES
from features.config import FeatureConfig
from features.contract import ContractError, check_table
from features.manifest import FeatureManifest, FeatureSkewError, check_compatible, code_hash, manifest_for
from features.social import profile_snapshots
from features.source import fingerprint, is_database_url, table_files
from features.tables import Tables
from serving.attribute_kinds import AttributeKinds, conform_attributes
from serving.partition import (
    BucketFiles,
    bucket_of,
    count_rows,
    iter_batches,
    n_buckets,
    partition_table,
)
from serving.reasons import reason_columns, top_reasons
from serving.tiers import tier_sizes, value_ranks

DEFAULT_MODEL_URI = "models:/customer-value@champion"
REASONS_FOR = ("top10", "all", "none")
OUTPUT_ROW_GROUP = 100_000


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
    except Exception as err:  # MlflowException, OSError...: one clear line for the CLI
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

    def check_threshold(self, table: str, total_rows: int, threshold: float) -> None:
        """Stop as the whole-table loader does when too many rows of a table are invalid."""
        bad = self.rejected[table]
        if total_rows and bad / total_rows > threshold:
            counts = Counter()
            for reason, n in self.reasons.get(table, Counter()).items():
                for part in reason.split("; "):
                    counts[part] += n
            detail = "; ".join(f"{n} x {r}" for r, n in counts.most_common(6))
            raise ContractError(
                f"{table}: {bad} of {total_rows} rows ({bad / total_rows:.1%}) are invalid, more than "
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
    stem = out.name[: -len(".parquet")] if out.name.endswith(".parquet") else out.name
    return out.with_name(f"{stem}.manifest.json")


def rejects_path(out: Path) -> Path:
    stem = out.name[: -len(".parquet")] if out.name.endswith(".parquet") else out.name
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
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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


@dataclass
class _State:
    """What the stages hand to each other."""

    work: Path
    buckets: int
    files: dict[str, BucketFiles] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    valid_ids: list = field(default_factory=list)  # per bucket: pa.Array of valid customer ids
    signups: list = field(default_factory=list)  # per bucket: int64 ns signup dates
    latest_ns: int | None = None  # latest kept transaction timestamp
    referred_tx: list = field(default_factory=list)
    profiles: list = field(default_factory=list)  # per profile bucket: latest snapshot per profile
    profile_ids: list = field(default_factory=list)
    social_columns: list[str] | None = None


def score_customers(data, *, out, as_of=None, model_uri: str = DEFAULT_MODEL_URI, reasons: int = 3,
                    reasons_for: str = "top10", chunk_size: int = 100_000, progress: bool = True,
                    rejects=None, reject_threshold: float | None = None, model: ScoringModel | None = None
                    ) -> dict:
    """Score every customer of ``data`` into the Parquet file ``out``; returns the run summary.

    data: a source directory (or a postgresql:// URL, read through features.database).
    as_of: scoring date; default the day after the latest valid transaction.
    reasons / reasons_for: number of reason columns, and who gets them (top10 = the first
        ceil(n / 10) ranks, all, none).
    rejects: directory for rejected rows (default OUT_STEM.rejects beside the output).
    reject_threshold: largest share of rejected rows per table (default: the model's feature config).
    model: an already loaded ScoringModel (else ``model_uri`` is loaded).
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
            if "customers" not in source or "transactions" not in source:
                missing = "customers" if "customers" not in source else "transactions"
                raise ContractError(f"{missing}: required table is missing")
            n_customers = count_rows(source["customers"])
            state = _State(work=work, buckets=n_buckets(n_customers, chunk_size))
            log = RejectLog(work)

            referred = _referred_ids(source)
            _partition(source, state, bar)
            _validate_customer_buckets(state, log, threshold, referred, bar)
            if as_of is None:
                if state.latest_ns is None:
                    raise ContractError("transactions: no valid transaction to date the run from; pass as_of")
                as_of = as_timestamp(pd.Timestamp(state.latest_ns).normalize() + pd.Timedelta(days=1))
            social = _validate_profile_buckets(state, log, threshold, as_of, bar)
            population = _population(source, state, log, threshold, as_of, model, social, bar)
            scored = _score_buckets(state, model, as_of, population, reasons_for != "none" and reasons > 0, bar)
            result = _write_output(state, model, scored, tmp_out, as_of, scored_at, reasons, reasons_for, bar)
            published = log.publish(Path(rejects) if rejects is not None else rejects_path(out))
        os.replace(tmp_out, out)
        seconds = time.perf_counter() - started
        summary = _summary(out, model, log, result, prints, as_of, scored_at, seconds, published,
                           state, chunk_size, reasons, reasons_for)
        _write_json_atomic(summary, manifest_path(out))
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)
        tmp_out.unlink(missing_ok=True)


def _source_files(data, work: Path) -> tuple[dict[str, Path], dict]:
    """The file of each table; a database source is first copied to Parquet in the work directory."""
    if is_database_url(data):
        from features.database import read_database

        read = read_database(str(data))
        paths = {}
        for table, frame in read.raw.items():
            paths[table] = work / f"source-{table}.parquet"
            frame.to_parquet(paths[table], index=False)
        return paths, read.fingerprint
    files = table_files(data)
    return {table: paths[0] for table, paths in files.items()}, fingerprint(files)


def _referred_ids(source: dict[str, Path]) -> pd.Index:
    """Customers named as referred in the referrals table (parsed as the contract parses ids)."""
    from features.contract import PARSERS

    if "referrals" not in source:
        return pd.Index([], dtype="str")
    parts = [PARSERS["id"](b.column("referred_id").to_pandas())
             for b in iter_batches(source["referrals"], columns=["referred_id"], table="referrals")
             if "referred_id" in b.schema.names]
    return pd.Index(pd.concat(parts).dropna().unique() if parts else [], dtype="str")


def _partition(source: dict[str, Path], state: _State, bar: _Progress) -> None:
    kinds = AttributeKinds()
    targets = [("customers", "customer_id", kinds.add), ("transactions", "customer_id", None)]
    if "social_profiles" in source:
        targets.append(("social_profiles", "profile_id", None))
    for table, key, keep in targets:
        task = bar.task(f"partition {table}", None)
        state.files[table] = partition_table(source[table], table, key, state.buckets, state.work,
                                             keep=(lambda b, w, f=keep: f(b)) if keep else None,
                                             on_rows=lambda n, t=task: bar.advance(t, n))
        bar.done(task)
    state.kinds = kinds.kinds()


def _validate_customer_buckets(state: _State, log: RejectLog, threshold: float, referred: pd.Index,
                               bar: _Progress) -> None:
    """Contract check of customers and their transactions, bucket by bucket; typed chunks to disk."""
    cust_files, tx_files = state.files["customers"], state.files["transactions"]
    task = bar.task("validate customers", state.buckets)
    for b in range(state.buckets):
        raw, rows = cust_files.read(b)
        res = _checked("customers", raw, {}, rows)
        kept = np.setdiff1d(np.arange(len(raw)), res.rejects["row"].to_numpy(dtype="int64"))
        customers = conform_attributes(res.typed, raw.reset_index(drop=True), kept, state.kinds)
        log.add("customers", res.rows_in, res.rejects, rows)
        log.check_threshold("customers", cust_files.rows_in, threshold)

        raw_tx, tx_rows = tx_files.read(b)
        known = {"customers": pd.Index(customers["customer_id"])}
        tx = _checked("transactions", raw_tx, known, tx_rows)
        log.add("transactions", tx.rows_in, tx.rejects, tx_rows)
        log.check_threshold("transactions", tx_files.rows_in, threshold)
        transactions = tx.typed
        del raw, raw_tx, res

        pd.to_pickle({"customers": customers, "transactions": transactions}, state.work / f"typed-{b:05d}.pkl")
        state.valid_ids.append(pa.array(customers["customer_id"].array, type=pa.string()))
        state.signups.append(customers["signup_date"].to_numpy("datetime64[ns]").view("int64"))
        if len(transactions):
            latest = int(transactions["timestamp"].to_numpy("datetime64[ns]").view("int64").max())
            state.latest_ns = latest if state.latest_ns is None else max(state.latest_ns, latest)
        if len(referred):
            state.referred_tx.append(transactions.loc[transactions["customer_id"].isin(referred)])
        bar.advance(task)
    if sum(len(ids) for ids in state.valid_ids) == 0:
        raise ContractError("customers: the table has no valid rows")


def _valid_customer_index(state: _State) -> pd.Index:
    return pd.Index(pa.chunked_array(state.valid_ids, type=pa.string()).to_pandas(), dtype="str")


def _validate_profile_buckets(state: _State, log: RejectLog, threshold: float, as_of: pd.Timestamp,
                              bar: _Progress) -> dict | None:
    """Contract check of social profile snapshots per profile bucket.

    Each profile's rows are together here, so its owner (newest link before as_of) and latest
    snapshot are decided as in features.social.profile_snapshots. Rows of owned profiles go to their
    owner's customer bucket (for the per-customer social families); every profile's latest snapshot,
    with its owner, is kept for the population-wide families.
    """
    if "social_profiles" not in state.files:
        return None
    files = state.files["social_profiles"]
    valid = _valid_customer_index(state)
    writers: dict[int, pq.ParquetWriter] = {}
    schema = None
    task = bar.task("validate social profiles", state.buckets)
    try:
        for b in range(state.buckets):
            raw, rows = files.read(b)
            referenced = pd.Index(raw["customer_id"].dropna().unique()) if "customer_id" in raw else pd.Index([])
            from features.contract import PARSERS

            parsed = PARSERS["id"](pd.Series(referenced, dtype=raw["customer_id"].dtype)) \
                if len(referenced) else pd.Series([], dtype="str")
            known = {"customers": pd.Index(parsed[parsed.isin(valid)].unique(), dtype="str")}
            res = _checked("social_profiles", raw, known, rows)
            log.add("social_profiles", res.rows_in, res.rejects, rows)
            log.check_threshold("social_profiles", files.rows_in, threshold)
            typed = res.typed
            state.profile_ids.append(pa.array(typed["profile_id"].unique(), type=pa.string()))
            if state.social_columns is None:
                state.social_columns = list(typed.columns)
            before = typed.loc[typed["snapshot_date"] < as_of]
            latest = profile_snapshots(before, as_of)
            state.profiles.append(latest)
            owners = latest["customer_id"].dropna()
            owned = before.loc[before["profile_id"].isin(owners.index)]
            if len(owned):
                owner = owners.reindex(owned["profile_id"]).to_numpy()
                where = bucket_of(owner, state.buckets)
                table = pa.Table.from_pandas(owned, preserve_index=False)
                if schema is None:
                    schema = table.schema
                table = table.cast(schema)
                order = np.argsort(where, kind="stable")
                table, where = table.take(pa.array(order)), where[order]
                bounds = np.searchsorted(where, np.arange(state.buckets + 1))
                for k in np.unique(where):
                    if k not in writers:
                        writers[k] = pq.ParquetWriter(state.work / f"social-{k:05d}.parquet", schema)
                    writers[k].write_table(table.slice(bounds[k], bounds[k + 1] - bounds[k]))
            bar.advance(task)
    finally:
        for writer in writers.values():
            writer.close()
    return {"schema": schema}


def _population(source: dict[str, Path], state: _State, log: RejectLog, threshold: float,
                as_of: pd.Timestamp, model: ScoringModel, social: dict | None, bar: _Progress) -> dict:
    """Population-wide families, computed once; rows that equal what a missing row means are dropped."""
    task = bar.task("population features", None)
    valid = _valid_customer_index(state)
    known = {"customers": valid}
    profiles = None
    if social is not None:
        profile_ids = pa.chunked_array(state.profile_ids, type=pa.string()).to_pandas()
        known["profiles"] = pd.Index(profile_ids.unique(), dtype="str")
        profiles = _latest_profiles(state)
    interactions = None
    if "social_interactions" in source:
        if "profiles" not in known:
            raise ContractError("social_interactions: needs the social_profiles table to resolve profile ids")
        interactions = _validated_interactions(source["social_interactions"], known, log, threshold, as_of)
    referrals = None
    if "referrals" in source:
        from features.source import read_table

        raw = read_table(source["referrals"])
        res = check_table("referrals", raw, known, threshold)
        log.add("referrals", res.rows_in, res.rejects, None)
        referrals = res.typed
    customers = pd.DataFrame({
        "customer_id": pd.array(valid, dtype="str"),
        "signup_date": np.concatenate(state.signups).view("datetime64[ns]") if state.signups
        else np.array([], dtype="datetime64[ns]"),
    })
    tx_columns = _typed_transaction_columns(state)
    referred_tx = (pd.concat(state.referred_tx, ignore_index=True) if state.referred_tx
                   else pd.DataFrame({c: [] for c in tx_columns}))
    tables = Tables(customers=customers, transactions=referred_tx, social_profiles=profiles,
                    social_interactions=interactions, referrals=referrals)
    frames = population_features(tables, as_of, model.config, families=model.families)
    out = {name: _compact(name, frame) for name, frame in frames.items()}
    state.referred_tx, state.profiles = [], []
    del tables, interactions, profiles, customers, referred_tx
    gc.collect()
    bar.done(task)
    return out


def _typed_transaction_columns(state: _State) -> list[str]:
    return ["customer_id", "timestamp", "amount"]


def _latest_profiles(state: _State) -> pd.DataFrame:
    """One row per profile: its latest snapshot before as_of, with customer_id set to its owner.

    The population-wide families read profiles only through profile_snapshots (latest snapshot and
    owner), which returns exactly these rows again, so the snapshot history need not be held whole.
    """
    parts = [p for p in state.profiles if len(p)]
    if not parts:
        columns = state.social_columns or ["profile_id", "customer_id", "snapshot_date"]
        return pd.DataFrame({c: [] for c in columns})
    latest = pd.concat(parts)
    frame = latest.reset_index()
    return frame[[c for c in (state.social_columns or frame.columns) if c in frame.columns]]


def _validated_interactions(path: Path, known: dict, log: RejectLog, threshold: float,
                            as_of: pd.Timestamp) -> pd.DataFrame:
    """Interactions checked batch by batch; only rows dated before as_of are kept (no family reads later ones)."""
    kept, offset = [], 0
    for batch in iter_batches(path, table="social_interactions"):
        raw = batch.to_pandas()
        rows = np.arange(offset, offset + len(raw), dtype="int64")
        offset += len(raw)
        res = _checked("social_interactions", raw, known, rows)
        log.add("social_interactions", res.rows_in, res.rejects, rows)
        kept.append(res.typed.loc[res.typed["timestamp"] < as_of])
    log.rows_in["social_interactions"] += 0
    log.check_threshold("social_interactions", offset, threshold)
    if not kept:
        raw = pd.DataFrame({c: pd.Series([], dtype="str") for c in
                            ("source_profile_id", "target_profile_id", "timestamp", "kind")})
        return check_table("social_interactions", raw, known, 1.0).typed
    return pd.concat(kept, ignore_index=True)


def _compact(family: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The family's frame without the rows build_features would rebuild for an absent customer
    (every column equal to its FILL, or NaN where there is none): identical features, less memory."""
    from features.build import FAMILIES

    fill = next(f.fill for f in FAMILIES if f.name == family)
    same = np.ones(len(frame), dtype=bool)
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(values):
            same &= values.isna().to_numpy()
        elif column in fill:
            same &= (values.to_numpy(dtype="float64", na_value=np.nan) == fill[column])
        else:
            same &= values.isna().to_numpy()
    out = frame.loc[~same]
    out.attrs = dict(frame.attrs)
    return out


@dataclass
class _Scored:
    ids: list  # per bucket: pa.Array of customer ids
    values: list  # per bucket: float64 predictions
    inputs: list  # per bucket: path of the saved model input (for reasons), or None
    unseen_levels: Counter


def _score_buckets(state: _State, model: ScoringModel, as_of: pd.Timestamp, population: dict,
                   keep_inputs: bool, bar: _Progress) -> _Scored:
    encoder = model.python_model.encoder
    scored = _Scored([], [], [], Counter())
    task = bar.task("score", state.buckets)
    checked = False
    for b in range(state.buckets):
        typed = pd.read_pickle(state.work / f"typed-{b:05d}.pkl")
        social = None
        if "social_profiles" in state.files:
            path = state.work / f"social-{b:05d}.parquet"
            social = pd.read_parquet(path) if path.exists() else _empty_social(state)
        tables = Tables(customers=typed["customers"], transactions=typed["transactions"],
                        social_profiles=social)
        features = _build(tables, as_of, model, population)
        if not checked:
            check_model_features(model, features)
            checked = True
        inputs = encoder.model_input(features)
        _count_unseen_levels(inputs, encoder, scored.unseen_levels)
        values = np.asarray(model.pyfunc.predict(inputs), dtype="float64") if len(inputs) \
            else np.array([], dtype="float64")
        scored.ids.append(pa.array(features.index.array, type=pa.string()))
        scored.values.append(values)
        if keep_inputs:
            path = state.work / f"inputs-{b:05d}.parquet"
            inputs.reset_index(drop=True).to_parquet(path)
            scored.inputs.append(path)
        else:
            scored.inputs.append(None)
        (state.work / f"typed-{b:05d}.pkl").unlink()
        del typed, tables, features, inputs
        bar.advance(task)
    return scored


def _build(tables: Tables, as_of, model: ScoringModel, population: dict) -> pd.DataFrame:
    from features.build import build_features

    return build_features(tables, as_of, model.config, families=model.families, precomputed=population)


def _empty_social(state: _State) -> pd.DataFrame:
    frame = state.profiles_template if hasattr(state, "profiles_template") else None
    columns = state.social_columns or ["profile_id", "customer_id", "network", "snapshot_date"]
    if frame is not None:
        return frame
    out = {}
    for c in columns:
        if c in ("profile_id", "customer_id", "network"):
            out[c] = pd.Series([], dtype="str")
        elif c == "snapshot_date":
            out[c] = pd.Series([], dtype="datetime64[ns]")
        else:
            out[c] = pd.Series([], dtype="float64")
    return pd.DataFrame(out)


def _count_unseen_levels(inputs: pd.DataFrame, encoder, counts: Counter) -> None:
    """Rows whose category was never seen in training (the model treats it as missing)."""
    for name, levels in encoder.levels.items():
        values = inputs[name]
        unseen = values.notna() & ~values.isin(pd.Index(levels, dtype="str"))
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
    """Rank the whole base, add reasons, and write the output sorted by value_rank to ``tmp_out``."""
    ids = pa.chunked_array(scored.ids, type=pa.string())
    values = np.concatenate(scored.values) if scored.values else np.array([], dtype="float64")
    n = len(values)
    ranked = value_ranks(ids, values)
    rank = ranked["value_rank"].to_numpy()
    sizes = tier_sizes(n)
    cut = {"top10": sizes["top_10pct"], "all": n, "none": 0}[reasons_for] if reasons else 0

    names = reason_columns(reasons)
    reason_parts = {name: [] for name in names}
    reasons_rows, reasons_seconds = 0, 0.0
    offset = 0
    task = bar.task("reasons" if cut else "rank", state.buckets)
    for b, bucket_values in enumerate(scored.values):
        m = len(bucket_values)
        wanted = np.flatnonzero(rank[offset: offset + m] <= cut)
        texts = {name: pa.nulls(m, pa.string()) for name in names}
        if len(wanted):
            start = time.perf_counter()
            inputs = pd.read_parquet(scored.inputs[b]).iloc[wanted]
            contributions = model.python_model.contributions(inputs)
            found = top_reasons(contributions, inputs, reasons)
            reasons_seconds += time.perf_counter() - start
            reasons_rows += len(wanted)
            for name in names:
                full = np.full(m, None, dtype=object)
                full[wanted] = found[name].to_numpy(dtype=object, na_value=None)
                texts[name] = pa.array(full, type=pa.string())
        for name in names:
            reason_parts[name].append(texts[name])
        offset += m
        bar.advance(task)

    columns = {
        "customer_id": ids,
        "predicted_value": pa.array(values),
        "value_rank": pa.array(rank),
        "value_percentile": pa.array(ranked["value_percentile"].to_numpy()),
        "value_tier": pa.array(ranked["value_tier"].array, type=pa.string()),
        **{name: pa.chunked_array(parts, type=pa.string()) for name, parts in reason_parts.items()},
    }
    constants = {
        "model_name": pa.scalar(model.name, pa.string()),
        "model_version": pa.scalar(model.version, pa.string()),
        "model_run_id": pa.scalar(model.run_id, pa.string()),
        "as_of": pa.scalar(as_of.to_datetime64(), pa.timestamp("ns")),
        "horizon_days": pa.scalar(model.horizon_days, pa.int64()),
        "scored_at": pa.scalar(scored_at.to_datetime64(), pa.timestamp("ns")),
    }
    schema = pa.schema([(name, col.type) for name, col in columns.items()]
                       + [(name, value.type) for name, value in constants.items()])
    order = np.argsort(rank, kind="stable")
    with pq.ParquetWriter(tmp_out, schema) as writer:
        for start in range(0, max(n, 1), OUTPUT_ROW_GROUP):
            take = pa.array(order[start: start + OUTPUT_ROW_GROUP])
            m = len(take)
            arrays = [columns[name].take(take) for name in columns]
            arrays += [pa.array([value.as_py()] * m, type=value.type) if m else pa.array([], value.type)
                       for value in constants.values()]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    counts = ranked["value_tier"].value_counts()
    return _Written(n, reasons_rows, reasons_seconds, {k: int(v) for k, v in counts.items()})


def _summary(out: Path, model: ScoringModel, log: RejectLog, written: _Written, prints: dict,
             as_of: pd.Timestamp, scored_at: pd.Timestamp, seconds: float, rejects: list[Path],
             state: _State, chunk_size: int, reasons: int, reasons_for: str) -> dict:
    tables = log.summary()
    customers_in = tables["customers"]["rows_in"]
    valid = sum(len(ids) for ids in state.valid_ids)
    not_yet = valid - written.rows
    rejected = tables["customers"]["rows_rejected"]
    if written.rows + not_yet + rejected != customers_in:
        raise AssertionError(f"customers lost: {customers_in} in, {written.rows} scored, {not_yet} not yet "
                             f"customers, {rejected} rejected")
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
        "inputs": prints,
        "chunks": state.buckets,
        "chunk_size": chunk_size,
        "reasons": {"per_customer": reasons, "for": reasons_for, "rows": written.reasons_rows,
                    "seconds": round(written.reasons_seconds, 3),
                    "rows_per_second": round(written.reasons_rows / written.reasons_seconds, 1)
                    if written.reasons_seconds else None},
        "seconds": round(seconds, 3),
        "customers_per_second": round(written.rows / seconds, 1) if seconds else None,
    }
