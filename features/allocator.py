"""glibc's allocator around a feature build: freed arrays reused while it runs, returned at its end.

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh mapping and
unmaps it when it is freed, so each array of the tables' size a family makes and drops (a column's
copy, a mask, a per-profile vector at 4M customers) is faulted in and zeroed by the kernel again:
the 4M world's build faulted in 30 GB for a 17.6 GB peak and spent 28-31 s of its 70 s in the
kernel, against 2 s at 1M, where per-customer arrays are small enough for glibc to reuse
(docs/performance.md, Features). Inside ``reused_memory`` glibc takes every block from its heap
(``M_MMAP_MAX`` 0) and keeps freed ones there for reuse (``M_TRIM_THRESHOLD`` -1: no trimming);
on the way out both settings are restored and ``malloc_trim`` hands the free pages back, so what
the build leaves resident is what it returned. Restored means glibc's defaults: a process started
with other values (``GLIBC_TUNABLES``) gets the defaults back, and glibc's sliding mmap threshold
stays where it was when the build began (any mallopt call freezes it). Where the C library is not
glibc (macOS, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters and glibc's defaults for them (malloc.h; malloc/malloc.c).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
NEVER_TRIM = -1  # mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    has_all = libc is not None and all(hasattr(libc, f) for f in ("malloc_trim", "mallopt"))
    return libc if has_all else None


LIBC = _glibc()  # None where the C library is not glibc

_lock = threading.Lock()
_depth = 0  # builds running in this process (threads of a Dask worker, nested calls)


@contextmanager
def reused_memory() -> Iterator[None]:
    """Keep freed memory for reuse inside the block; restore glibc's settings and return the free
    pages when the last concurrent block ends."""
    global _depth
    if LIBC is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            LIBC.mallopt(M_MMAP_MAX, 0)
            LIBC.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                LIBC.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                LIBC.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                LIBC.malloc_trim(0)
