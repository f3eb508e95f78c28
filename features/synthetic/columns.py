"""Arrow columns from numpy arrays: zero-padded ids, text and categories from codes, timestamps."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def format_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Zero-padded ids ("C0000001") built as fixed-width bytes (no per-row Python)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    size = len(head) + width
    buf = np.empty((len(numbers), size), dtype=np.uint8)
    buf[:, : len(head)] = head
    rest = numbers.copy()
    for j in range(size - 1, len(head) - 1, -1):  # one pass per digit position
        buf[:, j] = 48 + rest % 10
        rest //= 10
    offsets = np.arange(0, (len(numbers) + 1) * size, size, dtype=np.int32)
    return pa.StringArray.from_buffers(
        len(numbers), pa.py_buffer(offsets), pa.py_buffer(buf.tobytes())
    )


def take_ids(ids: pa.Array, index: np.ndarray) -> pa.Array:
    """ids[index], null where index < 0."""
    index = np.asarray(index, dtype=np.int64)
    missing = index < 0
    return ids.take(pa.array(np.where(missing, 0, index), mask=missing if missing.any() else None))


def text_column(codes: np.ndarray, labels, mask: np.ndarray | None = None) -> pa.Array:
    """Plain string column from small integer codes."""
    dictionary = pa.DictionaryArray.from_arrays(
        pa.array(codes, pa.int32(), mask=mask), pa.array(list(labels))
    )
    return dictionary.cast(pa.string())


def category_column(codes: np.ndarray, labels) -> pa.Array:
    """Dictionary column (read back by pandas as category, with all labels as categories)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), pa.array(list(labels)))


def ts_column(ns: np.ndarray) -> pa.Array:
    """Timestamp column from int64 epoch nanoseconds."""
    return pa.array(np.asarray(ns, dtype=np.int64).view("datetime64[ns]"), pa.timestamp("ns"))


def ts_column_or_null(ns: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Timestamp column from int64 epoch nanoseconds, null where not ``valid``."""
    return pa.array(
        np.where(valid, ns, 0).astype(np.int64).view("datetime64[ns]"),
        pa.timestamp("ns"),
        mask=~valid,
    )
