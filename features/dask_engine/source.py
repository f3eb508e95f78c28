"""A source read, validated and partitioned by customer on a Dask cluster: the ClusterSource.

``load_source_dask`` stops exactly where features.ingest.source.load_source stops (same errors,
same rejected rows, same counts; tests/test_dask_equivalence.py), but never gathers a table: the
client keeps counts, rejects and dates, the workers the tables, one bucket of customers each.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from features.dask_engine.read import (
    BUCKET,
    TARGET,
    attribute_profile,
    check_columns,
    merged_attributes,
    read_raw,
    shuffle_to_buckets,
    source_files,
    with_bucket,
)
from features.dask_engine.validate import (
    bucket_stats,
    profile_bucket,
    referred_ids,
    route_to_customers,
    slim,
    validate_bucket,
    validate_interactions,
    validate_referrals,
)
from features.identifiers import identifier_reason
from features.ingest.contract import (
    add_parsing,
    check_has_customers,
    check_parsing,
    check_reject_share,
    check_table_set,
    reason_counts,
    table_summary,
)
from features.ingest.export_checks import DEFAULT_RULES, ExportNotes, ExportRules, id_hint
from features.ingest.id_sets import IdSet
from features.ingest.mapping import as_mapping
from features.ingest.partition import ROW
from features.ingest.source import fingerprint, read_table, table_files

CUSTOMERS_PER_BUCKET = 100_000


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
    profile_set: object | None = None  # future of the IdSet of valid profile ids (with interactions)
    social_columns: list[str] = field(default_factory=list)
    interactions: list | None = None  # typed interactions (with ROW), per raw partition
    referrals: object | None = None  # future of the typed referrals
    summary: pd.DataFrame | None = None  # table, rows_in, rows_kept, rows_rejected, top_reason
    rejects: dict[str, pd.DataFrame] = field(default_factory=dict)  # as load_source's
    fingerprint: dict = field(default_factory=dict)
    first_tx: pd.Timestamp | None = None
    last_tx: pd.Timestamp | None = None
    notes: list[str] = field(default_factory=list)  # facts about kept rows for the summary (ExportNotes)
    n_customers: int = 0  # valid customers
    attribute_kinds: dict[str, str] = field(default_factory=dict)  # attribute column -> number | text
    identifiers: dict[str, str] = field(default_factory=dict)  # identifier-like text attributes -> why
    seconds: dict[str, float] = field(default_factory=dict)

    def release_population_inputs(self) -> None:
        """Let the cluster free what only the population families read (runs with a single as_of,
        once population_dask has been submitted: its tasks keep their own inputs until done)."""
        self.profiles = self.interactions = self.referrals = self.profile_set = None
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
    rules: ExportRules = DEFAULT_RULES,
    mapping=None,
) -> ClusterSource:
    """Read, validate and partition a source directory on the cluster; stops like load_source.

    Structural problems raise ContractError (row numbers are source rows); the share of rejected
    rows is judged per table on the totals, as the whole-table loader does. ``mapping``: file and
    column names that differ from the contract, as load_source's.
    """
    import dask
    import dask.dataframe as dd

    started = time.perf_counter()
    seconds = {}
    mapping = as_mapping(mapping)
    files = source_files(source, mapping)
    check_table_set(set(files))
    raw, rows_total = {}, {}
    for name in ("customers", "transactions", "social_profiles", "social_interactions"):
        if name in files:
            raw[name], rows_total[name] = read_raw(files[name], renaming=mapping.renaming(name))
            check_columns(name, raw[name])
    workers = max(1, len(client.scheduler_info()["workers"]))
    buckets = buckets or default_buckets(rows_total["customers"], workers)
    seconds["read"] = time.perf_counter() - started

    # The shuffle: every customer-keyed row to the bucket of its customer (snapshots without one
    # by their profile), and the attribute statistics from the same read of customers.
    start = time.perf_counter()
    referrals_raw = (client.submit(read_table, files["referrals"], mapping.renaming("referrals"))
                     if "referrals" in files else None)
    referred = client.submit(referred_ids, referrals_raw)
    keyed = {
        "customers": ("customer_id", None),
        "transactions": ("customer_id", None),
        "social_profiles": ("customer_id", "profile_id"),
    }
    shuffled = {
        name: shuffle_to_buckets(
            raw[name].map_partitions(with_bucket, key, buckets, fallback), BUCKET, buckets
        ).to_delayed()
        for name, (key, fallback) in keyed.items()
        if name in raw
    }
    profile_parts = [dask.delayed(attribute_profile)(p) for p in raw["customers"].to_delayed()]
    names = list(shuffled)
    flat = [d for name in names for d in shuffled[name]] + profile_parts
    futures = client.compute(flat)
    parts = {name: futures[i * buckets : (i + 1) * buckets] for i, name in enumerate(names)}
    kinds, dtypes = merged_attributes(client.gather(futures[len(names) * buckets :]))
    social_parts = parts.get("social_profiles", [None] * buckets)
    validated = [
        client.submit(
            validate_bucket,
            parts["customers"][b],
            parts["transactions"][b],
            social_parts[b],
            kinds,
            dtypes,
            referred,
            rules,
        )
        for b in range(buckets)
    ]
    stats = client.gather([client.submit(bucket_stats, v) for v in validated])
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
    out.slims = [client.submit(slim, f) for f in out.customers]
    rows_in: dict[str, int] = {}
    rejects: dict[str, list] = {}
    parsing: dict[str, dict] = {}
    unknown: dict[str, dict[str, list]] = {}  # table -> reference column -> some unknown ids

    def known_ids(target: str) -> pd.Index | None:  # only asked when a threshold error names ids
        if target != "customers":
            return None
        return pd.Index(pd.concat(client.gather(out.slims))["customer_id"], dtype="str")

    def count(table: str, n: int, rejected: pd.DataFrame, parsed: dict | None = None) -> None:
        rows_in[table] = rows_in.get(table, 0) + n
        if len(rejected):
            rejects.setdefault(table, []).append(rejected)
        add_parsing(parsing.setdefault(table, {}), parsed or {}, table)

    def check_totals(table: str) -> None:
        check_parsing(table, parsing.get(table, {}))
        found = rejects.get(table, [])
        reject_frame = pd.concat(found) if found else None
        check_reject_share(table, sum(len(p) for p in found), rows_in.get(table, 0), reject_threshold,
                           lambda: reason_counts(reject_frame["reason"]),
                           rows=None if reject_frame is None else reject_frame["row"].to_numpy(dtype="int64"),
                           hint=lambda: id_hint(table, unknown.get(table, {}), known_ids))

    out.notes = sum((st["notes"] for st in stats), ExportNotes()).lines()
    for st in stats:
        for table, n in st["rows_in"].items():
            count(table, n, st["rejects"][table], st["parsing"][table])
            for column, ids in st["unknown"].get(table, {}).items():
                unknown.setdefault(table, {}).setdefault(column, []).extend(ids)
    # Nothing lost in the shuffle: every row read reached exactly one bucket.
    changed = {
        t: (n, rows_in.get(t, 0))
        for t, n in rows_total.items()
        if t != "social_interactions" and rows_in.get(t, 0) != n
    }
    if changed:
        raise AssertionError(f"rows read -> rows validated differ after the shuffle: {changed}")
    out.n_customers = sum(st["customers"] for st in stats)
    # Judged on the whole table's distinct values, as the pandas engine judges its whole table.
    out.attribute_kinds = dict(kinds)
    out.identifiers = {name: why for name, dtype in dtypes.items()
                       if (why := identifier_reason(pd.Series(dtype.categories), out.n_customers))}
    firsts = [st["first_tx"] for st in stats if st["first_tx"] is not None]
    lasts = [st["last_tx"] for st in stats if st["last_tx"] is not None]
    out.first_tx = min(firsts) if firsts else None
    out.last_tx = max(lasts) if lasts else None
    check_totals("customers")
    check_has_customers(out.n_customers)
    check_totals("transactions")

    if "social_profiles" in raw:
        start = time.perf_counter()
        check_totals("social_profiles")
        kept = part("social")
        meta = client.submit(empty, kept[0]).result()
        out.social_columns = [col for col in meta.columns if col != ROW]
        # Second shuffle: each profile's whole history in one profile bucket...
        by_profile = dd.from_delayed(kept, meta=meta, verify_meta=False).map_partitions(
            profile_bucket, buckets, meta=profile_bucket(meta, buckets)
        )
        out.profiles = client.compute(shuffle_to_buckets(by_profile, BUCKET, buckets).to_delayed())
        # ...third: that history to the buckets of the customers the profile was linked to.
        routed = dd.from_delayed(
            [client.submit(route_to_customers, p, buckets) for p in out.profiles],
            meta=route_to_customers(meta, buckets),
            verify_meta=False,
        )
        out.social = client.compute(shuffle_to_buckets(routed, TARGET, buckets).to_delayed())

        if "social_interactions" in raw:
            ids = client.gather([client.submit(_profile_ids, p) for p in out.profiles])
            profile_set = client.scatter(IdSet([a for a in ids if len(a)]), broadcast=True)
            out.profile_set = profile_set
            checked = [
                client.submit(validate_interactions, p, profile_set, rules)
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
        checked = client.submit(validate_referrals, referrals_raw, out.slims, rules)
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
    out.summary = table_summary({table: (n, out.rejects.get(table)) for table, n in rows_in.items()})
    if with_fingerprint:
        out.fingerprint = fingerprint(table_files(source, mapping), mapping)
    seconds["total"] = time.perf_counter() - started
    out.seconds = {k: round(v, 3) for k, v in seconds.items()}
    return out


def empty(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:0]


def _profile_ids(frame: pd.DataFrame) -> pa.Array:
    return pa.array(frame["profile_id"].unique(), type=pa.string())


def _without_typed(checked: dict) -> dict:
    return {k: v for k, v in checked.items() if k != "typed"}
