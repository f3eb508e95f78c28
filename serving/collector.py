"""Heavy imports with the garbage collector paused, their objects then frozen out of its scans.

CPython runs a full collection each time the objects that survive grow by a quarter. Importing
MLflow, pandas, LightGBM and scikit-learn makes about half a million objects that live as long as
the process, so a command's start ran a dozen full collections, and every later one scanned those
objects again: 5-10% of a small `clv train`'s CPU (docs/performance.md, "Session 17").
``frozen_imports`` pauses the collector for a block of imports, then moves every object there is to
the permanent generation (``gc.freeze``), which collections skip. In a fork server it also keeps
the collector from writing to those objects in the forked workers, so they keep sharing their pages.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_imports() -> Iterator[None]:
    """Run the block (imports) with the collector paused; then freeze every object there is."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.freeze()
