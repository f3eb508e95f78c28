"""The chunked scorer's population step: the population-wide families fed from the run's work files.

features.population.PopulationFeatures does the computing; this step only moves rows to it, in its
order, without ever holding a whole table. It is in two parts. The worker processes take the
referral family and the btyd fit (start_worker_families, serving.scoring.population_tasks: the
referrals, read and checked whole as they are small, with each customer bucket's customers and the
transactions of referred customers; every bucket's purchase summary), queued before the chunks' own
families. Meanwhile this process does the social graph (compute_population): each profile bucket's
latest snapshots, then the interactions in batches, each checked against the profiles it mentions
before it is added. Each owned profile's values then travel with its owner to the owner's bucket
(files), where the families sum them per customer. Every bucket's frames (the graph's and the
referral family's) are saved to ctx.population_path(bucket), so a worker later holds only its
chunk's; the btyd fit is applied to each chunk when it is scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.build import select_families
from features.ingest.id_sets import IdSet
from features.ingest.partition import BucketWriter, bucket_of, count_rows, iter_batches, read_arrow
from features.ingest.rejects import checked_part
from features.population import SOCIAL_GRAPH_FAMILIES, EndCodes, PopulationFeatures, precomputed
from serving.scoring.buckets import purchase_summary_bucket
from serving.scoring.memory import release_freed_memory
from serving.scoring.model import ScoringModel
from serving.scoring.population_tasks import btyd_fit_task, referral_task
from serving.scoring.runner import BucketRunner, Pending

INTERACTION_BATCH_ROWS = 1_000_000  # a batch's check holds a few hundred bytes a row, for a moment
# The interaction graph's transition matrix is built in groups of rows of this many profiles, from
# edges that wait in files until then (features.families.interaction_sums).
GRAPH_GROUP_PROFILES = 1_000_000


def start_worker_families(run, runner: BucketRunner, source: dict[str, Path], as_of: pd.Timestamp,
                          model: ScoringModel) -> WorkerFamilies:
    """Start the population-wide families the workers compute (serving.scoring.population_tasks):
    the referral family at once, the btyd fit once every bucket's purchase summary (started here
    too) is on disk. Started before the chunks' own families, so they are not queued behind them."""
    names = population_families(model)
    referral = btyd = None
    if "referral" in names:
        if "referrals" in source:  # the table keeps its place in the summary: before the interactions
            run.log.rows_in["referrals"] += 0
        referral = runner.start(referral_task, run.ctx, as_of, model.config, source.get("referrals"),
                                run.mapping.renaming("referrals"), run.threshold)
    if "btyd" in names:
        summaries = runner.submit(purchase_summary_bucket, run.buckets, run.ctx, as_of)
        btyd = runner.after(summaries, btyd_fit_task, run.ctx, as_of, model.config)
    return WorkerFamilies(referral, btyd)


class WorkerFamilies:
    """The worker tasks of the population step: the referral family (its rows by bucket, its rejects)
    and the btyd fit (ctx.btyd_fit_path)."""

    def __init__(self, referral: Pending | None, btyd: Pending | None):
        self.referral, self.btyd = referral, btyd

    def record_referrals(self, run) -> None:
        """Wait for the referral family; its rejects recorded (its contract error raised) here."""
        if self.referral is not None:
            part = self.referral.results()[0]
            if part is not None:
                run.log.record(part)

    def raise_failed(self, run) -> None:
        """Raise the referral family's error if it has failed by now: the run stops as soon as the
        error is known, not after the interaction pass."""
        if self.referral is not None and self.referral.failed():
            self.record_referrals(run)

    def referral_rows(self, run, b: int) -> dict[str, pd.DataFrame]:
        """The referral family's rows of bucket b (their file is deleted once read)."""
        if self.referral is None:
            return {}
        path = run.ctx.referral_path(b)
        frame = pd.read_pickle(path)
        path.unlink()
        return {"referral": frame}

    def wait(self) -> None:
        """Wait for the btyd fit (score_bucket reads it)."""
        if self.btyd is not None:
            self.btyd.results()


def population_families(model: ScoringModel) -> list[str]:
    """The model's population-wide families, in registry order."""
    return [f.name for f in select_families(model.families) if f.population_wide]


def compute_population(run, source: dict[str, Path], as_of: pd.Timestamp, model: ScoringModel,
                       workers: WorkerFamilies) -> None:
    """The model's population-wide families over every bucket of ``run`` (serving.scoring.chunked._Run),
    saved bucket by bucket as build_features' ``precomputed`` frames: the social graph's here, the
    referral family's from ``workers`` (start_worker_families; the btyd fit is left to them)."""
    task = run.bar.task("population features", None)
    names = population_families(model)
    graph = [name for name in names if name in SOCIAL_GRAPH_FAMILIES]
    streamed = bool(graph) and bool(run.profiles) and "social_interactions" in source
    profiles = run.take_profile_set() if streamed else None
    groups = -(-len(profiles) // GRAPH_GROUP_PROFILES) if profiles is not None else 1
    population = PopulationFeatures(as_of, model.config, graph, profiles=profiles,
                                    interactions="social_interactions" in source, graph_groups=groups,
                                    spill=run.work / "graph")
    try:
        if streamed:
            codes = [population.add_latest_profiles(read_arrow(run.ctx.latest_path(p)).column("profile_id"))
                     for p in range(run.buckets)]
            _interactions(run, source["social_interactions"], profiles, population,
                          lambda: workers.raise_failed(run))
            del profiles
            release_freed_memory()
            values = population.profile_values()
            release_freed_memory()
            _route_to_owners(run, values, codes)
            del values, codes
            release_freed_memory()
    except Exception:
        workers.record_referrals(run)  # the referrals are checked first: their error comes first
        raise
    workers.record_referrals(run)
    for b in range(run.buckets):
        frames = workers.referral_rows(run, b)
        frames.update(population.social_frames(_owned_rows(run, b) if streamed else None))
        ordered = {name: frames[name] for name in names if name != "btyd"}  # registry order
        pd.to_pickle(precomputed(ordered, as_of), run.ctx.population_path(b))
    run.bar.done(task)


def _interactions(run, path: Path, profiles: IdSet, population: PopulationFeatures, check=None) -> None:
    """The interactions checked batch by batch against the profiles each batch mentions (so a batch
    costs time in proportion to its own rows), added, and dropped. Each batch's ids are looked up
    in the profile set once (EndCodes): the contract's reference check and the sums share it.
    ``check()`` runs after every batch (it stops the run on an error found meanwhile elsewhere)."""
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
        if check is not None:
            check()
    run.log.check_table("social_interactions", offset, run.threshold, final=True)


def _route_to_owners(run, values: dict[str, np.ndarray], codes: list[np.ndarray]) -> None:
    """Every owned profile's values (taken by its code), owner and latest engagements and followers,
    written to the owner's bucket (ctx.owned_path), one profile bucket at a time."""
    for p, profile_codes in enumerate(codes):
        latest = read_arrow(run.ctx.latest_path(p))
        run.ctx.latest_path(p).unlink()  # its last reader: the pages are freed now, not when the run ends
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
