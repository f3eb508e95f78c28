"""Heavy imports with the garbage collector paused, their objects then frozen out of its scans.

CPython runs a full collection each time the objects that survive grow by a quarter. Importing
MLflow, pandas, LightGBM and scikit-learn makes about half a million objects that live as long as
the process, so a process's start ran a dozen full collections, and every later one scanned those
objects again (a test process spent about a tenth of its CPU so: docs/performance.md, "Session 17").
``frozen_imports`` pauses the collector for a block of imports, collects once, then moves every
object left to the permanent generation (``gc.freeze``), which collections skip. In a fork server it
also keeps the collector from writing to those objects in the forked workers, so they keep sharing
their pages.

Only at the start of a process that owns its heap (a fork server, a test process before its tests):
what is frozen is never collected, so a cycle alive then and dropped later would stay for good.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_imports() -> Iterator[None]:
    """Run the block (imports) with the collector paused; then collect the garbage it made and freeze
    every object left."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()  # garbage of the imports is freed, not frozen
        gc.freeze()
