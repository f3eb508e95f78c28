"""Handing memory the scorer has freed back to the operating system between its large steps.

Freed memory is not returned by itself: glibc keeps freed blocks below its mmap threshold (which
grows up to 32 MiB as large arrays are freed) in its heaps, and Arrow's memory pool (mimalloc)
keeps freed pages for reuse. Both stay resident, so without this the population step's peak
stacks on the garbage of the interaction batches read before it (docs/performance.md, Scoring).
"""

from __future__ import annotations

import pyarrow as pa

from features.allocator import LIBC  # None where the C library is not glibc: nothing to trim


def release_freed_memory() -> None:
    """Return freed heap pages (glibc ``malloc_trim``) and Arrow's unused pool pages to the OS."""
    pa.default_memory_pool().release_unused()
    if LIBC is not None:
        LIBC.malloc_trim(0)
