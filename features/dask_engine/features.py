"""Features on Dask: build_features per customer bucket, the population-wide families once per cutoff.

One source of truth: every bucket calls ``features.build.build_features``; the population-wide
families (referral, network, topical) are computed once per as_of in one task by
features.population.PopulationFeatures, fed the buckets' customers, the referred customers'
transactions, every profile's latest snapshot and the interactions partition by partition (as the
chunked scorer feeds it), and their rows are split by bucket and joined to each bucket's
build_features(precomputed=...). Design and figures: docs/scaling.md.
"""

from __future__ import annotations

import operator
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features import atomic
from features.build import build_features, select_families
from features.config import FeatureConfig
from features.dask_engine.cluster import cluster
from features.dask_engine.source import ClusterSource, empty, load_source_dask
from features.dask_engine.validate import latest_profiles
from features.families.btyd import purchase_summary
from features.identifiers import resolve_attributes
from features.ingest.partition import ROW
from features.ingest.source import write_rejects
from features.labels import check_label_coverage, label_values
from features.manifest import manifest_for
from features.population import (
    SOCIAL_GRAPH_FAMILIES,
    PopulationFeatures,
    precomputed,
    split_by_bucket,
)
from features.run_request import check_cutoff
from features.tables import Tables

# ---------------------------------------------------------------------------------------------
# The population-wide families, once per cutoff


def _population_task(slims, referred_tx, summaries, latest, interactions, referrals, profile_set, as_of,
                     config, families, buckets) -> list[dict]:
    """The population-wide families over everyone, split into one {family: rows} per bucket."""
    population = PopulationFeatures(as_of, config, families,
                                    profiles=profile_set if latest is not None else None,
                                    interactions=interactions is not None)
    names = population.families
    population.add_referrals(referrals)
    for customers, transactions in zip(slims, referred_tx, strict=True):
        population.add_customers(customers, transactions)
    for summary in summaries:
        population.add_purchase_summary(summary)
    owned = None
    if latest is not None and interactions is not None and population.graph:
        codes = [population.add_latest_profiles(pa.array(frame["profile_id"].array, type=pa.string()))
                 for frame in latest]
        for part in interactions:  # partitions in source order, rows in source order within each
            population.add_interactions(part.drop(columns=[ROW]))
        values = population.profile_values()
        pieces = []
        for frame, profile_codes in zip(latest, codes, strict=True):
            mine = frame["customer_id"].notna().to_numpy()
            taken = profile_codes[mine]
            pieces.append(pd.DataFrame({"customer_id": frame["customer_id"].to_numpy()[mine],
                                        "engagements": frame["engagements"].to_numpy("float64")[mine],
                                        "followers": frame["followers"].to_numpy("float64")[mine],
                                        **{name: v[taken] for name, v in values.items()}}))
        owned = pd.concat(pieces, ignore_index=True) if pieces else None
    frames = population.social_frames(owned)
    if "referral" in names:
        frames["referral"] = population.referral_frame()
    if "btyd" in names:
        frames["btyd"] = population.btyd_frame()
    out = [{} for _ in range(buckets)]
    for name in names:  # registry order
        for b, piece in enumerate(split_by_bucket(frames[name], buckets)):
            out[b][name] = piece
    return [precomputed(parts, as_of) for parts in out]


def population_dask(cs: ClusterSource, as_of: pd.Timestamp, config: FeatureConfig, families=None) -> list:
    """Futures of each bucket's precomputed population-wide families as of ``as_of``."""
    client = cs.client
    chosen = tuple(f.name for f in select_families(families) if f.population_wide)
    if not chosen:
        return [client.scatter({}, hash=False)] * cs.buckets if cs.buckets else []
    latest = None
    if cs.profiles is not None and cs.interactions is not None and any(
            name in SOCIAL_GRAPH_FAMILIES for name in chosen):
        latest = [client.submit(latest_profiles, p, as_of, cs.social_columns + [ROW]) for p in cs.profiles]
    summaries = ([client.submit(purchase_summary, c, t, as_of) for c, t in zip(cs.customers, cs.transactions,
                                                                              strict=True)]
                 if "btyd" in chosen else [])
    task = client.submit(_population_task, cs.slims, cs.referred_tx, summaries, latest, cs.interactions,
                         cs.referrals, cs.profile_set, as_of, config, chosen, cs.buckets, pure=False)
    return [client.submit(operator.getitem, task, b) for b in range(cs.buckets)]


