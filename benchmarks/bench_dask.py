"""Scoring on Dask: throughput and peak memory per worker, with 1 and 2 workers, on a generated world.

    .venv/bin/python benchmarks/bench_dask.py --customers 1000000 --data /tmp/w1m
    .venv/bin/python benchmarks/bench_dask.py --customers 5000000 --data /tmp/w5m --workers 2
    .venv/bin/python benchmarks/bench_dask.py --data /tmp/w1m --pandas     # single-machine reference too

The world in --data is reused (generated there first when missing). The model is trained once by
the single-machine pipeline on a small world of the same generator (or pass --model URI with
MLFLOW_TRACKING_URI set). Every case runs on a fresh LocalCluster (one single-threaded worker process
per worker), so each worker's peak RSS (getrusage, read on the worker at the end) is that case's.
Figures go to docs/performance.md, ## Dask.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil

GB = 1024**3


class PeakRSS:
    """This process's peak resident memory, sampled every 50 ms in a background thread."""

    def __init__(self):
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def ensure_world(path: Path, customers: int, seed: int) -> dict:
    from features.synthetic.world import generate_world

    if (path / "world.json").exists():
        return json.loads((path / "world.json").read_text())
    print(f"generating {customers:,} customers into {path} ...", flush=True)
    return generate_world(path, n_customers=customers, seed=seed)


def train_small_model(store: Path, seed: int) -> str:
    """Train and register a model on a 20k-customer world; returns its URI."""
    from features.config import FeatureConfig
    from training.config import ModelParams, TrainConfig
    from training.train import train_run

    world = store / "train-world"
    ensure_world(world, 20_000, seed + 1)
    config = TrainConfig(
        features=FeatureConfig(market_topics=("outdoor", "hiking")),
        model=ModelParams(num_threads=1),
        social_ablation=False,
    )
    config = replace(config, shap_sample=2_000, bootstrap_resamples=50)
    summary = train_run(
        world,
        model_name="bench-dask",
        experiment="bench-dask",
        promote="always",
        config=config,
        progress=False,
    )
    return f"models:/bench-dask/{summary.model_version}"


def _cpu_seconds() -> float:
    """CPU seconds (user + system) this worker process has used."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_case(
    data: Path, out: Path, model_uri: str, workers: int, chunk_size: int, reasons_for: str
) -> dict:
    from features.dask_engine.cluster import cluster
    from serving.scoring.dask_engine import score_customers_dask

    load_before = os.getloadavg()[0]
    with PeakRSS() as client_rss, cluster(None, n_workers=workers, threads_per_worker=1) as client:
        start = time.perf_counter()
        summary = score_customers_dask(
            data,
            out=out,
            model_uri=model_uri,
            chunk_size=chunk_size,
            reasons_for=reasons_for,
            scheduler=client,
        )
        wall = time.perf_counter() - start
        cpu = client.run(_cpu_seconds)
    peaks = sorted(summary["worker_peak_rss_mb"].values())
    return {
        "engine": "dask",
        "reasons_for": reasons_for,
        "workers": workers,
        "partitions": summary["chunks"],
        "customers_in": summary["customers_in"],
        "scored": summary["scored"],
        "wall_s": round(wall, 1),
        "customers_per_s": round(summary["scored"] / wall),
        "stage_s": summary["stage_seconds"],
        "load_s": summary["load_seconds"],
        "worker_peak_rss_gb": [round(p / 1024, 2) for p in peaks],
        "worker_cpu_s": sorted(round(c) for c in cpu.values()),
        "client_peak_rss_gb": round(client_rss.peak / GB, 2),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }


def run_pandas(data: Path, out: Path, model_uri: str, chunk_size: int, reasons_for: str) -> dict:
    from serving.scoring.chunked import score_customers

    load_before = os.getloadavg()[0]
    with PeakRSS() as rss:
        start = time.perf_counter()
        summary = score_customers(
            data,
            out=out,
            model_uri=model_uri,
            chunk_size=chunk_size,
            reasons_for=reasons_for,
            progress=False,
        )
        wall = time.perf_counter() - start
    return {
        "engine": "pandas",
        "reasons_for": reasons_for,
        "workers": 1,
        "partitions": summary["chunks"],
        "customers_in": summary["customers_in"],
        "scored": summary["scored"],
        "wall_s": round(wall, 1),
        "customers_per_s": round(summary["scored"] / wall),
        "stage_s": summary.get("stage_seconds"),
        "peak_rss_gb": round(rss.peak / GB, 2),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--data", type=Path, required=True, help="world directory (generated if missing)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--chunk-size", type=int, default=100_000, help="customers per partition")
    parser.add_argument(
        "--reasons-for",
        default="top10",
        choices=("top10", "all", "none"),
        help="who gets reasons (TreeSHAP is the slowest step: 'none' times scoring alone)",
    )
    parser.add_argument("--model", default=None, help="model URI (default: train a small model)")
    parser.add_argument("--pandas", action="store_true", help="also run the single-machine scorer")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = parser.parse_args()

    world = ensure_world(args.data, args.customers, args.seed)
    print(f"world: {json.dumps(world.get('rows', world.get('n_customers')))}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    if args.model is None:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
        start = time.perf_counter()
        args.model = train_small_model(work, args.seed)
        print(f"trained {args.model} in {time.perf_counter() - start:.0f} s", flush=True)
    results = []
    for workers in [int(w) for w in args.workers.split(",")]:
        result = run_case(
            args.data,
            work / f"scores-{workers}w.parquet",
            args.model,
            workers,
            args.chunk_size,
            args.reasons_for,
        )
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.pandas:
        result = run_pandas(
            args.data, work / "scores-pandas.parquet", args.model, args.chunk_size, args.reasons_for
        )
        print(json.dumps(result), flush=True)
        results.append(result)
    print(f"\n{args.customers:,} customers, {os.cpu_count()} CPUs")
    print(
        "| engine | reasons | workers | partitions | wall s | customers/s | CPU s per worker "
        "| peak RSS per worker GB | client peak GB |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: |")
    for r in results:
        per_worker = ", ".join(map(str, r.get("worker_peak_rss_gb", [r.get("peak_rss_gb")])))
        cpu = ", ".join(map(str, r.get("worker_cpu_s", ["-"])))
        print(
            f"| {r['engine']} | {r['reasons_for']} | {r['workers']} | {r['partitions']} | {r['wall_s']} | "
            f"{r['customers_per_s']:,} | {cpu} | {per_worker} | {r.get('client_peak_rss_gb', '-')} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
