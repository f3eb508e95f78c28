"""Features on Dask: the pandas feature code, run per customer partition on a cluster.

One source of truth: every partition calls ``features.build.build_features`` and the contract's
``check_table``; this module only decides which rows meet where. A run (docs/scaling.md):

1. Read every table lazily (dask.dataframe.read_parquet / read_csv), each row numbered by its
   position in the table (ROW), so rejects name source rows and ties break as in the whole table.
2. Shuffle by customer: customers, transactions and profile snapshots move to B buckets by a stable
   hash of customer_id as the contract parses it (``set_index`` on the bucket, aligned divisions).
   A snapshot without a customer goes by its profile_id.
3. Validate per bucket with ``check_table``. Whole-table rules still hold: a duplicated customer_id
   hashes twice to the same bucket, so the per-bucket duplicate check sees it; a transaction's
   customer is in its bucket if it exists anywhere; the reject threshold is judged on the totals;
   attribute kinds and category levels are decided over the whole raw customers table.
4. Profile snapshots are shuffled again, by profile_id, so each profile's history is whole: there the
   population families get each profile's latest snapshot, and the history is routed to the bucket
   of every customer the profile was ever linked to (the owner at any as_of is among them).
5. Population-wide families (referral, network, topical) are computed once per as_of on one worker
   from the whole base's ids, the referred customers' transactions, the latest snapshots, the
   interactions and the referrals; their rows are split by bucket and joined to each partition's
   build_features(precomputed=...).
"""

from __future__ import annotations

import operator
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.ingest.attribute_kinds import AttributeKinds, conform_attributes
from features.build import as_timestamp, build_features, population_features, select_families
from features.config import FeatureConfig
from features.ingest.contract import (
    PARSERS,
    ContractError,
    add_parsing,
    check_parsing,
    check_table,
    part_parsing,
)
from features.dask_engine.cluster import cluster
from features.ingest.id_sets import IdSet
from features.labels import label_values
from features.ingest.partition import ROW, bucket_of
from features.families.profiles import profile_snapshots
from features.ingest.source import fingerprint, is_database_url, read_table, table_files, write_rejects
from features.tables import Tables

BUCKET = "__clv_bucket__"  # customer bucket of a row (its partition)
TARGET = "__clv_target__"  # customer bucket a profile snapshot is routed to
CUSTOMERS_PER_BUCKET = 100_000
CSV_BLOCK_BYTES = "64MB"
# Parquet row groups are joined into partitions of at most this much storage (a row group is never
# split). Dask's default, 256 MiB, made a partition of all 5M customers and partitions of 12.7M
# snapshots: dictionary-encoded ids are far smaller on disk than in memory, so one such task
# needed gigabytes and two workers of 11.8 GB were restarted for memory (docs/performance.md, Dask).
PARQUET_BLOCK_BYTES = "32MiB"


# ---------------------------------------------------------------------------------------------
# Reading and bucketing


def source_files(source) -> dict[str, Path]:
    """The file (or directory of Parquet parts) of each table of a source directory."""
    if is_database_url(source):
        raise ContractError(
            "the Dask engine reads source directories (Parquet or CSV files, or "
            "directories of Parquet parts); export the database first or use "
            "the pandas engine"
        )
    return {table: paths[0] for table, paths in table_files(source).items()}


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Dask's strings (pd.NA for missing) as pandas' default ``str`` (NaN): what read_table gives."""
    frame = frame.reset_index(drop=True)
    strings = {
        c: "str"
        for c, t in frame.dtypes.items()
        if isinstance(t, pd.StringDtype) and t.na_value is pd.NA
    }
    return frame.astype(strings) if strings else frame


def _numbered(frame: pd.DataFrame, offsets, partition_info=None) -> pd.DataFrame:
    start = int(offsets[partition_info["number"]]) if partition_info else 0
    frame = _plain(frame)
    return frame.assign(**{ROW: np.arange(start, start + len(frame), dtype="int64")})


def read_raw(path: Path, parquet_block_bytes: str | int | None = None):
    """(one table as a lazy dask DataFrame of raw values as read_table gives them plus ROW, rows).

    Parquet parts are read in file-name order like read_table, row groups joined up to
    ``parquet_block_bytes`` (default PARQUET_BLOCK_BYTES) a partition; CSV as text, empty meaning
    missing.
    The rows of every partition are counted first (a pass over the table) to number them in source
    order. (Counting one column only is cheaper but lets Dask fuse partitions differently.)
    """
    import dask.dataframe as dd

    path = Path(path)
    if path.is_dir() or path.name.endswith(".parquet"):
        parts = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        frame = dd.read_parquet(
            [str(p) for p in parts],
            split_row_groups="adaptive",
            blocksize=parquet_block_bytes or PARQUET_BLOCK_BYTES,
        )
    else:
        compressed = path.name.endswith(".gz")
        frame = dd.read_csv(
            str(path),
            dtype="str",
            keep_default_na=False,
            na_values=[""],
            blocksize=None if compressed else CSV_BLOCK_BYTES,
        )
    lengths = frame.map_partitions(len).compute().to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype("int64")
    meta = _numbered(frame._meta, offsets)
    return frame.map_partitions(_numbered, offsets, meta=meta), int(lengths.sum())


def check_columns(table: str, frame) -> None:
    """The contract's structural column check (missing required columns) on a lazy table's schema."""
    empty = frame._meta.drop(columns=[c for c in (ROW, BUCKET) if c in frame.columns])
    check_table(table, empty, {}, reject_threshold=1.0)


def id_buckets(raw: pd.Series, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket, has id) of raw id values parsed as the contract parses them (distinct values once)."""
    codes, uniques = pd.factorize(raw)
    parsed = PARSERS["id"](pd.Series(uniques))
    where = np.append(bucket_of(parsed, buckets), 0)[codes]
    present = np.append(parsed.notna().to_numpy(), False)[codes]
    return where, present


