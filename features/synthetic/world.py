"""Synthetic CLV world: a buy-till-you-die customer base with a social layer, written as contract tables.

The world exists to develop and test the pipeline against a known truth (ground_truth.parquet). Social
influence acts ONLY through topical engagement (engagement received x share of content on the market
topics): it raises a customer's own purchase rate and the referrals they make, by the two influence
knobs. Reach and the vendor influence score have no direct effect. See docs/synthetic-world.md.

This module runs the phases in order; what each computes lives beside it: ``knobs`` (WorldKnobs and
the constants), ``timeline`` (calendar and season), ``customers`` (latent state, referrals),
``social`` (profiles, snapshots, interactions), ``purchases`` (orders, refunds, expected value),
``columns`` and ``files`` (Arrow columns, schemas, Parquet files published whole).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features import atomic
from features.synthetic.columns import (
    category_column,
    format_ids,
    take_ids,
    text_column,
    ts_column,
    ts_column_or_null,
)
from features.synthetic.customers import draw_customer_chunk, link_referrals
from features.synthetic.files import (
    SCHEMAS,
    WORLD_JSON,
    ParquetRowGroups,
    publishing_parquet,
    remove_stale_temporaries,
)
from features.synthetic.knobs import (
    ACQUISITION_CHANNELS,
    CATEGORIES,
    CATEGORY_PRICE,
    CHANNELS,
    NETWORKS,
    PREFERRED_CATEGORY_SHARE,
    REFERRED_DROPOUT_FACTOR,
    REGIONS,
    WINDOW_DAYS,
    YEAR_DAYS,
    WorldKnobs,
)
from features.synthetic.purchases import expected_value, simulate_chunk
from features.synthetic.social import (
    draw_profiles,
    interaction_chunk,
    interaction_targets,
    snapshot_chunk,
    topical_engagement,
)
from features.synthetic.timeline import build_calendar

__all__ = ["CHUNK_SIZE", "PROFILE_CHUNK_SIZE", "WorldKnobs", "generate_world"]

# Customers per chunk (one Parquet row group each) and profiles per snapshot/interaction chunk. Fixed
# constants, so the same seed gives byte-identical files on any machine.
CHUNK_SIZE = 100_000
PROFILE_CHUNK_SIZE = 200_000


@contextmanager
def _progress_bar(enabled: bool):
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bar:
        yield bar


def _chunks(n: int, size: int):
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def generate_world(
    out_dir,
    *,
    n_customers: int = 50_000,
    seed: int = 0,
    end_date: str = "2025-12-31",
    years: int = 5,
    knobs: WorldKnobs | None = None,
    progress: bool = False,
) -> dict:
    """Generate a synthetic world into out_dir (contract tables + ground truth + world.json).

    Same arguments => byte-identical files. Returns {"out_dir", "seconds", "rows": {table: n}}.
    """
    started = time.perf_counter()
    if n_customers < 1:
        raise ValueError("n_customers must be >= 1")
    if years < 2:
        raise ValueError(
            "years must be >= 2 (the last-year truth needs a year of history before it)"
        )
    knobs = knobs if knobs is not None else WorldKnobs()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    cal = build_calendar(end_date, years, knobs.acquisition_growth)
    s_customers, s_social, s_referrals, s_snapshots, s_interactions, s_transactions = (
        np.random.SeedSequence(seed).spawn(6)
    )
    customer_chunks = _chunks(n_customers, CHUNK_SIZE)

    with _progress_bar(progress) as bar, ExitStack() as stack:

        def task(name, total):
            return bar.add_task(name, total=total) if bar is not None else None

        def advance(t):
            if bar is not None:
                bar.advance(t)

        writers: dict[str, ParquetRowGroups] = {}
        encoder = stack.enter_context(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet")
        )

        def open_writer(name):
            # Published on leaving the with block without error, removed on error.
            path = out / f"{name}.parquet"
            w = stack.enter_context(publishing_parquet(path, SCHEMAS[name], encoder))
            writers[name] = w
            return w

        # 1. Customers' latent state, chunk by chunk.
        t_cust = task("customers", len(customer_chunks))
        parts = []
        for (lo, hi), ss in zip(customer_chunks, s_customers.spawn(len(customer_chunks))):
            parts.append(draw_customer_chunk(np.random.default_rng(ss), hi - lo, cal, knobs))
            advance(t_cust)
        cust = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        del parts

        # 2. Social profiles and each customer's topical engagement (the only channel of influence).
        prof = draw_profiles(np.random.default_rng(s_social), cust, cal, knobs, n_customers)
        n_profiles = len(prof["owner"])
        te = topical_engagement(prof, n_customers)
        cust["topical_engagement"] = te
        cust["is_celebrity"] = np.zeros(n_customers, dtype=bool)
        cust["is_celebrity"][prof["owner"][prof["celeb"] & (prof["owner"] >= 0)]] = True
        cust["rate"] = cust["base_rate"] * (1 + knobs.influence_on_purchases * te)
        cust["referral_weight"] = (
            cust["referral_base"]
            * (1 + knobs.influence_on_referrals * te)
            * np.where(cust["offline"], knobs.offline_influencer_boost, 1.0)
        )

        # 3. Referrals: referred customers are more loyal; referrers must be alive at the sign-up.
        cust["dropout"] = cust["dropout"] * np.where(
            cust["referral_candidate"], REFERRED_DROPOUT_FACTOR, 1.0
        )
        cust["death"] = cust["t0"] + cust["life_draw"] / cust["dropout"] * YEAR_DAYS
        referrer = link_referrals(
            np.random.default_rng(s_referrals), cust, cust["referral_weight"], cust["death"]
        )
        cust["referrer"] = referrer
        cust["acquisition"] = np.where(
            referrer >= 0, ACQUISITION_CHANNELS.index("referral"), cust["acquisition"]
        )
        cust["referrals_made"] = np.bincount(referrer[referrer >= 0], minlength=n_customers)

        cid_width = max(7, len(str(n_customers)))
        pid_width = max(7, len(str(n_profiles)))
        customer_ids = format_ids("C", np.arange(1, n_customers + 1), cid_width)
        profile_ids = format_ids("P", np.arange(1, n_profiles + 1), pid_width)

        w = open_writer("referrals")
        referred = np.flatnonzero(referrer >= 0)
        referred = referred[np.lexsort((referred, np.floor(cust["t0"][referred])))]
        w.write(
            {
                "referrer_id": customer_ids.take(pa.array(referrer[referred])),
                "referred_id": customer_ids.take(pa.array(referred)),
                "timestamp": ts_column(cal.to_ns(np.floor(cust["t0"][referred]))),
            }
        )

        w = open_writer("ground_truth_profiles")
        w.write(
            {
                "profile_id": profile_ids,
                "customer_id": take_ids(customer_ids, prof["owner"]),
                "network": text_column(prof["network"], NETWORKS),
                "is_celebrity": pa.array(prof["celeb"]),
                "topical_share": pa.array(prof["topical_share"]),
                "engagement_rate": pa.array(prof["engagement_rate"]),
                "created_date": ts_column(cal.to_ns(np.floor(prof["created"]))),
            }
        )

        # 4. Social snapshots and interactions, in fixed-size profile chunks.
        profile_chunks = _chunks(n_profiles, PROFILE_CHUNK_SIZE)
        t_social = task("social", 2 * len(profile_chunks))
        w = open_writer("social_profiles")
        for (lo, hi), ss in zip(profile_chunks, s_snapshots.spawn(len(profile_chunks))):
            w.write(
                snapshot_chunk(
                    np.random.default_rng(ss), prof, lo, hi, cal, profile_ids, customer_ids
                )
            )
            advance(t_social)
        targets = interaction_targets(prof)
        w = open_writer("social_interactions")
        for (lo, hi), ss in zip(profile_chunks, s_interactions.spawn(len(profile_chunks))):
            w.write(
                interaction_chunk(
                    np.random.default_rng(ss), prof, lo, hi, targets, cal, knobs, profile_ids
                )
            )
            advance(t_social)
        del targets

        # 5. Customers, transactions and ground truth, chunk by chunk.
        t_tx = task("transactions", len(customer_chunks))
        w_cust, w_tx, w_truth = (
            open_writer("customers"),
            open_writer("transactions"),
            open_writer("ground_truth"),
        )
        order_offset = 0
        last = cal.h_end - WINDOW_DAYS
        for (lo, hi), ss in zip(customer_chunks, s_transactions.spawn(len(customer_chunks))):
            c = {k: v[lo:hi] for k, v in cust.items()}
            ids = customer_ids.slice(lo, hi - lo)
            history, truth = simulate_chunk(np.random.default_rng(ss), c, cal, knobs)
            w_cust.write(
                {
                    "customer_id": ids,
                    "signup_date": ts_column(cal.to_ns(np.floor(c["t0"]))),
                    "region": category_column(c["region"], REGIONS),
                    "acquisition_channel": category_column(c["acquisition"], ACQUISITION_CHANNELS),
                    "age": pa.array(c["age"]),
                }
            )
            w_tx.write(
                {
                    "customer_id": ids.take(pa.array(history["cust"])),
                    "timestamp": ts_column(history["ns"]),
                    "amount": pa.array(history["amount"]),
                    "order_id": format_ids("O", order_offset + history["order_number"] + 1, 10),
                    "quantity": pa.array(history["quantity"]),
                    "category": text_column(history["category"], CATEGORIES),
                    "channel": text_column(history["channel"], CHANNELS),
                    "margin": pa.array(history["margin"]),
                }
            )
            order_offset += history["n_orders"]

            alive_end = c["death"] > cal.h_end
            alive_last = (c["death"] > last) & (c["t0"] < last)
            expected = (
                expected_value(cal, cal.h_end, knobs.refund_rate, c, alive_end) + truth["pending"]
            )
            expected_last = (
                expected_value(cal, last, knobs.refund_rate, c, alive_last) + truth["pending_last"]
            )
            signed_before_last = c["t0"] < last
            churn_in_reach = c["death"] < cal.h_end + WINDOW_DAYS
            mix_price = PREFERRED_CATEGORY_SHARE * CATEGORY_PRICE + (1 - PREFERRED_CATEGORY_SHARE)
            w_truth.write(
                {
                    "customer_id": ids,
                    "expected_value_next_year": pa.array(expected),
                    "realised_value_next_year": pa.array(np.round(truth["realised"], 2)),
                    "expected_value_last_year": pa.array(
                        np.where(signed_before_last, expected_last, np.nan)
                    ),
                    "realised_value_last_year": pa.array(
                        np.where(signed_before_last, np.round(truth["realised_last"], 2), np.nan)
                    ),
                    "alive_at_end": pa.array(alive_end),
                    "purchase_rate": pa.array(c["rate"]),
                    "base_purchase_rate": pa.array(c["base_rate"]),
                    "dropout_rate": pa.array(c["dropout"]),
                    "churn_date": ts_column_or_null(
                        cal.to_ns(np.where(churn_in_reach, c["death"], 0.0)), churn_in_reach
                    ),
                    "mean_order_value": pa.array(c["spend"] * mix_price[c["pref_category"]]),
                    "topical_engagement": pa.array(c["topical_engagement"]),
                    "has_social_profile": pa.array(c["n_networks"] > 0),
                    "is_celebrity": pa.array(c["is_celebrity"]),
                    "is_offline_influencer": pa.array(c["offline"]),
                    "was_referred": pa.array(c["referrer"] >= 0),
                    "referral_propensity": pa.array(c["referral_weight"]),
                    "referrals_made": pa.array(c["referrals_made"].astype(np.int64)),
                }
            )
            advance(t_tx)

        # Every file is finished before the first is renamed into place (leaving the with block).
        for name in SCHEMAS:
            writers[name].close()

    rows = {name: writers[name].rows for name in SCHEMAS}
    world = {
        "seed": seed,
        "n_customers": n_customers,
        "end_date": str(pd.Timestamp(end_date).date()),
        "years": years,
        "history_start": str(cal.start.date()),
        "truth_window": [
            str((cal.start + pd.Timedelta(days=cal.h_end)).date()),
            str((cal.start + pd.Timedelta(days=cal.h_end + WINDOW_DAYS)).date()),
        ],
        "last_year_window": [
            str((cal.start + pd.Timedelta(days=last)).date()),
            str((cal.start + pd.Timedelta(days=cal.h_end)).date()),
        ],
        "market_topics": list(knobs.market_topics),
        "knobs": knobs.to_dict(),
        "chunk_size": CHUNK_SIZE,
        "rows": rows,
    }
    atomic.write_text(out / WORLD_JSON, json.dumps(world, indent=2, sort_keys=True) + "\n")
    return {"out_dir": str(out), "seconds": round(time.perf_counter() - started, 3), "rows": rows}
