"""The chunked scorer's population step: the population-wide families fed from the run's work files.

features.population.PopulationFeatures does the computing; this step only moves rows to it, in its
order, without ever holding a whole table: the referrals (read and checked whole: they are small),
each customer bucket's customers and the transactions of referred customers (saved by the customer
step), each profile bucket's latest snapshots, then the interactions in batches, each checked against
the profiles it mentions before it is added. Each owned profile's values then travel with its owner
to the owner's bucket (files), where the families sum them per customer. Every bucket's frames are
saved to ctx.population_path(bucket), so a worker later holds only its chunk's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.build import select_families
from features.ingest.contract import check_table, parsed_ids
from features.ingest.id_sets import IdSet
from features.ingest.partition import BucketWriter, bucket_of, count_rows, iter_batches, read_arrow
from features.ingest.rejects import checked_part, write_part
from features.ingest.source import read_table
from features.population import (
    SOCIAL_GRAPH_FAMILIES,
    EndCodes,
    PopulationFeatures,
    precomputed,
    split_by_bucket,
)
from serving.scoring.buckets import known_customers
from serving.scoring.memory import release_freed_memory
from serving.scoring.model import ScoringModel
from serving.scoring.runner import Pending

INTERACTION_BATCH_ROWS = 1_000_000  # a batch's check holds a few hundred bytes a row, for a moment
# The interaction graph's transition matrix is built in groups of rows of this many profiles, from
# edges that wait in files until then (features.families.interaction_sums).
GRAPH_GROUP_PROFILES = 1_000_000


def compute_population(run, source: dict[str, Path], as_of: pd.Timestamp, model: ScoringModel,
                       summaries: Pending | None = None) -> None:
    """The model's population-wide families over every bucket of ``run`` (serving.scoring.chunked._Run),
    saved bucket by bucket as build_features' ``precomputed`` frames. ``summaries``: each bucket's
    purchase summary, being written to disk by the workers (for the btyd family)."""
    task = run.bar.task("population features", None)
    names = [f.name for f in select_families(model.families) if f.population_wide]
    graph = any(name in SOCIAL_GRAPH_FAMILIES for name in names)
    streamed = graph and bool(run.profiles) and "social_interactions" in source
    profiles = run.take_profile_set() if streamed else None
    groups = -(-len(profiles) // GRAPH_GROUP_PROFILES) if profiles is not None else 1
    population = PopulationFeatures(as_of, model.config, names, profiles=profiles,
                                    interactions="social_interactions" in source, graph_groups=groups,
                                    spill=run.work / "graph")
    parts: list[dict[str, pd.DataFrame]] = [{} for _ in range(run.buckets)]
    if "referral" in names:
        _referrals(run, source, population, parts)
    if streamed:
        codes = [population.add_latest_profiles(read_arrow(run.ctx.latest_path(p)).column("profile_id"))
                 for p in range(run.buckets)]
        _interactions(run, source["social_interactions"], profiles, population)
        del profiles
        release_freed_memory()
        values = population.profile_values()
        release_freed_memory()
        _route_to_owners(run, values, codes)
        del values, codes
        release_freed_memory()
    if "btyd" in names:
        _btyd_fit(run, population, summaries)
    for b in range(run.buckets):
        frames = dict(parts[b])
        frames.update(population.social_frames(_owned_rows(run, b) if streamed else None))
        ordered = {name: frames[name] for name in names if name != "btyd"}  # registry order
        pd.to_pickle(precomputed(ordered, as_of), run.ctx.population_path(b))
    run.bar.done(task)


def _referrals(run, source: dict[str, Path], population: PopulationFeatures,
               parts: list[dict[str, pd.DataFrame]]) -> None:
    """The referral family: referrals checked against every valid customer, then each bucket's
    customers with the transactions of the referred ones; rows split back by bucket."""
    referrals = None
    if "referrals" in source:
        raw = read_table(source["referrals"], run.mapping.renaming("referrals"))
        named = pd.concat([parsed_ids(raw[c]) for c in ("referrer_id", "referred_id") if c in raw])
        res = check_table("referrals", raw, {"customers": known_customers(run.customers, named)}, run.threshold,
                          rules=run.rules)
        run.log.record(write_part(run.work, "referrals", "all", res.rows_in, res.rejects, None))
        referrals = res.typed
        del raw, res, named
    population.add_referrals(referrals)
    if referrals is not None:
        for b, bucket in enumerate(run.customers):
            customers = pd.DataFrame({"customer_id": pd.array(bucket.ids.to_pandas(), dtype="str"),
                                      "signup_date": bucket.signups.view("datetime64[ns]")})
            population.add_customers(customers, pd.read_pickle(run.ctx.referred_path(b)))
    _split(population.referral_frame(), "referral", run.buckets, parts)


def _btyd_fit(run, population: PopulationFeatures, summaries: Pending) -> None:
    """The btyd family's fit on every bucket's buyers (their summaries, saved by the workers), saved
    for score_bucket, which applies it to each bucket's customers (buckets.btyd_rows)."""
    summaries.results()  # every bucket's summary is on disk
    for b in range(run.buckets):
        summary = pd.read_pickle(run.ctx.summary_path(b))
        population.add_purchase_summary(summary.loc[summary["buyer"].to_numpy()])
    pd.to_pickle(population.btyd_fit(), run.ctx.btyd_fit_path())


