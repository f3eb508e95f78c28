"""features.ingest.id_hashes gives pandas' own hash of every id, so buckets and id sets do not move."""

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from features.ingest.id_hashes import hash_text


def pandas_hashes(values: list[str]) -> np.ndarray:
    return pd.util.hash_array(np.asarray(values, dtype=object), categorize=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=30), st.integers(0, 5), st.booleans())
def test_every_id_hashes_as_pandas_hashes_it(values, start, large):
    array = pa.array(values, type=pa.large_string() if large else pa.string()).slice(min(start, len(values)))
    np.testing.assert_array_equal(hash_text(array), pandas_hashes(values[min(start, len(values)):]))


def test_ids_of_every_length_around_the_eight_byte_blocks():
    values = ["x" * n for n in range(40)] + ["é" * n for n in range(20)] + ["C00000001", "日本語"]
    np.testing.assert_array_equal(hash_text(pa.array(values)), pandas_hashes(values))


def test_missing_values_or_other_types_are_left_to_pandas():
    assert hash_text(pa.array(["a", None])) is None
    assert hash_text(pa.array([1, 2])) is None
    assert len(hash_text(pa.array([], pa.string()))) == 0