# ---------------------------------------------------------------------------------------------
# Each bucket's features


def bucket_tables(customers: pd.DataFrame, transactions: pd.DataFrame, social: pd.DataFrame | None,
                  social_columns: list[str]) -> Tables:
    """A bucket's contract tables, rows in source order, helper columns removed."""
    if social is not None:
        social = social.sort_values(ROW, kind="stable")[social_columns].reset_index(drop=True)
    return Tables(customers=customers, transactions=transactions, social_profiles=social)


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
    return pd.concat([transactions, marker.astype(transactions.dtypes.to_dict())], ignore_index=True)


def _bucket_frame(customers, transactions, social, social_columns, population, as_of, config, families,
                  coverage_end, labels: bool) -> pd.DataFrame:
    """A bucket's build_features frame; with ``labels``, plus ``cutoff`` and ``label`` columns as
    build_training_set's rows."""
    tables = bucket_tables(customers, transactions, social, social_columns)
    frame = build_features(tables, as_of, config, families=families, precomputed=population)
    if not labels:
        return frame
    labelled = Tables(customers=customers, transactions=with_coverage_end(transactions, coverage_end))
    return frame.assign(cutoff=pd.Series(as_of, index=frame.index, dtype="datetime64[ns]"),
                        label=label_values(labelled, as_of, config))


def features_dask(cs: ClusterSource, as_of: pd.Timestamp, config: FeatureConfig, *, families=None,
                  labels: bool = False) -> list:
    """Futures of each bucket's build_features frame as of ``as_of`` (with ``cutoff`` and ``label``
    columns over config.horizon_days when ``labels``, as in build_training_set). The attribute
    columns are judged on the whole table (features.identifiers), never per bucket."""
    check_cutoff(as_of)
    config, _ = resolve_attributes(config, list(cs.attribute_kinds), cs.identifiers)
    client = cs.client
    names = tuple(f.name for f in select_families(families))
    population = population_dask(cs, as_of, config, names)
    return [client.submit(_bucket_frame, *cs.bucket_tables(b), cs.social_columns, population[b], as_of, config,
                          names, cs.last_tx, labels, pure=False) for b in range(cs.buckets)]


def _latest_before(transactions: pd.DataFrame, until: pd.Timestamp):
    t = transactions["timestamp"]
    t = t[t < until]
    return None if t.empty else pd.Timestamp(t.max())


def latest_transaction_before(cs: ClusterSource, until: pd.Timestamp) -> pd.Timestamp | None:
    """The latest valid transaction dated before ``until`` (what a source cut at ``until`` ends with)."""
    found = [t for t in cs.client.gather([cs.client.submit(_latest_before, f, until) for f in cs.transactions])
             if t is not None]
    return max(found) if found else None


def check_label_window(cs: ClusterSource, as_of: pd.Timestamp, horizon_days: int) -> None:
    """Raise ValueError unless the source's transactions cover [as_of, as_of + horizon) (as label_values)."""
    end = pd.DataFrame({"timestamp": pd.Series([] if cs.last_tx is None else [cs.last_tx], dtype="datetime64[ns]")})
    check_label_coverage(Tables(customers=pd.DataFrame(), transactions=end), as_of, int(horizon_days))


# ---------------------------------------------------------------------------------------------
# Entry points


