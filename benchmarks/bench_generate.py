"""Benchmark the synthetic world generator: wall time, rows per table and peak RSS.

.venv/bin/python benchmarks/bench_generate.py --customers 1000000 [--out DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.synthetic.world import generate_world


class PeakRss:
    """Samples this process's RSS in a background thread (ru_maxrss is reported too, as a cross-check)."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=None, help="output dir (default: a temp dir, removed after)"
    )
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="clv-world-") as tmp:
        out = args.out or Path(tmp)
        with PeakRss() as rss:
            started = time.perf_counter()
            summary = generate_world(
                out, n_customers=args.customers, seed=args.seed, progress=args.progress
            )
            wall = time.perf_counter() - started
        size = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
        print(f"customers: {args.customers:,}  seed: {args.seed}  out: {out}")
        print(f"wall time: {wall:.1f} s")
        for table, rows in summary["rows"].items():
            print(f"  {table:<22} {rows:>12,} rows")
        print(f"on disk: {size / 2**20:,.0f} MiB")
        ru_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        print(f"peak RSS: {max(rss.peak, ru_max) / 2**30:.2f} GiB")
        return dict(summary, wall=wall, peak_rss=max(rss.peak, ru_max), bytes=size)


if __name__ == "__main__":
    main()
