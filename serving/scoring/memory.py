"""Handing memory the scorer has freed back to the operating system between its large steps.

Freed memory is not returned by itself: glibc keeps freed blocks below its mmap threshold (which
grows up to 32 MiB as large arrays are freed) in its heaps, and Arrow's memory pool (mimalloc)
keeps freed pages for reuse. Both stay resident, so without this the population step's peak
stacks on the garbage of the interaction batches read before it (docs/performance.md, Scoring).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow as pa


def _glibc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()  # None where the C library is not glibc (macOS, musl): nothing to trim there


def release_freed_memory() -> None:
    """Return freed heap pages (glibc ``malloc_trim``) and Arrow's unused pool pages to the OS."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