def _split(frame: pd.DataFrame, family: str, buckets: int, parts: list[dict[str, pd.DataFrame]]) -> None:
    for b, piece in enumerate(split_by_bucket(frame, buckets)):
        parts[b][family] = piece


def _interactions(run, path: Path, profiles: IdSet, population: PopulationFeatures) -> None:
    """The interactions checked batch by batch against the profiles each batch mentions (so a batch
    costs time in proportion to its own rows), added, and dropped. Each batch's ids are looked up
    in the profile set once (EndCodes): the contract's reference check and the sums share it."""
    # Parquet footers give the row count for early stops; a CSV is judged once it has been read.
    total = count_rows(path) if path.is_dir() or path.name.endswith(".parquet") else None
    run.log.rows_in["social_interactions"] += 0  # listed even when the table has no rows
    offset = 0
    batches = iter_batches(path, table="social_interactions", batch_rows=INTERACTION_BATCH_ROWS,
                           renaming=run.mapping.renaming("social_interactions"))
    for part, batch in enumerate(batches):
        raw = batch.to_pandas()
        rows = np.arange(offset, offset + len(raw), dtype="int64")
        offset += len(raw)
        codes = EndCodes(profiles, raw)  # every id of the batch looked up once: the check's and the sums'
        res, reject_part = checked_part("social_interactions", raw, {"profiles": codes}, rows, run.work,
                                        f"{part:05d}", run.rules)
        run.log.record(reject_part)
        if total:
            run.log.check_table("social_interactions", total, run.threshold, final=False)
        del raw
        population.add_interactions(res.typed, codes=codes.kept(res.rejects["row"].to_numpy()))
        del res, codes
        release_freed_memory()
    run.log.check_table("social_interactions", offset, run.threshold, final=True)


def _route_to_owners(run, values: dict[str, np.ndarray], codes: list[np.ndarray]) -> None:
    """Every owned profile's values (taken by its code), owner and latest engagements and followers,
    written to the owner's bucket (ctx.owned_path), one profile bucket at a time."""
    for p, profile_codes in enumerate(codes):
        latest = read_arrow(run.ctx.latest_path(p))
        owned = latest.column("customer_id").is_valid().to_numpy(zero_copy_only=False)
        if not owned.any():
            continue
        taken = profile_codes[owned]
        mask = pa.array(owned)
        columns = {"customer_id": latest.column("customer_id").filter(mask),
                   "engagements": latest.column("engagements").filter(mask),
                   "followers": latest.column("followers").filter(mask)}
        columns.update({name: pa.array(v[taken]) for name, v in values.items()})
        table = pa.table(columns)
        writer = BucketWriter(lambda b, p=p: run.ctx.owned_path(p, b), table.schema)
        try:
            writer.write(table, bucket_of(table.column("customer_id").to_pandas(), run.buckets), run.buckets)
        finally:
            writer.close()


def _owned_rows(run, b: int) -> pd.DataFrame | None:
    """The owned profiles routed to bucket b (their files are deleted once read)."""
    paths = [run.ctx.owned_path(p, b) for p in range(run.buckets)]
    tables = [read_arrow(path) for path in paths if path.exists()]
    for path in paths:
        path.unlink(missing_ok=True)
    return pa.concat_tables(tables).to_pandas() if tables else None