def build_features_dask(source, as_of: pd.Timestamp, config: FeatureConfig, *, scheduler=None, families=None,
                        buckets: int | None = None, reject_threshold: float | None = None,
                        labels: bool = False, mapping=None) -> pd.DataFrame:
    """build_features(load_source(source, mapping=mapping).tables, as_of, config) computed on a Dask cluster.

    Same rows (customers who signed up before as_of, sorted by customer_id), columns and dtypes as
    the pandas engine; with ``labels`` a ``label`` column over config.horizon_days, as in
    ``clv features --horizon-days``. scheduler: ``tcp://host:8786``, a distributed.Client, or None
    for a local cluster. The result is gathered to the client: for bases that do not fit there,
    use write_features_dask.
    """
    threshold = config.reject_threshold if reject_threshold is None else reject_threshold
    with cluster(scheduler) as client:
        cs = load_source_dask(source, client, buckets=buckets, reject_threshold=threshold, with_fingerprint=False,
                              rules=config.export_rules(), mapping=mapping)
        if labels:
            check_label_window(cs, as_of, config.horizon_days)
        futures = features_dask(cs, as_of, config, families=families, labels=labels)
        cs.release_population_inputs()
        frame = pd.concat(client.gather(futures)).sort_index(kind="stable")
    return frame.drop(columns=["cutoff"]) if labels else frame


def _write_part(frame: pd.DataFrame, directory: str, b: int, drop: list[str]) -> int:
    frame.drop(columns=drop).to_parquet(Path(directory) / f"part-{b:05d}.parquet")
    return len(frame)


def write_features_dask(source, as_of: pd.Timestamp, config: FeatureConfig, out, *, scheduler=None,
                        families=None, buckets: int | None = None, reject_threshold: float | None = None,
                        labels: bool = False, rejects_dir=None, mapping=None) -> dict:
    """``clv features --engine dask``: the feature table as a partitioned Parquet dataset ``out``.

    Workers write one part per bucket (rows sorted by customer_id within a part) into a temporary
    folder beside ``out``, published whole at the end (features.atomic); then the feature manifest
    beside it (OUT_STEM.manifest.json) and rejected rows (``rejects_dir``, default ``rejects/``
    beside out). ``out`` must be on storage the workers and the client share. ``mapping``: file and
    column names that differ from the contract. Returns a summary.
    """
    started = time.perf_counter()
    out = Path(out).resolve()
    threshold = config.reject_threshold if reject_threshold is None else reject_threshold
    drop = ["cutoff"] if labels else []
    with atomic.publishing(out, directory=True) as tmp, cluster(scheduler) as client:
        cs = load_source_dask(source, client, buckets=buckets, reject_threshold=threshold, with_fingerprint=False,
                              rules=config.export_rules(), mapping=mapping)
        if labels:
            check_label_window(cs, as_of, config.horizon_days)
        config, excluded = resolve_attributes(config, list(cs.attribute_kinds), cs.identifiers)
        futures = features_dask(cs, as_of, config, families=families, labels=labels)
        cs.release_population_inputs()
        meta = client.submit(empty, futures[0]).result().drop(columns=drop)
        rows = client.gather([client.submit(_write_part, f, str(tmp), b, drop) for b, f in enumerate(futures)])
    manifest = manifest_for(meta, config, families)
    manifest_file = manifest.save(out.with_name(out.name.removesuffix(".parquet") + ".manifest.json"))
    written = write_rejects(cs.rejects, rejects_dir if rejects_dir is not None else out.parent / "rejects")
    return {
        "output": str(out),
        "manifest": str(manifest_file),
        "rows": int(sum(rows)),
        "features": len(manifest.features),
        "customers_in": int(cs.summary.loc[cs.summary["table"] == "customers", "rows_in"].iloc[0]),
        "tables": cs.summary.to_dict("records"),
        "rejects": [str(p) for p in written],
        "parts": cs.buckets,
        "notes": cs.notes,
        "excluded_attributes": excluded,
        "seconds": round(time.perf_counter() - started, 3),
    }
