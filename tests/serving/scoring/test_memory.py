"""Specification of serving.scoring.memory: freed memory goes back to the operating system on request."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from features.allocator import LIBC

# In a fresh interpreter: arrays of 8 MiB land in glibc's heap once one array of that size has been
# freed (the mmap threshold rises to it); freeing all but the last leaves the heap's pages resident,
# since the last one pins the top of the heap.
PROGRAM = textwrap.dedent(
    """
    import numpy as np, psutil
    from serving.scoring.memory import release_freed_memory
    rss = lambda: psutil.Process().memory_info().rss
    first = np.ones(1 << 20); del first
    arrays = [np.ones(1 << 20) for _ in range(40)]
    last = arrays[-1]; del arrays
    before = rss(); release_freed_memory(); after = rss()
    print(before - after)
    """
)


@pytest.mark.skipif(LIBC is None, reason="the C library is not glibc: nothing to trim")
def test_memory_freed_inside_the_heap_is_returned_to_the_operating_system():
    # glibc's own defaults: any MALLOC_*_ variable (Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in the
    # process that started a cluster, e.g. an earlier test) fixes the mmap threshold, so the arrays
    # would be mapped and unmapped outside the heap and there would be nothing to trim.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    returned = int(subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env,
                                  check=True, cwd=Path(__file__).parents[3]).stdout)
    assert returned > 200 * 2**20  # of the 39 freed arrays' 312 MiB