def _with_bucket(
    frame: pd.DataFrame, key: str, buckets: int, fallback: str | None = None
) -> pd.DataFrame:
    """The frame with BUCKET: the hash bucket of ``key``; rows without one go by ``fallback``."""
    if key not in frame.columns:
        raise ContractError(
            f"missing required column '{key}' (columns present: "
            f"{', '.join(c for c in frame.columns if c != ROW)})"
        )
    where, present = id_buckets(frame[key], buckets)
    if fallback is not None and fallback in frame.columns and not present.all():
        other, _ = id_buckets(frame[fallback], buckets)
        where = np.where(present, where, other)
    return frame.assign(**{BUCKET: where.astype("int64")})


def shuffle_to_buckets(frame, column: str, buckets: int):
    """The dask frame repartitioned so that partition b holds exactly the rows whose ``column`` is b."""
    divisions = list(range(buckets)) + [buckets - 1]
    return frame.set_index(column, divisions=divisions)


def _sorted_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """(raw frame in source order without helper columns, its ROW values)."""
    frame = frame.sort_values(ROW, kind="stable").reset_index(drop=True)
    rows = frame[ROW].to_numpy(dtype="int64")
    return frame.drop(columns=[c for c in (ROW, BUCKET, TARGET) if c in frame.columns]), rows


# ---------------------------------------------------------------------------------------------
# Attribute kinds and levels over the whole customers table


def _attribute_profile(frame: pd.DataFrame) -> tuple[AttributeKinds, dict[str, set]]:
    """One raw customers partition: AttributeKinds statistics and the text values of each attribute."""
    raw = _plain(frame).drop(columns=[c for c in (ROW, BUCKET) if c in frame.columns])
    kinds = AttributeKinds()
    kinds.add(pa.RecordBatch.from_pandas(raw, preserve_index=False))
    levels = {}
    for name in kinds.typed_numeric:
        if not kinds.typed_numeric[name]:
            levels[name] = set(PARSERS["text"](raw[name]).dropna().unique().tolist())
    return kinds, levels


def _merged_attributes(parts) -> tuple[dict[str, str], dict[str, pd.CategoricalDtype]]:
    """(kind of each attribute, categorical dtype of each text attribute) for the whole table.

    Levels are what the whole-table loader would give: the sorted distinct values of the column.
    """
    merged = AttributeKinds()
    levels: dict[str, set] = {}
    for kinds, values in parts:
        for name, typed in kinds.typed_numeric.items():
            merged.typed_numeric[name] = merged.typed_numeric.get(name, True) and typed
        for name, present in kinds.present.items():
            merged.present[name] = merged.present.get(name, False) or present
        for name, numeric in kinds.all_numeric.items():
            merged.all_numeric[name] = merged.all_numeric.get(name, True) and numeric
        for name, found in values.items():
            levels.setdefault(name, set()).update(found)
    kinds = merged.kinds()
    dtypes = {}
    for name, kind in kinds.items():
        if kind == "text":
            values = pd.Series(sorted(levels.get(name, ())), dtype="str")
            dtypes[name] = values.astype("category").dtype
    return kinds, dtypes


# ---------------------------------------------------------------------------------------------
# Validation per bucket


def _source_rows_error(err: ContractError, rows: np.ndarray) -> ContractError:
    """A structural error raised on a bucket, with its row numbers mapped to the source's."""
    import re

    def mapped(match):
        found = [str(int(rows[int(p)])) for p in match.group(1).split(", ")]
        return f"(rows {', '.join(found)}{match.group(2) or ''};"

    return ContractError(re.sub(r"\(rows ([\d, ]+)(, \.\.\.)?;", mapped, str(err)))


