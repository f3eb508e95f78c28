"""Is the default LightGBM setting as good as its neighbours? One grid, judged on the validation window.

Builds a world's windows once (the default plan), then fits the model with each setting of a small
grid around the default and prints each one's normalised Gini on the **validation window** (the
early-stopping window: what a search inside a run could honestly choose by) and, for the record,
on the test window (never used to choose). The evidence for the defaults in docs/evaluation.md.

Example:
    python benchmarks/bench_params.py --data /tmp/q/world_100000_12_5y
    python benchmarks/bench_params.py --data WORLD --as-of 2024-11-01 --horizon-days 91
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import select_families
from features.config import FeatureConfig
from features.ingest.source import load_source
from features.run_request import default_as_of
from training.config import ModelParams, TrainConfig
from training.metrics import norm_gini
from training.pandas_engine import PandasFitter, PandasSource
from training.pipeline import build_windows
from training.plan import plan_windows
from training.progress import Steps

# One change at a time around the default: the landscape, not a fine search.
GRID = {
    "default": {},
    "num_leaves=15": {"num_leaves": 15},
    "num_leaves=63": {"num_leaves": 63, "max_depth": 9},
    "min_child_samples=20": {"min_child_samples": 20},
    "min_child_samples=200": {"min_child_samples": 200},
    "learning_rate=0.05": {"learning_rate": 0.05},
    "feature_fraction=0.6": {"feature_fraction": 0.6},
    "lambda_l2=10": {"lambda_l2": 10.0},
    "tweedie_variance_power=1.3": {"tweedie_variance_power": 1.3},
    "tweedie_variance_power=1.7": {"tweedie_variance_power": 1.7},
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a generated world (benchmarks/bench_quality.py --out)")
    parser.add_argument("--as-of", help="run date (default: the day after the last transaction)")
    parser.add_argument("--horizon-days", type=int, default=365)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    folder = Path(args.data)
    world = json.loads((folder / "world.json").read_text())
    tables = load_source(folder).tables
    as_of = pd.Timestamp(args.as_of) if args.as_of else default_as_of(tables.transactions["timestamp"].max())
    base = TrainConfig(features=FeatureConfig(market_topics=tuple(world["market_topics"]),
                                              horizon_days=args.horizon_days),
                       model=ModelParams(num_threads=args.threads))
    source = PandasSource(tables)
    plan = plan_windows(as_of, base, source.first_transaction())
    windows = build_windows(source, plan, base, steps=Steps(enabled=False))
    present = windows.evaluation.cutoffs()
    validation = windows.evaluation.select([c for c in present if c in set(plan.validation_cutoffs)])
    train = windows.evaluation.select([c for c in present if c not in set(plan.validation_cutoffs)])
    manifest = windows.evaluation.manifest(base.features, select_families())
    test = windows.refit.select([plan.test_cutoff]).frame()
    valid_frame = validation.frame()
    print(f"{folder.name}: {plan.reason}; train {train.rows():,} rows, validation {validation.rows():,}, "
          f"test {len(test):,}")
    print(f"{'setting':<30}{'validation':>12}{'test':>8}{'rounds':>8}{'seconds':>9}")
    figures = {}
    for name, change in GRID.items():
        config = replace(base, model=replace(base.model, **change))
        config = replace(config, model=config.model.for_rows(train.rows()))
        started = time.perf_counter()
        model = PandasFitter().fit(train, validation, manifest, config)
        seconds = time.perf_counter() - started
        v = norm_gini(valid_frame["label"].to_numpy(), model.predict_value(valid_frame).to_numpy())
        t = norm_gini(test["label"].to_numpy(), model.predict_value(test).to_numpy())
        rounds = int(np.min(list(model.rounds.values())))
        figures[name] = {"validation_norm_gini": v, "test_norm_gini": t, "rounds": rounds, "seconds": seconds}
        print(f"{name:<30}{v:>12.4f}{t:>8.4f}{rounds:>8}{seconds:>9.1f}")
    best = max(figures, key=lambda k: figures[k]["validation_norm_gini"])
    print(f"best on validation: {best} ({figures[best]['validation_norm_gini']:.4f}; default "
          f"{figures['default']['validation_norm_gini']:.4f}); its test {figures[best]['test_norm_gini']:.4f} vs "
          f"default {figures['default']['test_norm_gini']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
