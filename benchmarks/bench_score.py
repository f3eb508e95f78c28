"""Batch scoring speed and memory on a generated world (figures for docs/performance.md, ## Scoring).

    .venv/bin/python benchmarks/bench_score.py                                      # 1M customers
    .venv/bin/python benchmarks/bench_score.py --customers 4000000 --no-sweep
    .venv/bin/python benchmarks/bench_score.py --data /tmp/w100k --customers 100000 --workers 1

A world is generated into --data (default: clv-world-<customers> in the temporary directory) on
first use, about 80 s per million customers, and reused after.
The model is a real CustomerValueModel pyfunc (tweedie LightGBM, 300 trees, depth 7 by default)
fitted on a separate 50k-customer world of the same generator, saved beside the world, with an
interval table and a drift reference as a training run serves it (so value_p10/p90 and the drift
counts are computed as in production).

Printed:
1. End to end (``score_customers`` in a fresh subprocess; reasons for the top 10% by default, as
   the goal counts them; MLflow tracking off unless ``--track``: the run is logged after the
   scorer's own clock stops, so with it the wall time minus the scorer's clock is its cost): wall and CPU seconds, customers per second, seconds per stage, and peak
   RSS of the whole process tree (the scorer and its worker processes, sampled every 50 ms).
   Goals (issue 22): 1M customers in <= 60 s on 2 cores; peak memory at 4M customers <= 1.3x
   that at 1M; 4M in <= 4.5x the 1M time.
2. Beside it, a reference measured in the same run, so the ratio holds whatever the machine's
   load: raw LightGBM predict of as many feature rows as were scored (the fitting world's test-year
   features, repeated), and the end-to-end time as a multiple of it and of the 60 s limit.
3. The physical limits on the same features: raw LightGBM predict, the pyfunc predict (signature
   enforcement included) and exact TreeSHAP reasons, in rows per second.
4. Accuracy against reason throughput for several tree depths (out-of-time normalised Gini).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
from page_faults import Usage, describe_first_touch

AS_OF = pd.Timestamp("2026-01-01")  # the generator's default end date + 1 day
TRAIN_CUSTOMERS = 50_000
ROUNDS = 300
LIMIT_SECONDS_PER_MILLION = 60.0  # issue 22: clv score of 1M customers end to end


def ensure_world(data: Path, customers: int, seed: int) -> Path:
    if (data / "customers.parquet").exists():
        return data
    from features.synthetic.world import generate_world

    print(f"generating a world of {customers:,} customers into {data} ...", flush=True)
    info = generate_world(data, n_customers=customers, seed=seed)
    print(f"  {info['seconds']:.0f} s: " + ", ".join(f"{k} {v:,}" for k, v in info["rows"].items()), flush=True)
    return data


def direct_tables(world: Path):
    """The generator writes contract-typed Parquet: read it as is (the scorer validates; this is for fitting)."""
    from features.tables import TABLE_NAMES, Tables

    return Tables(**{t: pd.read_parquet(world / f"{t}.parquet") for t in TABLE_NAMES
                     if (world / f"{t}.parquet").exists()})


def training_frames(world: Path):
    """(train X, train y, test X, test y): features at as_of - 2 years and - 1 year, labels a year after."""
    from features.build import build_features
    from features.config import FeatureConfig
    from features.labels import label_values

    config = FeatureConfig(market_topics=("outdoor",))
    tables = direct_tables(world)
    frames = []
    for years in (2, 1):
        cutoff = AS_OF - pd.Timedelta(days=365 * years)
        frames += [build_features(tables, cutoff, config), label_values(tables, cutoff, config)]
    return config, frames


def fit_model(config, frames, *, max_depth: int, num_leaves: int, rounds: int = ROUNDS):
    """A CustomerValueModel wrapped as training wraps it, and its out-of-time normalised Gini."""
    from features.build import FAMILY_NAMES
    from features.manifest import manifest_for
    from training.config import ModelParams
    from training.intervals import calibrate_intervals
    from training.metrics import norm_gini
    from training.model import CustomerValueModel, FeatureEncoder, make_model
    from training.train import drift_reference

    train_x, train_y, test_x, test_y = frames
    manifest = manifest_for(train_x, config, FAMILY_NAMES)
    encoder = FeatureEncoder.from_manifest(manifest)
    params = ModelParams(max_depth=max_depth, num_leaves=num_leaves, num_threads=2)
    booster = make_model(params, encoder.categorical, seed=0)
    booster.fit(encoder.encode(train_x), train_y.to_numpy(), rounds={"value": rounds})
    model = CustomerValueModel.from_fitted(booster, encoder, manifest_json=manifest.to_json(),
                                           families=dict(manifest.families))
    predicted = model.predict_value(encoder.model_input(test_x)).to_numpy()
    gini = norm_gini(test_y.to_numpy(), predicted)
    # As a training run serves it: an interval table (value_p10/p90) and a drift reference (drift
    # counts per bucket), so the scorer's work on them is in the figures. Calibrated on the test year
    # here (training calibrates on its validation windows); the cost is the same.
    model.interval_table = calibrate_intervals(predicted, test_y.to_numpy())
    model.drift_reference = drift_reference(model, test_x)
    return model, gini


def save_pyfunc(model, example: pd.DataFrame, path: Path) -> str:
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from training.tracking import pip_requirements, quiet_mlflow_warnings

    quiet_mlflow_warnings()
    signature = infer_signature(example, model.predict_value(example))
    mlflow.pyfunc.save_model(str(path), python_model=model, signature=signature, input_example=example.head(3),
                             pip_requirements=pip_requirements())  # as training logs them
    return str(path)


class TreePeak:
    """Peak resident memory of a process and its descendants (sampled in a background thread): of the
    whole tree, of the main process, and of the largest single worker process; and when the tree's
    peak came (seconds after the start) with the main process's and each worker's share of it."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = self.main_peak = self.worker_peak = 0
        self.started = time.perf_counter()
        self.peak_at, self.peak_parts = 0.0, (0, [])
        self.cpu: dict[int, float] = {}  # pid -> its own CPU seconds when last seen (every 50 ms)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self, proc) -> int:
        try:
            return proc.memory_info().rss
        except psutil.NoSuchProcess:
            return 0

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                children = self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for process in [self.root, *children]:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    self.cpu[process.pid] = times.user + times.system
            main = self._rss(self.root)
            workers = [self._rss(child) for child in children]
            if main + sum(workers) > self.peak:
                self.peak = main + sum(workers)
                self.peak_at, self.peak_parts = time.perf_counter() - self.started, (main, sorted(workers))
            self.main_peak = max(self.main_peak, main)
            self.worker_peak = max([self.worker_peak, *workers])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


