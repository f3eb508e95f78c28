"""Feature build speed and memory on a synthetic world: wall time and peak RSS per family and total.

    .venv/bin/python benchmarks/bench_features.py                       # 1M customers, generated
    .venv/bin/python benchmarks/bench_features.py --customers 100000 --data /tmp/w100k

With --data DIR an existing world in DIR is reused (and generated there first if DIR has none).
Goal (docs/performance.md, ## Features; issue 22): all families at 1M customers in <= 30 s, <= 6 GB peak RSS.
After the build the same run times a reference, a DuckDB aggregate of the same transactions (duckdb
is a dev dependency; --no-reference skips it), and prints the history family's ratio to it and the
total's ratio to the 30 s limit, so runs on a loaded machine can still be compared.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
from page_faults import Usage, describe_first_touch

from features.build import FAMILY_NAMES, build_features
from features.config import FeatureConfig
from features.tables import TABLE_NAMES, Tables

GB = 1024**3


class PeakRSS:
    """Samples this process's resident memory in a background thread (no tracemalloc overhead)."""

    def __init__(self, interval: float = 0.02):
        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.window_peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self):
        rss = self.process.memory_info().rss
        self.peak = max(self.peak, rss)
        self.window_peak = max(self.window_peak, rss)

    def take_window(self) -> int:
        """Peak RSS since the previous call (then starts a new window)."""
        self._sample()
        peak, self.window_peak = self.window_peak, self.process.memory_info().rss
        return peak

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def ensure_world(data: Path | None, customers: int, seed: int) -> Path:
    if data is not None and (data / "customers.parquet").exists():
        return data
    from features.synthetic.world import generate_world

    out = data or Path(tempfile.mkdtemp(prefix=f"clv-world-{customers}-"))
    print(f"generating a world of {customers:,} customers into {out} ...", flush=True)
    info = generate_world(out, n_customers=customers, seed=seed)
    print(f"  generated in {info['seconds']:.1f} s: "
          + ", ".join(f"{k} {v:,}" for k, v in info["rows"].items()), flush=True)
    return out


def load_tables(data: Path, direct: bool) -> Tables:
    try:
        from features.ingest.source import load_source
    except ImportError:
        load_source = None
    if load_source is not None and not direct:
        return load_source(data).tables
    frames = {}
    for name in TABLE_NAMES:
        path = data / f"{name}.parquet"
        frames[name] = pd.read_parquet(path) if path.exists() else None
    for name, frame in frames.items():
        if frame is not None:
            for column in frame.columns:
                if pd.api.types.is_datetime64_any_dtype(frame[column]):
                    frame[column] = frame[column].astype("datetime64[ns]")
    return Tables(**frames)


# The reference for the history family (issue 22): DuckDB computes order-level recency, frequency,
# net spend over 30/90/180/365 days and order-value statistics per customer from the same
# transactions, Parquet read included. Its time moves with the machine's load as ours does, so the
# ratio of the history family to it is comparable across runs on a shared machine.
REFERENCE_SQL = """
WITH tx AS (
    SELECT customer_id, order_id, "timestamp" AS ts, amount
    FROM read_parquet('{path}') WHERE "timestamp" < TIMESTAMP '{as_of}'
),
orders AS (
    SELECT customer_id, order_id, min(ts) AS ts, sum(amount) AS value
    FROM tx WHERE amount > 0 GROUP BY customer_id, order_id
),
per_order AS (
    SELECT customer_id, count(*) AS order_count,
           date_diff('second', max(ts), TIMESTAMP '{as_of}') / 86400.0 AS days_since_last_order,
           date_diff('second', min(ts), TIMESTAMP '{as_of}') / 86400.0 AS days_since_first_order,
           avg(value) AS order_value_mean, median(value) AS order_value_median,
           max(value) AS order_value_max
    FROM orders GROUP BY customer_id
),
windows AS (
    SELECT customer_id, sum(amount) AS net_spend_total,
           sum(amount) FILTER (WHERE ts >= TIMESTAMP '{as_of}' - INTERVAL 30 DAY) AS spend_30d,
           sum(amount) FILTER (WHERE ts >= TIMESTAMP '{as_of}' - INTERVAL 90 DAY) AS spend_90d,
           sum(amount) FILTER (WHERE ts >= TIMESTAMP '{as_of}' - INTERVAL 180 DAY) AS spend_180d,
           sum(amount) FILTER (WHERE ts >= TIMESTAMP '{as_of}' - INTERVAL 365 DAY) AS spend_365d
    FROM tx GROUP BY customer_id
)
SELECT * FROM windows FULL OUTER JOIN per_order USING (customer_id)
"""
LIMIT_SECONDS = 30.0  # all families at 1M customers (docs/performance.md, ## Features)