def _checked(table: str, raw: pd.DataFrame, rows: np.ndarray, known: dict):
    """check_table on one bucket, never stopping on the share of rejects or on a column that
    parses nowhere in the bucket (both judged on the totals, _check_totals).

    Returns (result, rejects with ``row`` = source row); result.parsing's rows are the source's.
    """
    try:
        res = check_table(table, raw, known, reject_threshold=1.0, part=True)
    except ContractError as err:
        raise _source_rows_error(err, rows) from None
    rejects = res.rejects
    if len(rejects):
        rejects = rejects.assign(row=rows[rejects["row"].to_numpy(dtype="int64")])
    res.parsing = part_parsing(res, rows)
    return res, rejects


def _validate_bucket(
    raw_customers: pd.DataFrame,
    raw_transactions: pd.DataFrame,
    raw_social: pd.DataFrame | None,
    kinds: dict,
    dtypes: dict,
    referred: pd.Index,
) -> dict:
    """Contract check of one bucket's customers, their transactions and the snapshots naming them."""
    raw, rows = _sorted_rows(raw_customers)
    res, rejects_c = _checked("customers", raw, rows, {})
    kept = np.setdiff1d(np.arange(len(raw)), res.rejects["row"].to_numpy(dtype="int64"))
    customers = conform_attributes(res.typed, raw, kept, kinds)
    customers = customers.astype({n: d for n, d in dtypes.items() if n in customers.columns})
    out = {
        "customers": customers,
        "rows_in": {"customers": len(raw)},
        "rejects": {"customers": rejects_c},
        "parsing": {"customers": res.parsing},
    }
    known = {"customers": pd.Index(customers["customer_id"])}

    raw, rows = _sorted_rows(raw_transactions)
    res, rejects_t = _checked("transactions", raw, rows, known)
    transactions = res.typed
    out.update(transactions=transactions)
    out["rows_in"]["transactions"] = len(raw)
    out["rejects"]["transactions"] = rejects_t
    out["parsing"]["transactions"] = res.parsing
    t = transactions["timestamp"]
    out["first_tx"] = None if t.empty else pd.Timestamp(t.min())
    out["last_tx"] = None if t.empty else pd.Timestamp(t.max())
    mine = referred.intersection(known["customers"])
    out["referred_tx"] = transactions.loc[transactions["customer_id"].isin(mine)]

    out["social"] = None
    if raw_social is not None:
        raw, rows = _sorted_rows(raw_social)
        res, rejects_s = _checked("social_profiles", raw, rows, known)
        kept = np.setdiff1d(np.arange(len(raw)), res.rejects["row"].to_numpy(dtype="int64"))
        out["social"] = res.typed.assign(**{ROW: rows[kept]})
        out["rows_in"]["social_profiles"] = len(raw)
        out["rejects"]["social_profiles"] = rejects_s
        out["parsing"]["social_profiles"] = res.parsing
    return out


def _bucket_stats(validated: dict) -> dict:
    """What the client needs of a validated bucket: counts, rejects, dates (no table data)."""
    return {
        "rows_in": validated["rows_in"],
        "rejects": validated["rejects"],
        "parsing": validated["parsing"],
        "customers": len(validated["customers"]),
        "first_tx": validated["first_tx"],
        "last_tx": validated["last_tx"],
    }


def _slim(customers: pd.DataFrame) -> pd.DataFrame:
    return customers[["customer_id", "signup_date"]]


def _referred_ids(raw: pd.DataFrame | None) -> pd.Index:
    """Every id a raw referrals table names as referred (parsed; a superset of the valid ones)."""
    if raw is None or "referred_id" not in raw.columns:
        return pd.Index([], dtype="str")
    return pd.Index(PARSERS["id"](raw["referred_id"]).dropna().unique(), dtype="str")


def _validate_referrals(raw: pd.DataFrame, slims: list[pd.DataFrame]) -> dict:
    """Referrals checked against every valid customer: {typed, rejects, rows_in}."""
    ids = IdSet([pa.array(s["customer_id"].array, type=pa.string()) for s in slims])
    mentioned = pd.concat(
        [PARSERS["id"](raw[c]) for c in ("referrer_id", "referred_id") if c in raw]
    )
    res = check_table("referrals", raw, {"customers": ids.known(mentioned)}, reject_threshold=1.0)
    return {"typed": res.typed, "rejects": res.rejects, "rows_in": res.rows_in}


def _validate_interactions(raw_part: pd.DataFrame, profiles: IdSet) -> dict:
    """One raw partition of interactions checked against every valid profile id: {typed (with ROW),
    rejects, rows_in}."""
    raw, rows = _sorted_rows(raw_part)
    mentioned = pd.concat(
        [PARSERS["id"](raw[c]) for c in ("source_profile_id", "target_profile_id") if c in raw]
    )
    res, rejects = _checked(
        "social_interactions", raw, rows, {"profiles": profiles.known(mentioned)}
    )
    kept = np.setdiff1d(np.arange(len(raw)), res.rejects["row"].to_numpy(dtype="int64"))
    return {"typed": res.typed.assign(**{ROW: rows[kept]}), "rejects": rejects, "rows_in": len(raw),
            "parsing": res.parsing}


