"""Ids as integer codes and times as nanoseconds: the shared plumbing of every family and the labels.

Hashing ten million id strings is the dominant cost of several families, so ids are encoded once per
call (Arrow's dictionary encoding, or ids read as numbers and numbered in one compiled pass,
population and rows together) and everything after is numpy.
``eligible_customers`` and ``customer_index`` define the rows every family returns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.digit_ids import fixed_width_numbers
from features.first_appearance import number_by_first_appearance

DAY_NS = 86_400 * 10**9


def timestamps_ns(values: pd.Series) -> np.ndarray:
    """int64 nanoseconds since the epoch, whatever the datetime64 unit of the column."""
    return values.to_numpy(dtype="datetime64[ns]").view("int64")


def eligible_customers(customers: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Customers who signed up strictly before as_of, sorted by customer_id (the output rows)."""
    signed_up = timestamps_ns(customers["signup_date"]) < pd.Timestamp(as_of).as_unit("ns").value
    return customers.loc[signed_up].sort_values("customer_id", kind="stable")


def arrow_text(values) -> pa.Array | None:
    """A text Series/Index as one Arrow large_string array; None when it is not plain text."""
    chunks = arrow_chunks(values)
    return None if chunks is None else pa.chunked_array(chunks, type=pa.large_string()).combine_chunks()


