"""Time the social feature families at production scale on a quick vectorized fake.

~1M profiles, ~5M interactions, ~8M snapshot rows (defaults; --scale shrinks or grows all three).
The fake only has to be the right size and shape (heavy-tailed attention, missing topics,
non-customer profiles); it says nothing about feature quality.

    .venv/bin/python benchmarks/bench_social_families.py [--scale 0.1]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.families.coverage import coverage_features
from features.families.network import network_features
from features.families.social import social_features
from features.families.topical import topical_features
from features.tables import Tables

AS_OF = pd.Timestamp("2024-07-01")
TOPICS = np.array([f"topic_{i}" for i in range(30)] + ["running", "trail", "cycling"], dtype=object)


def ids(prefix: str, n: int) -> pd.Series:
    return pd.Series([f"{prefix}{i:07d}" for i in range(n)], dtype="str")


def fake_tables(n_profiles: int, n_interactions: int, n_snapshots: int, seed: int = 0) -> Tables:
    rng = np.random.default_rng(seed)
    profile_ids = ids("p", n_profiles)
    # 60% of profiles belong to a customer; a tenth of those go to another customer (two profiles).
    n_linked = int(0.6 * n_profiles)
    owner_of_profile = np.arange(n_linked)
    second = rng.random(n_linked) < 0.1
    owner_of_profile[second] = rng.integers(0, n_linked, int(second.sum()))
    customer_ids = ids("c", n_linked)

    # Snapshots: each profile gets ~n_snapshots / n_profiles snapshots over two years.
    snap_profile = rng.integers(0, n_profiles, n_snapshots)
    snap_days = rng.integers(0, 730, n_snapshots)
    followers = np.floor(rng.pareto(1.2, n_profiles) * 100)
    growth = rng.normal(0.0, 0.3, n_snapshots)
    owner = np.where(
        snap_profile < n_linked, owner_of_profile[np.minimum(snap_profile, n_linked - 1)], -1
    )
    customer_col = customer_ids.take(np.maximum(owner, 0)).where(owner >= 0)
    customer_col.index = range(n_snapshots)
    snapshots = pd.DataFrame(
        {
            "profile_id": profile_ids.take(snap_profile).reset_index(drop=True),
            "customer_id": customer_col,
            "network": pd.Series(
                np.array(["instagram", "tiktok", "x"], dtype=object)[snap_profile % 3], dtype="str"
            ),
            "snapshot_date": (
                AS_OF - pd.Timedelta(days=740) + pd.to_timedelta(snap_days, unit="D")
            ).astype("datetime64[ns]"),
            "followers": np.maximum(
                followers[snap_profile] * np.exp(growth * snap_days / 730), 0.0
            ),
            "following": np.floor(rng.pareto(2.0, n_snapshots) * 50),
            "posts": np.floor(rng.pareto(1.5, n_snapshots) * 20),
            "engagements": np.floor(rng.pareto(1.3, n_snapshots) * 10),
            "influence_score": rng.uniform(0, 100, n_snapshots),
        }
    )

    # Interactions: authors uniform, targets heavy-tailed (a few profiles draw most attention).
    source = rng.integers(0, n_profiles, n_interactions)
    target = np.minimum(
        (rng.pareto(1.1, n_interactions) * n_profiles / 50).astype("int64"), n_profiles - 1
    )
    target = rng.permutation(n_profiles)[target]
    topic = pd.Series(TOPICS[rng.integers(0, len(TOPICS), n_interactions)], dtype="str")
    interactions = pd.DataFrame(
        {
            "source_profile_id": profile_ids.take(source).reset_index(drop=True),
            "target_profile_id": profile_ids.take(target).reset_index(drop=True),
            "timestamp": (
                AS_OF - pd.to_timedelta(rng.uniform(0, 900, n_interactions), unit="D")
            ).astype("datetime64[ns]"),
            "kind": pd.Series(
                np.array(["mention", "share", "reply", "like"], dtype=object)[
                    rng.integers(0, 4, n_interactions)
                ],
                dtype="str",
            ),
            "topic": topic.where(rng.random(n_interactions) > 0.1),
        }
    )
    customers = pd.DataFrame(
        {
            "customer_id": customer_ids,
            "signup_date": pd.Series(AS_OF - pd.Timedelta(days=1000), index=range(n_linked)).astype(
                "datetime64[ns]"
            ),
        }
    )
    transactions = pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype="str"),
            "timestamp": pd.Series([], dtype="datetime64[ns]"),
            "amount": pd.Series([], dtype="float64"),
        }
    )
    return Tables(
        customers=customers,
        transactions=transactions,
        social_profiles=snapshots,
        social_interactions=interactions,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    n_profiles, n_interactions, n_snapshots = (
        int(x * args.scale) for x in (1_000_000, 5_000_000, 8_000_000)
    )

    start = time.perf_counter()
    tables = fake_tables(n_profiles, n_interactions, n_snapshots)
    print(
        f"fake data: {n_profiles:,} profiles, {n_interactions:,} interactions, "
        f"{n_snapshots:,} snapshot rows in {time.perf_counter() - start:.1f}s"
    )
    config = FeatureConfig(market_topics=("running", "trail"))
    for name, compute in [
        ("social", social_features),
        ("coverage", coverage_features),
        ("network", network_features),
        ("topical", topical_features),
    ]:
        start, cpu_start = time.perf_counter(), time.process_time()
        out = compute(tables, AS_OF, config)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        print(
            f"{name:9s} {seconds:6.2f}s wall {cpu_seconds:6.2f}s cpu  {len(out):>9,} customers  "
            f"non-NaN {out.notna().mean().round(2).to_dict()}"
        )
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak RSS {peak_gb:.1f} GB")


if __name__ == "__main__":
    main()