NESTED_STAGES = ("population_features",)  # timed inside population_and_chunk_features


def peak_stage(at: float, stages: dict[str, float]) -> str:
    """The scorer's stage running ``at`` seconds after its clock started (stages in order, wall s);
    the start-up before the clock (imports) is taken as the wall time the scorer's clock misses."""
    if at < 0:
        return "before the scorer's clock (imports)"
    end = 0.0
    for name, seconds in stages.items():
        if name in NESTED_STAGES:
            continue
        end += seconds
        if at <= end:
            return f"in {name}"
    return "after the last stage"


def end_to_end(world: Path, model_path: str, out: Path, chunk_size: int, workers: int | None,
               reasons_for: str = "top10", track: bool = False) -> dict:
    """score_customers in a fresh process: its summary, wall time, CPU time and peak tree RSS."""
    code = (
        "import json, sys; from serving.scoring.chunked import score_customers; "
        f"s = score_customers({str(world)!r}, out={str(out)!r}, model_uri={model_path!r}, trust_model_from={model_path!r}, "
        f"reasons_for={reasons_for!r}, chunk_size={chunk_size}, workers={workers!r}, progress=False, "
        f"track={track!r}); "
        "print('SUMMARY' + json.dumps(s, default=str))"
    )
    start, usage = time.perf_counter(), Usage.now(children=True)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=out.parent)
    with TreePeak(proc.pid) as peak:
        stdout, _ = proc.communicate()
    wall = time.perf_counter() - start
    # The scorer process and what it waited for (not the workers: the fork server is not waited).
    usage = Usage.now(children=True).since(usage)
    if proc.returncode:
        raise SystemExit(f"scoring failed with exit code {proc.returncode}")
    summary = json.loads(stdout.split("SUMMARY", 1)[1])
    # Every process of the tree as last sampled: the workers' parent is the fork server, which the
    # scorer never waits for, so the scorer's children's times would miss them.
    cpu = sum(peak.cpu.values())
    return {"summary": summary, "wall_s": wall, "cpu_s": cpu, "usage": usage, "peak_tree_rss_gb": peak.peak / 1024**3,
            "peak_tree_at_s": peak.peak_at, "peak_tree_parts_gb": (peak.peak_parts[0] / 1024**3,
                                                                  [w / 1024**3 for w in peak.peak_parts[1]]),
            "peak_main_rss_gb": peak.main_peak / 1024**3, "peak_worker_rss_gb": peak.worker_peak / 1024**3}


