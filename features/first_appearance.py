"""Small integer keys numbered in order of first appearance, in one pass (numba).

``features.encoding.first_appearance_codes`` numbers dense keys (ids read as numbers: 61M profile
snapshots at 4M customers) this way, reading them where they are (no shifted int32 copy). The
numpy version it replaced touched a table as large as the key range three times per key, at
random; this touches it once, which matters most when the table outgrows the processor's caches
(4-5x faster on 15M and 61M keys). Its module imports numba.
"""

from __future__ import annotations

import numba
import numpy as np


def number_by_first_appearance(keys: np.ndarray, span: int, low: int = 0, *,
                               overwrite: bool = False) -> tuple[np.ndarray, int]:
    """(int64 code of each key, number of distinct keys) of integer keys in [low, low + span): the
    first distinct key seen is 0, the next new one 1, and so on (as ``pd.factorize`` numbers them).
    int32 and int64 keys are read as they are (no shifted copy); a key outside the range raises
    ValueError (numba does not check indexes). ``overwrite``: int64 keys the caller no longer needs
    receive the codes (each key is read before its code is written), saving an array their size."""
    codes = keys if overwrite and keys.dtype == np.int64 else np.empty(len(keys), dtype=np.int64)
    if keys.dtype not in (np.int32, np.int64):
        keys = keys.astype(np.int64)
    seen = _number(np.ascontiguousarray(keys), np.int64(low), np.int64(span), codes)
    return codes, int(seen)


@numba.njit(nogil=True, cache=True)
def _number(keys, low, span, codes):
    """Write each key's number into ``codes``; return how many distinct keys there were."""
    rank = np.full(span, -1, dtype=np.int32)  # int32: half the bytes of the randomly read table
    seen = 0
    for i in range(len(keys)):
        key = np.int64(keys[i]) - low
        if key < 0 or key >= span:
            raise ValueError("key outside [low, low + span)")
        number = rank[key]
        if number < 0:
            number = seen
            rank[key] = number
            seen += 1
        codes[i] = number
    return seen


def compile_kernels() -> None:
    """Compile the kernel into numba's cache (beside this file); ``make install`` runs it."""
    for dtype in (np.int32, np.int64):
        number_by_first_appearance(np.array([1, 0, 1], dtype=dtype), 2)


if __name__ == "__main__":
    compile_kernels()
