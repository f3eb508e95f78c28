"""Page faults: what backing fresh memory costs on this machine, and how many faults a run took.

A process's first write to a page of new memory faults: the kernel finds and zeroes a page, and in
a virtual machine that hands freed memory back to its host (free page reporting, as on the
development machine) the host must back the page again. On the development machine a fault took
35-45 microseconds in some sessions (a 16 GB array: 60-73 s to write the first time, 1.1 s the
second), so a run's system time can be as large as its own work. The benchmarks print the cost
measured at their start and the faults and system time of the run, beside the wall time.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import numpy as np

GB = 1024**3


def first_touch_seconds_per_gb(megabytes: int = 256) -> tuple[float, float]:
    """(first write, second write) in seconds per GB, of an array this process never wrote to."""
    array = np.empty(megabytes * 2**20 // 8)
    start = time.perf_counter()
    array.fill(1.0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    array.fill(2.0)
    second = time.perf_counter() - start
    return first * GB / array.nbytes, second * GB / array.nbytes


@dataclass(frozen=True)
class Usage:
    """CPU seconds and minor page faults so far (this process, or its waited-for children)."""

    user: float
    system: float
    minor_faults: int

    @classmethod
    def now(cls, children: bool = False) -> Usage:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
        return cls(usage.ru_utime, usage.ru_stime, usage.ru_minflt)

    def since(self, earlier: Usage) -> Usage:
        return Usage(self.user - earlier.user, self.system - earlier.system,
                     self.minor_faults - earlier.minor_faults)

    def describe(self) -> str:
        return (f"user {self.user:.1f} s, system {self.system:.1f} s, "
                f"{self.minor_faults:,} minor page faults")


def describe_first_touch() -> str:
    """One line: the cost of fresh memory now, for the reader to weigh the run's figures."""
    first, second = first_touch_seconds_per_gb()
    return (f"fresh memory: first write {first:.2f} s/GB, second write {second:.2f} s/GB "
            f"(the first pays a page fault per page)")