# ---------------------------------------------------------------------------------------------
# Profile snapshots: whole per profile, then routed to their customers' buckets


def _profile_bucket(frame: pd.DataFrame, buckets: int) -> pd.DataFrame:
    return frame.assign(**{BUCKET: bucket_of(frame["profile_id"], buckets).astype("int64")})


def _route_to_customers(frame: pd.DataFrame, buckets: int) -> pd.DataFrame:
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


def _latest_profiles(frame: pd.DataFrame, as_of: pd.Timestamp, columns: list[str]) -> pd.DataFrame:
    """Latest snapshot before as_of of every profile in a profile bucket, customer_id = its owner.

    The population families read snapshots only through profile_snapshots (latest row and owner),
    which returns exactly these rows again, so the history never has to meet in one place.
    """
    frame = frame.sort_values(ROW, kind="stable")
    before = frame.loc[frame["snapshot_date"] < as_of, columns]
    latest = profile_snapshots(before.reset_index(drop=True), as_of).reset_index()
    return latest[[c for c in columns if c in latest.columns]]


# ---------------------------------------------------------------------------------------------
# The validated source on the cluster


@dataclass
class ClusterSource:
    """A source read, validated and partitioned by customer on the cluster (futures, per bucket).

    Bucket b of ``customers``, ``transactions`` and ``social`` holds the same customers. The client
    keeps only counts, rejects and dates.
    """

    client: object
    buckets: int
    customers: list  # typed customers (attributes in their whole-table kind and levels)
    transactions: list  # typed transactions
    slims: list  # customer_id, signup_date
    referred_tx: list  # transactions of customers someone referred (referral family)
    social: list | None  # snapshots of every profile linked to a customer of the bucket (with ROW)
    profiles: list | None  # snapshots per profile bucket (with ROW)
    social_columns: list[str] = field(default_factory=list)
    interactions: list | None = None  # typed interactions (with ROW), per raw partition
    referrals: object | None = None  # future of the typed referrals
    summary: pd.DataFrame | None = None  # table, rows_in, rows_kept, rows_rejected, top_reason
    rejects: dict[str, pd.DataFrame] = field(default_factory=dict)  # as load_source's
    fingerprint: dict = field(default_factory=dict)
    first_tx: pd.Timestamp | None = None
    last_tx: pd.Timestamp | None = None
    n_customers: int = 0  # valid customers
    seconds: dict[str, float] = field(default_factory=dict)

    def release_population_inputs(self) -> None:
        """Let the cluster free what only the population families read (runs with a single as_of,
        once population_dask has been submitted: its tasks keep their own inputs until done)."""
        self.profiles = self.interactions = self.referrals = None
        self.referred_tx = self.slims = []

    def release(self) -> None:
        """Let the cluster free every table of the source (counts and rejects stay)."""
        self.release_population_inputs()
        self.customers = self.transactions = self.social = None

    def bucket_tables(self, b: int):
        """Futures of bucket b's (customers, transactions, social)."""
        return (
            self.customers[b],
            self.transactions[b],
            None if self.social is None else self.social[b],
        )


