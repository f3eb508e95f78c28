"""Specification of features.allocator: inside a build glibc reuses freed arrays; after it, returns them."""

import ctypes

import numpy as np
import pytest

from features import allocator
from features.allocator import LIBC, reused_memory

MB = 2**20


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


pytestmark = pytest.mark.skipif(LIBC is None or not hasattr(LIBC, "mallinfo2"),
                                reason="glibc >= 2.33 only (mallinfo2)")


def mapped_bytes() -> int:
    """Bytes glibc holds in mappings of their own (blocks above the mmap threshold)."""
    LIBC.mallinfo2.restype = MallInfo2
    return LIBC.mallinfo2().hblkhd


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_a_large_array_gets_a_mapping_of_its_own_outside_a_build():
    before = mapped_bytes()
    array = np.ones(64 * MB // 8)
    assert mapped_bytes() - before >= 64 * MB
    del array


def test_inside_a_build_a_large_array_comes_from_the_heap_and_its_pages_stay_for_reuse():
    with reused_memory():
        before = mapped_bytes()
        array = np.ones(200 * MB // 8)
        assert mapped_bytes() == before  # no mapping of its own
        del array
        resident_inside = resident_bytes()  # freed, kept for the next array
    assert resident_bytes() < resident_inside - 150 * MB  # handed back when the build ends
    before = mapped_bytes()
    array = np.ones(64 * MB // 8)
    assert mapped_bytes() - before >= 64 * MB  # glibc's own setting is back
    del array


def test_only_the_last_of_nested_or_concurrent_builds_restores_the_settings():
    with reused_memory():
        with reused_memory():
            pass
        assert allocator._depth == 1
        before = mapped_bytes()
        array = np.ones(64 * MB // 8)
        assert mapped_bytes() == before  # the outer build still reuses memory
        del array
    assert allocator._depth == 0


def test_an_error_in_the_build_restores_the_settings():
    with pytest.raises(RuntimeError), reused_memory():
        raise RuntimeError("a family failed")
    assert allocator._depth == 0
    before = mapped_bytes()
    array = np.ones(64 * MB // 8)
    assert mapped_bytes() - before >= 64 * MB
    del array
