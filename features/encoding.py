"""Ids as integer codes and times as nanoseconds: the shared plumbing of every family and the labels.

Hashing ten million id strings is the dominant cost of several families, so ids are encoded once per
call (Arrow's dictionary encoding, population and rows together) and everything after is numpy.
``eligible_customers`` and ``customer_index`` define the rows every family returns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

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
    if isinstance(values.dtype, pd.CategoricalDtype):
        return None
    try:
        array = pa.array(values.array)
    except (TypeError, ValueError, pa.ArrowException):
        return None
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return None
    return array.cast(pa.large_string())


def _dictionary_codes(array: pa.Array) -> tuple[np.ndarray, int]:
    """(int64 codes, number of distinct values) of an Arrow array; -1 for nulls."""
    encoded = array.dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype("int64")
    return codes, len(encoded.dictionary)


def factorize_ids(ids: pd.Series) -> tuple[np.ndarray, int]:
    """(codes, number of distinct values) of an id/text column; code -1 marks a missing value."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        return ids.cat.codes.to_numpy(dtype="int64"), len(ids.cat.categories)
    array = arrow_text(ids)
    if array is not None:
        return _dictionary_codes(array)
    codes, uniques = pd.factorize(ids)
    return codes.astype("int64", copy=False), len(uniques)


def customer_codes(population: pd.Index, ids: pd.Series) -> np.ndarray:
    """Position of each id in ``population`` (int64; -1 if absent or missing).

    Population and ids are dictionary-encoded together in one pass: hashing ten million ids once
    is the dominant cost, so no second hash table is built for the lookup.
    """
    pop, values = arrow_text(population), arrow_text(ids)
    if pop is not None and values is not None:
        codes, n_distinct = _dictionary_codes(pa.concat_arrays([pop, values]))
        pop_codes = codes[: len(pop)]
        position = np.full(n_distinct + 1, -1, dtype="int64")  # the extra slot answers code -1
        present = pop_codes >= 0
        position[pop_codes[present]] = np.flatnonzero(present)
        return position[codes[len(pop):]]
    if isinstance(ids.dtype, pd.CategoricalDtype):
        codes, uniques = ids.cat.codes.to_numpy(dtype="int64"), pd.Index(ids.cat.categories)
    else:
        codes, uniques = pd.factorize(ids)
    return np.append(population.get_indexer(uniques), -1)[codes]


def customer_index(ids: pd.Series) -> pd.Index:
    """The output index of a family: the given ids, named customer_id."""
    return pd.Index(ids.array, name="customer_id")
