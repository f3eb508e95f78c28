"""Ids made of one prefix and a fixed number of digits ("C0000001"), read as the integers they spell.

``features.encoding.text_codes`` numbers such ids without hashing a string. One compiled pass
(numba) over Arrow's offsets and bytes checks each value's length, prefix and digits and writes its
integer: the numpy version it replaced made a byte matrix, a digit matrix, a length array and a
copy per step, 3-4 arrays of the ids' size, which cost most at 4M customers (61M snapshot ids),
where fresh memory is slowest to come by (docs/performance.md, Features).
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa

# Digits after the prefix read as one int64 (10**18 fits).
MAX_ID_DIGITS = 18


def fixed_width_numbers(arrays: list[pa.Array]) -> np.ndarray | None:
    """The arrays' values as int64, end to end, when every value is one ASCII prefix followed by
    the same number of ASCII digits (then value -> integer is one-to-one); else None.

    The prefix and the width are the first value's: its trailing digits are the number."""
    non_empty = [a for a in arrays if len(a)]
    if not non_empty or any(a.null_count for a in non_empty):
        return None
    sample = non_empty[0][0].as_py()
    if not isinstance(sample, str) or not sample.isascii():
        return None
    width = len(sample)
    prefix = np.frombuffer(sample.rstrip("0123456789").encode("ascii"), dtype=np.uint8)
    if not 0 < width - len(prefix) <= MAX_ID_DIGITS:
        return None
    out = np.empty(sum(len(a) for a in non_empty), dtype=np.int64)
    start = 0
    for array in non_empty:
        array = array.cast(pa.large_string())
        _, offsets, data = array.buffers()
        offsets = np.frombuffer(offsets, dtype=np.int64, count=len(array) + 1, offset=8 * array.offset)
        data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
        if not _read(offsets, data, np.int64(width), prefix, out[start:start + len(array)]):
            return None
        start += len(array)
    return out


@numba.njit(nogil=True, cache=True)
def _read(offsets, data, width, prefix, out):
    """Each value's integer into ``out``; False at the first value of another length, another
    prefix or a non-digit (``out`` is then partly written)."""
    for i in range(len(out)):
        first = offsets[i]
        if offsets[i + 1] - first != width:
            return False
        for k in range(len(prefix)):
            if data[first + k] != prefix[k]:
                return False
        value = 0
        for k in range(len(prefix), width):
            digit = np.int64(data[first + k]) - 48  # b"0"
            if digit < 0 or digit > 9:
                return False
            value = value * 10 + digit
        out[i] = value
    return True


def compile_kernels() -> None:
    """Compile the kernel into numba's cache (beside this file); ``make install`` runs it."""
    fixed_width_numbers([pa.array(["C01", "C10"], type=pa.large_string())])


if __name__ == "__main__":
    compile_kernels()
