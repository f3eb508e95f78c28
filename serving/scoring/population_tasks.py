"""The population-wide families a worker process computes while the main one does the social graph.

The referral family and the btyd fit read only the run's work files (the customer step's and the
purchase summaries), so they run as tasks of the worker pool (serving.scoring.runner) beside the
main process's interaction pass (serving.scoring.population_step), each with its own family
accumulator (features.population.PopulationFeatures for the referrals, the btyd family's BtydSums
for the fit): the same numbers as one PopulationFeatures fed everything, since each family keeps
its own sums. Like the bucket steps, a task reads its inputs one bucket at a time and leaves its
results in files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.config import FeatureConfig
from features.families.btyd import BtydSums
from features.ingest.contract import check_table, parsed_ids
from features.ingest.mapping import ColumnRenaming
from features.ingest.rejects import RejectPart, write_part
from features.ingest.source import read_table
from features.population import PopulationFeatures, split_by_bucket
from serving.scoring.buckets import ChunkContext, known_customers, valid_customers, valid_ids


def referral_task(ctx: ChunkContext, as_of: pd.Timestamp, config: FeatureConfig, path: Path | None,
                  renaming: ColumnRenaming | None, threshold: float) -> RejectPart | None:
    """The referral family: the referrals table (``path``; None: the source has none) checked whole
    against every valid customer, then each bucket's customers with the transactions of the
    referred ones; its rows saved by bucket (ctx.referral_path). Returns the table's rejects, for
    the main process's RejectLog (None without the table). A contract error stops the run from here."""
    population = PopulationFeatures(as_of, config, ["referral"])
    part = referrals = None
    if path is not None:
        raw = read_table(path, renaming)
        named = pd.concat([parsed_ids(raw[c]) for c in ("referrer_id", "referred_id") if c in raw])
        known = known_customers(lambda b: valid_ids(ctx, b), ctx.buckets, named)
        res = check_table("referrals", raw, {"customers": known}, threshold, rules=ctx.rules)
        part = write_part(ctx.work, "referrals", "all", res.rows_in, res.rejects, None)
        referrals = res.typed
        del raw, res, named, known
    population.add_referrals(referrals)
    if referrals is not None:
        for b in range(ctx.buckets):
            population.add_customers(valid_customers(ctx, b), pd.read_pickle(ctx.referred_path(b)))
            ctx.referred_path(b).unlink()  # read once
    for b, piece in enumerate(split_by_bucket(population.referral_frame(), ctx.buckets)):
        pd.to_pickle(piece, ctx.referral_path(b))
    return part


def btyd_fit_task(ctx: ChunkContext, as_of: pd.Timestamp, config: FeatureConfig) -> None:
    """The btyd family's fit on every bucket's buyers (their summaries, ctx.summary_path: all must be
    written first), saved (ctx.btyd_fit_path) for score_bucket, which applies it to each bucket's
    customers (buckets.btyd_rows)."""
    sums = BtydSums(as_of, fit_only=True)  # as PopulationFeatures.btyd_fit, holding a chunk's worth
    for b in range(ctx.buckets):
        sums.add(pd.read_pickle(ctx.summary_path(b)))
    pd.to_pickle(sums.fitted(config), ctx.btyd_fit_path())