def default_buckets(n_customers: int, workers: int) -> int:
    """Enough buckets to keep every worker busy (2 per worker) and buckets near 100k customers."""
    return max(1, 2 * workers, -(-n_customers // CUSTOMERS_PER_BUCKET))


def load_source_dask(
    source,
    client,
    *,
    buckets: int | None = None,
    reject_threshold: float = 0.01,
    with_fingerprint: bool = True,
) -> ClusterSource:
    """Read, validate and partition a source directory on the cluster; stops like load_source.

    Structural problems raise ContractError (row numbers are source rows); the share of rejected
    rows is judged per table on the totals, as the whole-table loader does.
    """
    import dask
    import dask.dataframe as dd

    started = time.perf_counter()
    seconds = {}
    files = source_files(source)
    for name in ("customers", "transactions"):
        if name not in files:
            raise ContractError(f"{name}: required table is missing")
    if "social_interactions" in files and "social_profiles" not in files:
        raise ContractError(
            "social_interactions: needs the social_profiles table to resolve profile ids"
        )
    raw, rows_total = {}, {}
    for name in ("customers", "transactions", "social_profiles", "social_interactions"):
        if name in files:
            raw[name], rows_total[name] = read_raw(files[name])
            check_columns(name, raw[name])
    workers = max(1, len(client.scheduler_info()["workers"]))
    buckets = buckets or default_buckets(rows_total["customers"], workers)
    seconds["read"] = time.perf_counter() - started

    # The shuffle: every customer-keyed row to the bucket of its customer (snapshots without one
    # by their profile), and the attribute statistics from the same read of customers.
    start = time.perf_counter()
    referrals_raw = client.submit(read_table, files["referrals"]) if "referrals" in files else None
    referred = client.submit(_referred_ids, referrals_raw)
    keyed = {
        "customers": ("customer_id", None),
        "transactions": ("customer_id", None),
        "social_profiles": ("customer_id", "profile_id"),
    }
    shuffled = {
        name: shuffle_to_buckets(
            raw[name].map_partitions(_with_bucket, key, buckets, fallback), BUCKET, buckets
        ).to_delayed()
        for name, (key, fallback) in keyed.items()
        if name in raw
    }
    profile_parts = [dask.delayed(_attribute_profile)(p) for p in raw["customers"].to_delayed()]
    names = list(shuffled)
    flat = [d for name in names for d in shuffled[name]] + profile_parts
    futures = client.compute(flat)
    parts = {name: futures[i * buckets : (i + 1) * buckets] for i, name in enumerate(names)}
    kinds, dtypes = _merged_attributes(client.gather(futures[len(names) * buckets :]))
    social_parts = parts.get("social_profiles", [None] * buckets)
    validated = [
        client.submit(
            _validate_bucket,
            parts["customers"][b],
            parts["transactions"][b],
            social_parts[b],
            kinds,
            dtypes,
            referred,
        )
        for b in range(buckets)
    ]
    stats = client.gather([client.submit(_bucket_stats, v) for v in validated])
    del futures, parts, social_parts
    seconds["shuffle_validate"] = time.perf_counter() - start

    def part(key):
        return [client.submit(operator.getitem, v, key) for v in validated]

    out = ClusterSource(
        client=client,
        buckets=buckets,
        customers=part("customers"),
        transactions=part("transactions"),
        slims=None,
        referred_tx=part("referred_tx"),
        social=None,
        profiles=None,
    )
    out.slims = [client.submit(_slim, f) for f in out.customers]
    rows_in: dict[str, int] = {}
    rejects: dict[str, list] = {}
    parsing: dict[str, dict] = {}

    def count(table: str, n: int, rejected: pd.DataFrame, parsed: dict | None = None) -> None:
        rows_in[table] = rows_in.get(table, 0) + n
        if len(rejected):
            rejects.setdefault(table, []).append(rejected)
        add_parsing(parsing.setdefault(table, {}), parsed or {})

    def check_totals(table: str) -> None:
        check_parsing(table, parsing.get(table, {}))
        _check_totals(table, rows_in, rejects, reject_threshold)

    for st in stats:
        for table, n in st["rows_in"].items():
            count(table, n, st["rejects"][table], st["parsing"][table])
    # Nothing lost in the shuffle: every row read reached exactly one bucket.
    changed = {
        t: (n, rows_in.get(t, 0))
        for t, n in rows_total.items()
        if t != "social_interactions" and rows_in.get(t, 0) != n
    }
    if changed:
        raise AssertionError(f"rows read -> rows validated differ after the shuffle: {changed}")
    out.n_customers = sum(st["customers"] for st in stats)
    firsts = [st["first_tx"] for st in stats if st["first_tx"] is not None]
    lasts = [st["last_tx"] for st in stats if st["last_tx"] is not None]
    out.first_tx = min(firsts) if firsts else None
    out.last_tx = max(lasts) if lasts else None
    check_totals("customers")
    if out.n_customers == 0:
        raise ContractError("customers: the table has no valid rows")
    check_totals("transactions")

    if "social_profiles" in raw:
        start = time.perf_counter()
        check_totals("social_profiles")
        kept = part("social")
        meta = client.submit(_empty, kept[0]).result()
        out.social_columns = [col for col in meta.columns if col != ROW]
        # Second shuffle: each profile's whole history in one profile bucket...
        by_profile = dd.from_delayed(kept, meta=meta, verify_meta=False).map_partitions(
            _profile_bucket, buckets, meta=_profile_bucket(meta, buckets)
        )
        out.profiles = client.compute(shuffle_to_buckets(by_profile, BUCKET, buckets).to_delayed())
        # ...third: that history to the buckets of the customers the profile was linked to.
        routed = dd.from_delayed(
            [client.submit(_route_to_customers, p, buckets) for p in out.profiles],
            meta=_route_to_customers(meta, buckets),
            verify_meta=False,
        )
        out.social = client.compute(shuffle_to_buckets(routed, TARGET, buckets).to_delayed())

        if "social_interactions" in raw:
            ids = client.gather([client.submit(_profile_ids, p) for p in out.profiles])
            profile_set = client.scatter(IdSet([a for a in ids if len(a)]), broadcast=True)
            checked = [
                client.submit(_validate_interactions, p, profile_set)
                for p in client.compute(raw["social_interactions"].to_delayed())
            ]
            out.interactions = [client.submit(operator.getitem, f, "typed") for f in checked]
            for st in client.gather([client.submit(_without_typed, f) for f in checked]):
                count("social_interactions", st["rows_in"], st["rejects"], st["parsing"])
            rows_in.setdefault("social_interactions", 0)
            check_totals("social_interactions")
            del checked
        seconds["profiles_interactions"] = time.perf_counter() - start

    if referrals_raw is not None:
        checked = client.submit(_validate_referrals, referrals_raw, out.slims)
        out.referrals = client.submit(operator.getitem, checked, "typed")
        st = client.submit(_without_typed, checked).result()
        count("referrals", st["rows_in"], st["rejects"])
        check_totals("referrals")

    out.rejects = {
        table: pd.concat(found, ignore_index=True)
        .sort_values("row", kind="stable")
        .reset_index(drop=True)
        for table, found in rejects.items()
    }
    out.summary = _summary(rows_in, out.rejects)
    if with_fingerprint:
        out.fingerprint = fingerprint(table_files(source))
    seconds["total"] = time.perf_counter() - started
    out.seconds = {k: round(v, 3) for k, v in seconds.items()}
    return out


def _empty(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:0]


def _profile_ids(frame: pd.DataFrame) -> pa.Array:
    return pa.array(frame["profile_id"].unique(), type=pa.string())


def _without_typed(checked: dict) -> dict:
    return {k: v for k, v in checked.items() if k != "typed"}


def _check_totals(table: str, rows_in: dict, rejects: dict, threshold: float) -> None:
    """Stop, as validate_tables does, when too many rows of the whole table are invalid."""
    n = rows_in.get(table, 0)
    parts = rejects.get(table, [])
    bad = sum(len(p) for p in parts)
    if n and bad / n > threshold:
        reasons = pd.concat(parts)["reason"]
        counts = (
            reasons.str.split("; ").explode().str.replace(r" '.*'$", "", regex=True).value_counts()
        )
        detail = "; ".join(f"{c} x {r}" for r, c in counts.head(6).items())
        rows = np.sort(pd.concat(parts)["row"].to_numpy(dtype="int64"))
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise ContractError(
            f"{table}: {bad} of {n} rows ({bad / n:.1%}) are invalid, more than the reject threshold "
            f"of {threshold:.1%}; {detail} (rows {shown})"
        )


def _summary(rows_in: dict, rejects: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows in, kept and rejected per table, with the most frequent reason (as load_source's summary)."""
    rows = []
    for table in (
        "customers",
        "transactions",
        "social_profiles",
        "social_interactions",
        "referrals",
    ):
        if table not in rows_in:
            continue
        frame = rejects.get(table)
        bad = 0 if frame is None else len(frame)
        top = ""
        if bad:
            top = frame["reason"].str.replace(r" '.*?'", "", regex=True).value_counts().index[0]
        rows.append(
            {
                "table": table,
                "rows_in": rows_in[table],
                "rows_kept": rows_in[table] - bad,
                "rows_rejected": bad,
                "top_reason": top,
            }
        )
    return pd.DataFrame(
        rows, columns=["table", "rows_in", "rows_kept", "rows_rejected", "top_reason"]
    )


# ---------------------------------------------------------------------------------------------
# Features per as_of


def _population_task(
    slims,
    referred_tx,
    transactions_meta,
    latest,
    social_columns,
    interactions,
    referrals,
    as_of,
    config,
    families,
    buckets,
) -> list[dict]:
    """The population-wide families over everyone, split into one {family: rows} per bucket."""
    everyone = pd.concat(slims, ignore_index=True)
    tx = pd.concat(referred_tx, ignore_index=True) if referred_tx else transactions_meta
    profiles = None
    if latest is not None:
        profiles = pd.concat(latest, ignore_index=True)[social_columns] if latest else None
    inter = None
    if interactions is not None:
        inter = pd.concat(interactions, ignore_index=True).sort_values(ROW, kind="stable")
        inter = inter.loc[inter["timestamp"] < as_of].drop(columns=[ROW]).reset_index(drop=True)
    tables = Tables(
        customers=everyone,
        transactions=tx,
        social_profiles=profiles,
        social_interactions=inter,
        referrals=referrals,
    )
    frames = population_features(tables, as_of, config, families=families)
    out = [{} for _ in range(buckets)]
    for name, frame in frames.items():
        where = bucket_of(frame.index.to_series(), buckets)
        order = np.argsort(where, kind="stable")
        bounds = np.searchsorted(where[order], np.arange(buckets + 1))
        for b in range(buckets):
            piece = frame.iloc[order[bounds[b] : bounds[b + 1]]]
            piece.attrs = dict(frame.attrs)
            out[b][name] = piece
    return out


def population_dask(cs: ClusterSource, as_of, config: FeatureConfig, families=None) -> list:
    """Futures of each bucket's precomputed population-wide families as of ``as_of``."""
    client = cs.client
    as_of = as_timestamp(as_of)
    chosen = select_families(families)
    if not any(f.population_wide for f in chosen):
        return [client.scatter({}, hash=False)] * cs.buckets if cs.buckets else []
    latest = None
    if cs.profiles is not None:
        latest = [
            client.submit(_latest_profiles, p, as_of, cs.social_columns + [ROW])
            for p in cs.profiles
        ]
    tx_meta = client.submit(_empty, cs.transactions[0])
    task = client.submit(
        _population_task,
        cs.slims,
        cs.referred_tx,
        tx_meta,
        latest,
        cs.social_columns,
        cs.interactions,
        cs.referrals,
        as_of,
        config,
        tuple(f.name for f in chosen),
        cs.buckets,
        pure=False,
    )
    return [client.submit(operator.getitem, task, b) for b in range(cs.buckets)]


def bucket_tables(
    customers: pd.DataFrame,
    transactions: pd.DataFrame,
    social: pd.DataFrame | None,
    social_columns: list[str],
) -> Tables:
    """A bucket's contract tables, rows in source order, helper columns removed."""
    if social is not None:
        social = social.sort_values(ROW, kind="stable")[social_columns].reset_index(drop=True)
    return Tables(customers=customers, transactions=transactions, social_profiles=social)


def _bucket_features(
    customers, transactions, social, social_columns, precomputed, as_of, config, families
) -> pd.DataFrame:
    tables = bucket_tables(customers, transactions, social, social_columns)
    return build_features(tables, as_of, config, families=families, precomputed=precomputed)


def with_coverage_end(transactions: pd.DataFrame, end: pd.Timestamp | None) -> pd.DataFrame:
    """A bucket's transactions plus one row without a customer, dated at the source's last transaction.

    label_values checks that the transactions reach the end of the label window, a property of the
    whole source; a bucket holds only its customers' rows, so it is told the source's end this way.
    The row names no customer and carries 0, so no label counts it.
    """
    if end is None or (len(transactions) and transactions["timestamp"].max() >= end):
        return transactions
    marker = transactions.iloc[:0].reindex([0])
    marker["timestamp"] = end
    marker["amount"] = 0.0
    return pd.concat(
        [transactions, marker.astype(transactions.dtypes.to_dict())], ignore_index=True
    )


def _bucket_window(
    customers,
    transactions,
    social,
    social_columns,
    precomputed,
    cutoff,
    config,
    families,
    horizon_days,
    coverage_end,
) -> pd.DataFrame:
    """A bucket's features as of ``cutoff`` with ``cutoff`` and ``label`` columns (build_training_set's rows)."""
    tables = bucket_tables(customers, transactions, social, social_columns)
    window = build_features(tables, cutoff, config, families=families, precomputed=precomputed)
    labelled = Tables(
        customers=customers, transactions=with_coverage_end(transactions, coverage_end)
    )
    label = label_values(labelled, cutoff, horizon_days, config)
    return window.assign(
        cutoff=pd.Series(cutoff, index=window.index, dtype="datetime64[ns]"), label=label
    )


def features_dask(
    cs: ClusterSource,
    as_of,
    config: FeatureConfig,
    *,
    families=None,
    horizon_days: int | None = None,
) -> list:
    """Futures of each bucket's build_features frame as of ``as_of`` (with cutoff and label columns
    when ``horizon_days`` is given, as in build_training_set)."""
    client = cs.client
    as_of = as_timestamp(as_of)
    names = tuple(f.name for f in select_families(families))
    population = population_dask(cs, as_of, config, names)
    out = []
    for b in range(cs.buckets):
        customers, transactions, social = cs.bucket_tables(b)
        if horizon_days is None:
            out.append(
                client.submit(
                    _bucket_features,
                    customers,
                    transactions,
                    social,
                    cs.social_columns,
                    population[b],
                    as_of,
                    config,
                    names,
                    pure=False,
                )
            )
        else:
            out.append(
                client.submit(
                    _bucket_window,
                    customers,
                    transactions,
                    social,
                    cs.social_columns,
                    population[b],
                    as_of,
                    config,
                    names,
                    int(horizon_days),
                    cs.last_tx,
                    pure=False,
                )
            )
    return out


def _latest_before(transactions: pd.DataFrame, until: pd.Timestamp):
    t = transactions["timestamp"]
    t = t[t < until]
    return None if t.empty else pd.Timestamp(t.max())


def latest_transaction_before(cs: ClusterSource, until) -> pd.Timestamp | None:
    """The latest valid transaction dated before ``until`` (what a source cut at ``until`` ends with)."""
    until = as_timestamp(until)
    found = [
        t
        for t in cs.client.gather(
            [cs.client.submit(_latest_before, f, until) for f in cs.transactions]
        )
        if t is not None
    ]
    return max(found) if found else None


def check_label_window(cs: ClusterSource, as_of, horizon_days: int) -> None:
    """Raise ValueError unless the source's transactions cover [as_of, as_of + horizon) (as label_values)."""
    from features.labels import check_label_coverage

    end = pd.DataFrame(
        {"timestamp": pd.Series([] if cs.last_tx is None else [cs.last_tx], dtype="datetime64[ns]")}
    )
    check_label_coverage(
        Tables(customers=pd.DataFrame(), transactions=end), as_timestamp(as_of), int(horizon_days)
    )


def gather_frames(client, futures) -> pd.DataFrame:
    """Bucket frames concatenated and sorted by customer_id (the pandas engine's row order)."""
    frames = client.gather(futures)
    return pd.concat(frames).sort_index(kind="stable")


# ---------------------------------------------------------------------------------------------
# Entry points


def build_features_dask(
    source,
    as_of,
    config: FeatureConfig,
    *,
    scheduler=None,
    families=None,
    buckets: int | None = None,
    reject_threshold: float | None = None,
    horizon_days: int | None = None,
) -> pd.DataFrame:
    """build_features(load_source(source).tables, as_of, config) computed on a Dask cluster.

    Same rows (customers who signed up before as_of, sorted by customer_id), columns and dtypes as
    the pandas engine; with ``horizon_days`` a ``label`` column as in ``clv features --horizon-days``.
    scheduler: ``tcp://host:8786``, a distributed.Client, or None for a local cluster.
    The result is gathered to the client: for bases that do not fit there, use write_features_dask.
    """
    threshold = config.reject_threshold if reject_threshold is None else reject_threshold
    with cluster(scheduler) as client:
        cs = load_source_dask(
            source, client, buckets=buckets, reject_threshold=threshold, with_fingerprint=False
        )
        if horizon_days:
            check_label_window(cs, as_of, horizon_days)
        futures = features_dask(cs, as_of, config, families=families, horizon_days=horizon_days)
        cs.release_population_inputs()
        frame = gather_frames(client, futures)
    if horizon_days:
        frame = frame.drop(columns=["cutoff"])
    return frame


def _without_cutoff(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["cutoff"])


def _write_part(frame: pd.DataFrame, directory: str, b: int) -> int:
    path = Path(directory) / f"part-{b:05d}.parquet"
    frame.to_parquet(path)
    return len(frame)


def replace_path(tmp: Path, out: Path) -> None:
    """Move a finished temporary file or directory to ``out``, replacing what was there."""
    if out.exists() and (out.is_dir() or tmp.is_dir()):
        old = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.old.tmp"
        os.replace(out, old)
        os.replace(tmp, out)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(tmp, out)


def write_features_dask(
    source,
    as_of,
    config: FeatureConfig,
    out,
    *,
    scheduler=None,
    families=None,
    buckets: int | None = None,
    reject_threshold: float | None = None,
    horizon_days: int | None = None,
    rejects_dir=None,
) -> dict:
    """``clv features --engine dask``: the feature table as a partitioned Parquet dataset ``out``.

    Workers write one part per bucket (rows sorted by customer_id within a part) into a temporary
    directory beside ``out``, renamed into place at the end; then the feature manifest beside it
    (OUT_STEM.manifest.json) and rejected rows (``rejects_dir``, default ``rejects/`` beside out).
    ``out`` must be on storage the workers and the client share. Returns a summary dict.
    """
    from features.manifest import manifest_for

    started = time.perf_counter()
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    threshold = config.reject_threshold if reject_threshold is None else reject_threshold
    tmp = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.dir.tmp"
    tmp.mkdir()
    try:
        with cluster(scheduler) as client:
            cs = load_source_dask(
                source, client, buckets=buckets, reject_threshold=threshold, with_fingerprint=False
            )
            if horizon_days:
                check_label_window(cs, as_of, horizon_days)
            futures = features_dask(cs, as_of, config, families=families, horizon_days=horizon_days)
            cs.release_population_inputs()
            if horizon_days:
                futures = [client.submit(_without_cutoff, f) for f in futures]
            meta = client.submit(_empty, futures[0]).result()
            rows = client.gather(
                [client.submit(_write_part, f, str(tmp), b) for b, f in enumerate(futures)]
            )
        replace_path(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    manifest = manifest_for(meta, config, families)
    manifest_file = manifest.save(
        out.with_name(out.name.removesuffix(".parquet") + ".manifest.json")
    )
    written = write_rejects(
        cs.rejects, rejects_dir if rejects_dir is not None else out.parent / "rejects"
    )
    return {
        "output": str(out),
        "manifest": str(manifest_file),
        "rows": int(sum(rows)),
        "features": len(manifest.features),
        "customers_in": int(cs.summary.loc[cs.summary["table"] == "customers", "rows_in"].iloc[0]),
        "tables": cs.summary.to_dict("records"),
        "rejects": [str(p) for p in written],
        "parts": cs.buckets,
        "seconds": round(time.perf_counter() - started, 3),
    }


__all__ = [
    "ClusterSource",
    "build_features_dask",
    "features_dask",
    "load_source_dask",
    "population_dask",
    "write_features_dask",
]