def arrow_chunks(values) -> list[pa.Array] | None:
    """A text Series/Index as its Arrow large_string chunks, not copied into one array (that copy
    took 0.5 s for 10M ids); None when it is not plain text."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return None
    try:
        array = pa.array(values.array)
    except (TypeError, ValueError, pa.ArrowException):
        return None
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return None
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    return [chunk.cast(pa.large_string()) for chunk in chunks]


def text_codes(arrays: list[pa.Array]) -> tuple[np.ndarray, int]:
    """Codes of the text arrays taken end to end, in one vocabulary, and its size; -1 for nulls.

    Exactly the codes of ``pa.chunked_array(arrays).dictionary_encode()``: values numbered in order
    of first appearance. Ids made of one prefix and a fixed number of digits ("C0000001") are read
    as the integers they spell (features.digit_ids) and numbered without hashing any string: on
    31M profile ids that took 0.6 s against 5-7 s for Arrow's hash table.
    """
    numbers = fixed_width_numbers(arrays)
    if numbers is not None:
        return first_appearance_codes(numbers, overwrite=True)  # the numbers become the codes
    encoded = pa.chunked_array(arrays, type=pa.large_string()).dictionary_encode()
    if encoded.num_chunks == 0:
        return np.array([], dtype="int64"), 0
    codes = np.concatenate(
        [c.indices.fill_null(-1).to_numpy(zero_copy_only=False) for c in encoded.chunks]
    ).astype("int64", copy=False)
    return codes, len(encoded.chunk(0).dictionary)


def first_appearance_codes(keys: np.ndarray, *, overwrite: bool = False) -> tuple[np.ndarray, int]:
    """(int64 codes, number of distinct keys) of int64 keys, numbered in order of first appearance
    (as pd.factorize and Arrow's dictionary_encode number them). ``overwrite``: the keys may be
    overwritten with the codes."""
    n = len(keys)
    if n == 0:
        return np.array([], dtype="int64"), 0
    low = int(keys.min())
    span = int(keys.max()) - low + 1
    if span > 4 * n + 1024 or span >= 2**31:  # sparse keys: hash the integers (still far cheaper)
        codes, uniques = pd.factorize(keys)
        return codes.astype("int64", copy=False), len(uniques)
    return number_by_first_appearance(keys, span, low, overwrite=overwrite)


def is_sorted(values: np.ndarray) -> bool:
    """Whether a 1-d array is in ascending order (ties allowed)."""
    return bool((values[1:] >= values[:-1]).all())


def sorted_unique(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(keys, return_inverse=True) of int64 keys, without the sort when they are sorted
    already (transactions usually come by customer and time)."""
    if not is_sorted(keys):
        return np.unique(keys, return_inverse=True)
    starts = np.empty(len(keys), dtype=bool)
    starts[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=starts[1:])
    return keys[starts], np.cumsum(starts) - 1


def factorize_ids(ids: pd.Series) -> tuple[np.ndarray, int]:
    """(codes, number of distinct values) of an id/text column; code -1 marks a missing value."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        return ids.cat.codes.to_numpy(dtype="int64"), len(ids.cat.categories)
    chunks = arrow_chunks(ids)
    if chunks is not None:
        return text_codes(chunks)
    codes, uniques = pd.factorize(ids)
    return codes.astype("int64", copy=False), len(uniques)


def factorize_ids_where(ids: pd.Series, keep: np.ndarray | None) -> tuple[np.ndarray, int]:
    """factorize_ids(ids[keep]) (``keep`` a boolean mask; None: every row). Ids of one prefix and
    fixed digits are read where they are and only their numbers are selected: the text is not
    copied (at 4M customers a filtered copy of an id column is 0.6 GB of fresh memory)."""
    if keep is None:
        return factorize_ids(ids)
    chunks = None if isinstance(ids.dtype, pd.CategoricalDtype) else arrow_chunks(ids)
    numbers = None if chunks is None else fixed_width_numbers(chunks)
    if numbers is None:
        return factorize_ids(ids[keep])
    return first_appearance_codes(numbers[keep], overwrite=True)


def customer_codes(population: pd.Index, ids: pd.Series,
                   keep: np.ndarray | None = None) -> np.ndarray:
    """Position of each id in ``population`` (int64; -1 if absent, missing or not in ``keep``).

    Population and ids are dictionary-encoded together in one pass: hashing ten million ids once
    is the dominant cost, so no second hash table is built for the lookup. ``keep`` (a boolean
    mask) marks the rows to look up: ids of one prefix and fixed digits are read over the whole
    column, which copies no text; other ids are filtered first, so rows not kept are never hashed
    (a probe of the first values picks the way; the positions are the same either way).
    """
    if keep is not None and not keep.all():
        if not _fixed_width_probe(ids):
            out = np.full(len(ids), -1, dtype="int64")
            out[keep] = customer_codes(population, ids[keep])
            return out
        return np.where(keep, customer_codes(population, ids), -1)
    pop, values = arrow_chunks(population), arrow_chunks(ids)
    if pop is not None and values is not None:
        codes, n_distinct = text_codes(pop + values)
        pop_codes = codes[: len(population)]
        position = np.full(n_distinct + 1, -1, dtype="int64")  # the extra slot answers code -1
        present = pop_codes >= 0
        position[pop_codes[present]] = np.flatnonzero(present)
        return position[codes[len(population):]]
    if isinstance(ids.dtype, pd.CategoricalDtype):
        codes, uniques = ids.cat.codes.to_numpy(dtype="int64"), pd.Index(ids.cat.categories)
    else:
        codes, uniques = pd.factorize(ids)
    return np.append(population.get_indexer(uniques), -1)[codes]


def _fixed_width_probe(ids: pd.Series, size: int = 1024) -> bool:
    """Whether the first values of a text column are one prefix and fixed digits."""
    chunks = None if isinstance(ids.dtype, pd.CategoricalDtype) else arrow_chunks(ids.iloc[:size])
    return chunks is not None and fixed_width_numbers(chunks) is not None


def index_positions(index: pd.Index, rows: pd.Index) -> tuple[np.ndarray | None, bool]:
    """(``index.get_indexer(rows)``, ``index.has_duplicates``); no positions when it has duplicates.

    Text indexes without missing values are encoded together by Arrow (text_codes): pandas turned
    each Arrow-backed index into Python strings to build its hash table, about 0.1 s per 100k ids.
    """
    left, right = arrow_chunks(index), arrow_chunks(rows)
    if left is None or right is None or any(chunk.null_count for chunk in left + right):
        if index.has_duplicates:
            return None, True
        return index.get_indexer(rows), False
    codes, n_distinct = text_codes(left + right)
    own = codes[: len(index)]
    # Numbered by first appearance: the index's own values take codes 0..k-1, k its distinct values.
    if len(own) and int(own.max()) + 1 < len(own):
        return None, True
    position = np.full(n_distinct, -1, dtype=np.intp)
    position[own] = np.arange(len(own), dtype=np.intp)
    return position[codes[len(index):]], False


def customer_index(ids: pd.Series) -> pd.Index:
    """The output index of a family: the given ids, named customer_id."""
    return pd.Index(ids.array, name="customer_id")