def lightgbm_predict(model, encoded: pd.DataFrame) -> None:
    """LightGBM's own predict (``Booster.predict``, raw score) of every booster of the model: the
    reference, whatever predictor the model itself uses (training.tree_predict)."""
    for part, booster in model.boosters.items():
        booster.predict(encoded, raw_score=True, num_iteration=model.rounds[part], validate_features=False)


def raw_predict_seconds(model, frame: pd.DataFrame, rows: int) -> float:
    """Seconds of raw LightGBM predict (the model's boosters, encoded input) over ``rows`` rows of
    ``frame`` repeated: the reference the end-to-end time is set beside."""
    encoded = model.encoder.encode(model.encoder.model_input(frame))
    reps = -(-rows // max(1, len(encoded)))
    big = pd.concat([encoded] * reps, ignore_index=True).iloc[:rows]
    start = time.perf_counter()
    lightgbm_predict(model, big)
    return time.perf_counter() - start


def throughput(model, frame: pd.DataFrame, shap_rows: int) -> dict:
    """Rows per second: raw LightGBM predict, the pyfunc predict, and exact TreeSHAP in currency."""
    import mlflow.pyfunc

    from training.model import predict_value

    encoder = model.encoder
    inputs = encoder.model_input(frame)
    encoded = encoder.encode(inputs)
    start = time.perf_counter()
    lightgbm_predict(model, encoded)
    raw = len(frame) / (time.perf_counter() - start)
    from training.tree_predict import forest_of

    for part, booster in model.boosters.items():  # its arrays, built once per model (in the scorer too)
        forest_of(booster, model.rounds[part])
    start = time.perf_counter()
    predict_value(model.objective, model.boosters, model.rounds, encoded)
    ours = len(frame) / (time.perf_counter() - start)
    start = time.perf_counter()
    encoder.encode(inputs)
    encode = len(frame) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        pyfunc = mlflow.pyfunc.load_model(save_pyfunc(model, inputs.head(200), Path(tmp) / "m"))
        start = time.perf_counter()
        pyfunc.predict(inputs)
        enforced = len(frame) / (time.perf_counter() - start)
    sample = inputs.head(shap_rows)
    model.contributions(sample.head(10))  # the model's SHAP tables, built once per run (in the scorer too)
    start = time.perf_counter()
    model.contributions(sample)
    shap = len(sample) / (time.perf_counter() - start)
    return {"raw_predict": raw, "model_predict": ours, "encode": encode, "pyfunc_predict": enforced, "reasons_shap": shap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="world directory (generated if empty)")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-size", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=None, help="scorer worker processes (default: auto)")
    parser.add_argument("--shap-rows", type=int, default=20_000, help="rows for the TreeSHAP throughput")
    parser.add_argument("--depths", default="3,5,7,10", help="tree depths of the accuracy/reasons sweep")
    parser.add_argument("--no-sweep", action="store_true", help="skip the depth sweep")
    parser.add_argument("--reasons-for", default="top10", choices=("top10", "all", "none"),
                        help="who gets reasons in the end-to-end run (the goal counts the top 10%%)")
    parser.add_argument("--track", action="store_true",
                        help="log the scoring run to MLflow (a sqlite store in a scratch folder)")
    args = parser.parse_args()
    if args.data is None:
        args.data = Path(tempfile.gettempdir()) / f"clv-world-{args.customers}"

    world = ensure_world(args.data, args.customers, args.seed)
    train_world = ensure_world(args.data.parent / f"{args.data.name}-train50k", TRAIN_CUSTOMERS, args.seed + 1)
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs; {describe_first_touch()}", flush=True)

    start = time.perf_counter()
    config, frames = training_frames(train_world)
    model, gini = fit_model(config, frames, max_depth=7, num_leaves=31)
    scratch = tempfile.TemporaryDirectory(prefix="clv-bench-score-")
    model_path = save_pyfunc(model, model.encoder.model_input(frames[2].head(200)), Path(scratch.name) / "model")
    print(f"model: tweedie, {ROUNDS} trees, depth 7, 31 leaves; out-of-time norm. Gini {gini:.3f} "
          f"(fitted in {time.perf_counter() - start:.0f} s)", flush=True)

    try:
        e2e = end_to_end(world, model_path, Path(scratch.name) / "scores.parquet", args.chunk_size, args.workers,
                         args.reasons_for, args.track)
    finally:
        scratch.cleanup()
    s = e2e["summary"]
    load_e2e = os.getloadavg()
    reference = raw_predict_seconds(model, frames[2], s["scored"])
    limit = LIMIT_SECONDS_PER_MILLION * s["customers_in"] / 1_000_000
    print(f"\nend to end {e2e['wall_s']:.1f} s = {e2e['wall_s'] / limit:.2f}x the {limit:.0f} s limit "
          f"({LIMIT_SECONDS_PER_MILLION:.0f} s per million customers); raw LightGBM predict of "
          f"{s['scored']:,} rows of the same features {reference:.1f} s (end to end = {e2e['wall_s'] / reference:.1f}x it); "
          f"load average {load_e2e[0]:.2f} {load_e2e[1]:.2f} {load_e2e[2]:.2f}")
    print(f"\nend to end, {s['customers_in']:,} customers "
          f"({s['scored']:,} scored), {s['chunks']} chunks, {s['workers']} worker(s), "
          f"reasons for {args.reasons_for} ({s['reasons']['rows']:,} rows, {s['reasons']['seconds']:.1f} s), "
          f"MLflow tracking {'on' if args.track else 'off'}:")
    print(f"  wall {e2e['wall_s']:.1f} s (scorer's own clock {s['seconds']:.1f} s), CPU {e2e['cpu_s']:.1f} s, "
          f"{s['scored'] / e2e['wall_s']:,.0f} customers/s, peak RSS (process tree) {e2e['peak_tree_rss_gb']:.2f} GB")
    print(f"  scorer process: {e2e['usage'].describe()}")
    print("  stages, wall s: " + ", ".join(f"{k} {v:.1f}" for k, v in s["stage_seconds"].items()))
    print("  stages, CPU s (scorer and its workers): "
          + ", ".join(f"{k} {v:.1f}" for k, v in s["stage_cpu_seconds"].items()))
    print(f"  peak RSS: main process {e2e['peak_main_rss_gb']:.2f} GB, largest worker process "
          f"{e2e['peak_worker_rss_gb']:.2f} GB")
    print(f"  the tree's peak came {e2e['peak_tree_at_s']:.1f} s after the start, "
          f"{peak_stage(e2e['peak_tree_at_s'] - (e2e['wall_s'] - s['seconds']), s['stage_seconds'])}: main process "
          f"{e2e['peak_tree_parts_gb'][0]:.2f} GB, other processes "
          + ", ".join(f"{w:.2f}" for w in e2e["peak_tree_parts_gb"][1]) + " GB")
    print("  peak RSS of the main process after each stage (MB): "
          + ", ".join(f"{k} {v:,.0f}" for k, v in s["peak_rss_mb_main_process_after_stage"].items()))
    print(f"  in the chunks: features {s['features_seconds']:.1f} s, pyfunc predict {s['predict_seconds']:.1f} s")
    print("  rows: " + ", ".join(f"{t} {v['rows_in']:,}" for t, v in s["tables"].items()))

    sample = pd.concat([frames[2]] * max(1, 200_000 // len(frames[2])))
    rates = throughput(model, sample, args.shap_rows)
    print(f"\nthroughput on the same features ({len(sample):,} rows):")
    print(f"  raw LightGBM predict {rates['raw_predict']:,.0f} rows/s; the model's predict (training.tree_predict, "
          f"the same values) {rates['model_predict']:,.0f} rows/s; encoding {rates['encode']:,.0f} rows/s; "
          f"pyfunc predict (signature enforced) {rates['pyfunc_predict']:,.0f} rows/s")
    print(f"  reasons (exact TreeSHAP, currency split) {rates['reasons_shap']:,.0f} rows/s: "
          f"top 10% of 1M = 100,000 rows in {100_000 / rates['reasons_shap']:.0f} s, "
          f"all 1M in {1_000_000 / rates['reasons_shap']:.0f} s")

    if not args.no_sweep:
        print("\ndepth | leaves | trees | out-of-time norm. Gini | predict rows/s | reasons rows/s")
        for depth in [int(d) for d in args.depths.split(",")]:
            leaves = min(31, 2 ** depth)
            fitted, g = fit_model(config, frames, max_depth=depth, num_leaves=leaves)
            r = throughput(fitted, sample.head(100_000), args.shap_rows)
            print(f"{depth} | {leaves} | {ROUNDS} | {g:.3f} | {r['raw_predict']:,.0f} | {r['reasons_shap']:,.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
