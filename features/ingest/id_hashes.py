"""Stable 64-bit hashes of id strings: pandas.util.hash_array's values, from Arrow's buffers.

pandas hashes only Python strings (SipHash-2-4 of the UTF-8 bytes with a fixed key, then a
splitmix64 finaliser), so every id was made a Python object first: about 0.4 s per million ids,
paid wherever ids are routed to buckets or looked up in a run's id sets. ``hash_text`` computes the
same values from the bytes where Arrow keeps them, compiled with numba (about 6x faster), so bucket
assignments and id sets are unchanged (tests/features/ingest/test_id_hashes.py compares them with
pandas). Its module imports numba, so it is imported only where ids are hashed.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa

_U64 = np.uint64
# pandas' default hash key, "0123456789123456", read as SipHash's two little-endian key words.
_KEY = np.frombuffer(b"0123456789123456", dtype="<u8")


def hash_text(ids: pa.Array) -> np.ndarray | None:
    """uint64 hash of each id, equal to ``pd.util.hash_array(ids as Python str, categorize=False)``;
    None when ``ids`` is not plain text without missing values (the caller hashes it with pandas)."""
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)) or ids.null_count:
        return None
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    ids = ids.cast(pa.large_string())
    _, offsets, data = ids.buffers()
    starts = np.frombuffer(offsets, dtype=np.int64, count=len(ids) + 1, offset=8 * ids.offset)
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    out = np.empty(len(ids), dtype=np.uint64)
    _hash_all(data, starts, _KEY[0], _KEY[1], out)
    return out


@numba.njit(inline="always")
def _rotl(x, bits):
    return (x << _U64(bits)) | (x >> _U64(64 - bits))


@numba.njit(inline="always")
def _sip_round(v0, v1, v2, v3):
    v0 += v1
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 += v3
    v3 = _rotl(v3, 16) ^ v2
    v0 += v3
    v3 = _rotl(v3, 21) ^ v0
    v2 += v1
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


@numba.njit(nogil=True, cache=True)
def _hash_all(data, starts, k0, k1, out):
    """SipHash-2-4 (the reference algorithm, as pandas' hashing.pyx) of each byte string
    data[starts[i]:starts[i + 1]], then pandas' finaliser."""
    for i in range(out.shape[0]):
        start = starts[i]
        n = starts[i + 1] - start
        v0 = _U64(0x736F6D6570736575) ^ k0
        v1 = _U64(0x646F72616E646F6D) ^ k1
        v2 = _U64(0x6C7967656E657261) ^ k0
        v3 = _U64(0x7465646279746573) ^ k1
        whole = n // 8
        for block in range(whole):
            at = start + 8 * block
            m = _U64(0)
            for byte in range(8):
                m |= _U64(data[at + byte]) << _U64(8 * byte)
            v3 ^= m
            v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
            v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
            v0 ^= m
        last = _U64(n) << _U64(56)  # the length's low byte, then the bytes left over
        at = start + 8 * whole
        for byte in range(n - 8 * whole):
            last |= _U64(data[at + byte]) << _U64(8 * byte)
        v3 ^= last
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        v0 ^= last
        v2 ^= _U64(0xFF)
        for _ in range(4):
            v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        h = v0 ^ v1 ^ v2 ^ v3
        # pandas' _hash_ndarray spreads every hash the same way (splitmix64's finaliser).
        h ^= h >> _U64(30)
        h *= _U64(0xBF58476D1CE4E5B9)
        h ^= h >> _U64(27)
        h *= _U64(0x94D049BB133111EB)
        h ^= h >> _U64(31)
        out[i] = h


def compile_kernels() -> None:
    """Compile the kernel into numba's cache (beside this file); ``make install`` runs it."""
    hash_text(pa.array(["a", "0123456789"]))


if __name__ == "__main__":
    compile_kernels()