def reference_seconds(data: Path, as_of: str, threads: int) -> tuple[float, int] | None:
    """Wall seconds of the DuckDB reference aggregate (Parquet read included) and its row count;
    None when duckdb is not installed (it is a dev dependency)."""
    try:
        import duckdb
    except ImportError:
        return None
    query = REFERENCE_SQL.format(path=str(data / "transactions.parquet").replace("'", "''"),
                                 as_of=pd.Timestamp(as_of).strftime("%Y-%m-%d %H:%M:%S"))
    start = time.perf_counter()
    with duckdb.connect() as con:
        con.execute(f"SET threads TO {int(threads)}")
        relation = con.sql(query)
        table = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
    return time.perf_counter() - start, table.num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=None, help="world directory (reused or made)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--as-of", default="2026-01-01", help="cutoff (default: after all data)")
    parser.add_argument("--families", nargs="*", default=None, choices=FAMILY_NAMES)
    parser.add_argument("--direct", action="store_true",
                        help="read the Parquet files directly instead of features.ingest.source.load_source")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the DuckDB reference aggregate (run after the build, same process)")
    args = parser.parse_args(argv)

    data = ensure_world(args.data, args.customers, args.seed)
    config = FeatureConfig(market_topics=("outdoor", "hiking", "climbing", "camping"))
    print(describe_first_touch(), flush=True)
    with PeakRSS() as memory:
        start = time.perf_counter()
        tables = load_tables(data, args.direct)
        load_s = time.perf_counter() - start
        after_load = memory.take_window()
        rows = {name: len(frame) for name, frame in tables.items()}
        print(f"loaded {data} in {load_s:.1f} s (peak RSS {after_load / GB:.2f} GB): "
              + ", ".join(f"{k} {v:,}" for k, v in rows.items()), flush=True)

        timings = []
        # CPU seconds (all threads of this process) beside wall time: on a shared machine the
        # wall time says as much about the neighbours as about the code.
        cpu_mark = [time.process_time()]

        def on_family(name: str, seconds: float) -> None:
            peak = memory.take_window()
            cpu = time.process_time() - cpu_mark[0]
            cpu_mark[0] = time.process_time()
            timings.append({"family": name, "seconds": round(seconds, 2), "cpu_seconds":
                            round(cpu, 2), "peak_rss_gb": round(peak / GB, 2)})
            print(f"  {name:<12} {seconds:7.2f} s  cpu {cpu:7.2f} s   peak RSS {peak / GB:5.2f} GB",
                  flush=True)

        start, cpu_start, usage = time.perf_counter(), time.process_time(), Usage.now()
        features = build_features(tables, pd.Timestamp(args.as_of), config, families=args.families,
                                  on_family=on_family)
        total_s, total_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        usage = Usage.now().since(usage)
    figures = {
        "customers": rows.get("customers"), "transactions": rows.get("transactions"),
        "rows_out": len(features), "columns_out": features.shape[1], "load_seconds": round(load_s, 1),
        "build_seconds": round(total_s, 1), "build_cpu_seconds": round(total_cpu, 1),
        "peak_rss_gb": round(memory.peak / GB, 2), "families": timings, "as_of": args.as_of,
        "cpus": psutil.cpu_count(), "load_average": [round(x, 1) for x in psutil.getloadavg()],
        "build_system_seconds": round(usage.system, 1), "build_minor_page_faults": usage.minor_faults,
    }
    print(f"  {'total':<12} {total_s:7.2f} s  cpu {total_cpu:7.2f} s   peak RSS "
          f"{memory.peak / GB:5.2f} GB ({len(features):,} rows x {features.shape[1]} features); "
          f"load average {figures['load_average']}")
    print(f"  {'':<12} build: {usage.describe()}")
    if args.reference:
        # After the build, so its memory is not counted in the features' peak.
        reference = reference_seconds(data, args.as_of, psutil.cpu_count() or 1)
        history_s = next((t["seconds"] for t in timings if t["family"] == "history"), None)
        if reference is None:
            print("  reference: duckdb is not installed (pip install duckdb), no ratio")
        else:
            seconds, n_rows = reference
            figures["reference_seconds"] = round(seconds, 2)
            line = (f"  reference: DuckDB history aggregate (Parquet read included, {n_rows:,} "
                    f"customers) {seconds:.2f} s")
            if history_s is not None and seconds > 0:
                figures["history_to_reference"] = round(history_s / seconds, 2)
                line += f"; history / reference = {history_s / seconds:.2f}"
            print(line)
        figures["total_to_limit"] = round(total_s / LIMIT_SECONDS, 2)
        print(f"  total / {LIMIT_SECONDS:.0f} s limit = {total_s / LIMIT_SECONDS:.2f} "
              f"(load average {[round(x, 1) for x in psutil.getloadavg()]})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
