"""Exact membership tests against millions of ids, built in pieces and held as sorted 64-bit hashes.

The contract's reference checks (a transaction's customer must exist) cost time per *known* id in
every call, so the scorer passes each check only the known ids its rows mention, found here: a
sorted array of hashes (8 bytes per id) answers "which of these ids exist?" with one searchsorted,
and every hash hit is confirmed on the id text, so the answer is exact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def is_in(values, keys) -> np.ndarray:
    """Boolean mask of ``values`` (strings) found in ``keys``, by Arrow's hash set.

    pandas' Series.isin on pyarrow-backed strings builds its set one Python object per key (about
    20 us each in pandas 3.1), which dominates for large key sets; this is the same test in C++.
    """
    values = pa.array(pd.Series(values, dtype="str").array, type=pa.string())
    keys = pa.array(pd.Series(keys, dtype="str").array, type=pa.string())
    return is_member(values, keys)


def is_member(values: pa.Array, keys: pa.Array) -> np.ndarray:
    """Boolean mask of Arrow string ``values`` found in ``keys`` (Arrow's hash set; missing: False)."""
    return pc.fill_null(pc.is_in(values, value_set=keys), False).to_numpy(zero_copy_only=False)


HASH_SLICE_IDS = 250_000  # ids made Python strings at a time for hashing (about 60 bytes each)


def hash_ids(ids: pa.Array) -> np.ndarray:
    """Stable uint64 hash of each id (SipHash of its UTF-8 bytes, as in partition.bucket_of).

    Hashing takes the ids as Python strings. They are made a slice at a time, so millions of ids
    (a run's profile set, a batch's mentioned profiles) never exist as Python objects all at once;
    an id's hash depends on that id alone, so the slices change no value. Plain text without missing
    values is hashed from Arrow's buffers instead, to the same values (features.ingest.id_hashes).
    """
    # numba: imported by the processes that hash ids only
    from features.ingest.id_hashes import hash_text

    fast = hash_text(ids)
    if fast is not None:
        return fast
    if len(ids) <= HASH_SLICE_IDS:
        return _hash_slice(ids)
    out = np.empty(len(ids), dtype=np.uint64)
    for start in range(0, len(ids), HASH_SLICE_IDS):
        piece = ids.slice(start, HASH_SLICE_IDS)
        out[start: start + len(piece)] = _hash_slice(piece)
    return out


def _hash_slice(ids: pa.Array) -> np.ndarray:
    """hash_ids of a few ids at once: pandas hashes Python strings (an object array) only."""
    values = np.asarray(ids.to_pandas(), dtype=object)
    return pd.util.hash_array(values, categorize=False)


class IdSet:
    """A set of non-missing string ids; ``members`` says which of some ids belong to it."""

    def __init__(self, parts: list[pa.Array], hashes: list[np.ndarray] | None = None):
        ids = pa.chunked_array(parts, type=pa.string()).combine_chunks() if parts else pa.array([], pa.string())
        h = np.concatenate(hashes) if hashes else hash_ids(ids) if len(ids) else np.array([], "uint64")
        order = np.argsort(h, kind="stable")
        self.hashes = h[order]
        self.ids = ids.take(pa.array(order))
        # Two ids with one hash (about 1 in 10^7 for millions of ids) would hide one of them from
        # searchsorted: then fall back to Arrow's hash set, still exact.
        self._collisions = bool(len(h) > 1 and (np.diff(self.hashes) == 0).any())

    def __len__(self) -> int:
        return len(self.ids)

    def members(self, values) -> np.ndarray:
        """Boolean mask: which of ``values`` (strings; missing never belongs) are in the set."""
        return self.positions(values) >= 0

    def positions(self, values) -> np.ndarray:
        """Position of each of ``values`` in ``self.ids`` (int64; -1 when absent or missing)."""
        values = pa.array(values, type=pa.string()) if not isinstance(values, pa.Array) else values
        out = np.full(len(values), -1, dtype=np.int64)
        if self._collisions:
            found = pc.index_in(values, value_set=self.ids).fill_null(-1)
            return found.to_numpy(zero_copy_only=False).astype(np.int64)
        present = ~values.is_null().to_numpy(zero_copy_only=False)
        if not present.any() or not len(self.hashes):
            return out
        query = values.filter(pa.array(present))
        h = hash_ids(query)
        # Looked up in hash order: consecutive searches then touch nearby memory (3x faster here).
        order = np.argsort(h)
        pos = np.empty(len(h), dtype=np.int64)
        pos[order] = np.searchsorted(self.hashes, h[order])
        del order
        np.minimum(pos, len(self.hashes) - 1, out=pos)
        hit = self.hashes[pos] == h
        if hit.any():
            same = pc.equal(self.ids.take(pa.array(pos[hit])), query.filter(pa.array(hit)))
            hit[np.flatnonzero(hit)] = same.to_numpy(zero_copy_only=False)
        out[np.flatnonzero(present)] = np.where(hit, pos, -1)
        return out

    def contains(self, values) -> np.ndarray:
        """Boolean mask: which of ``values`` (strings, repeated as a column's are; missing never
        belongs) are in the set, each distinct value looked up once.

        The set is built once and asked per batch: Arrow's is_in would build its hash table of the
        whole set on every call, so batches whose number grows with the base cost its square.
        """
        values = pa.array(pd.Series(values, dtype="str").array, type=pa.string())
        if isinstance(values, pa.ChunkedArray):  # a column read in batches keeps them
            values = values.combine_chunks()
        encoded = values.dictionary_encode()
        found = np.append(self.members(encoded.dictionary), False)  # a missing value: the last entry
        return found[encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)]

    def known(self, values) -> pd.Index:
        """The distinct members of the set among ``values``, as a str Index (for check_table's ``known``)."""
        distinct = pa.array(pd.Series(values, dtype="str").dropna().unique(), type=pa.string())
        return pd.Index(distinct.filter(pa.array(self.members(distinct))).to_pandas(), dtype="str")
