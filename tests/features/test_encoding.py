"""Id codes without hashing strings (features.encoding): always exactly Arrow's dictionary_encode."""

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from features.digit_ids import fixed_width_numbers
from features.encoding import (
    customer_codes,
    factorize_ids,
    factorize_ids_where,
    first_appearance_codes,
    index_positions,
    is_sorted,
    sorted_unique,
    text_codes,
)


def arrow_codes(arrays: list[pa.Array]) -> tuple[np.ndarray, int]:
    """The reference: one chunked dictionary_encode, nulls as -1."""
    encoded = pa.chunked_array(arrays, type=pa.large_string()).dictionary_encode()
    if encoded.num_chunks == 0:
        return np.array([], dtype="int64"), 0
    codes = np.concatenate(
        [c.indices.fill_null(-1).to_numpy(zero_copy_only=False) for c in encoded.chunks]
    )
    return codes.astype("int64"), len(encoded.chunk(0).dictionary)


def assert_same_codes(arrays: list[pa.Array]) -> None:
    codes, n = text_codes(arrays)
    expected, n_expected = arrow_codes(arrays)
    assert n == n_expected
    np.testing.assert_array_equal(codes, expected)
    assert codes.dtype == np.int64


def large(values) -> pa.Array:
    return pa.array(values, type=pa.large_string())


def test_fixed_width_ids_are_read_as_numbers_and_numbered_by_first_appearance():
    ids = large(["C0000007", "C0000002", "C0000007", "C0000010", "C0000002"])
    np.testing.assert_array_equal(fixed_width_numbers([ids]), [7, 2, 7, 10, 2])
    np.testing.assert_array_equal(text_codes([ids])[0], [0, 1, 0, 2, 1])
    assert_same_codes([ids])


def test_one_vocabulary_across_arrays_as_in_a_chunked_dictionary():
    snapshots = large(["P003", "P001", "P003"])
    sources = large(["P002", "P003"])
    targets = large(["P001", "P004", "P002"])
    assert_same_codes([snapshots, sources, targets])
    assert text_codes([snapshots, sources, targets])[1] == 4


def test_ids_that_are_not_one_prefix_and_fixed_digits_fall_back_to_hashing():
    cases = [
        ["C01", "C1", "C01"],  # leading zeros matter: different widths
        ["C01", "D01", "C01"],  # another prefix
        ["C01", "C0x", "C01"],  # not digits
        ["C-1", "C01"],  # a sign is not a digit
        ["C01", None, "C01"],  # missing values
        ["a", "b", "a"],  # no digits at all
        ["é01", "é02"],  # non-ASCII prefix
        ["C" + "1" * 19, "C" + "2" * 19],  # more digits than an int64 holds
        ["1", "2", "1"],  # digits only: still one-to-one
        ["", ""],
    ]
    for values in cases:
        assert_same_codes([large(values)])
    assert fixed_width_numbers([large(["C01", "C1"])]) is None
    assert fixed_width_numbers([large(["C01", None])]) is None
    assert fixed_width_numbers([large(["C01"]), large(["D01"])]) is None
    assert fixed_width_numbers([large(["C01", "C01", "C001"])]) is None  # a longer last value
    assert fixed_width_numbers([large(["C01", "C0:"])]) is None  # the byte after "9"
    assert fixed_width_numbers([large(["C01", "C0/"])]) is None  # the byte before "0"


def test_slices_are_read_from_their_own_offset_and_arrays_end_to_end():
    ids = large([f"X{i:04d}" for i in range(20)])
    np.testing.assert_array_equal(fixed_width_numbers([ids.slice(5, 3), large([]), ids.slice(17)]),
                                  [5, 6, 7, 17, 18, 19])


def test_sliced_and_empty_arrays():
    ids = large([f"X{i:04d}" for i in range(50)] * 2)
    assert_same_codes([ids.slice(37, 40), large([]), ids.slice(3, 9)])
    codes, n = text_codes([])
    assert len(codes) == 0 and n == 0
    assert_same_codes([large([])])


def test_sparse_numbers_are_numbered_by_first_appearance_too():
    keys = np.array([10**15, 3, 10**15, 7, 3, -5], dtype="int64")
    codes, n = first_appearance_codes(keys)
    np.testing.assert_array_equal(codes, [0, 1, 0, 2, 1, 3])
    assert n == 4


def test_customer_codes_find_the_population_positions():
    population = pd.Index(["C002", "C005", "C009"], name="customer_id")
    ids = pd.Series(["C009", "C001", "C002", "C009", None], dtype="str")
    np.testing.assert_array_equal(customer_codes(population, ids), [2, -1, 0, 2, -1])
    other = pd.Series(["C009", "c1", "C002"], dtype="str")  # not fixed width: hashed, same answer
    np.testing.assert_array_equal(customer_codes(population, other), [2, -1, 0])


def test_sorted_unique_equals_numpy_unique():
    for keys in ([], [4], [1, 1, 2, 8, 8, 8], [3, 1, 2, 3, 1]):
        keys = np.asarray(keys, dtype="int64")
        expected = np.unique(keys, return_inverse=True)
        got = sorted_unique(keys)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
    assert is_sorted(np.array([1, 1, 2])) and not is_sorted(np.array([2, 1]))


id_text = st.one_of(
    st.integers(0, 40).map(lambda i: f"P{i:03d}"),  # the fixed-width path
    st.sampled_from(["P1", "P01", "Q001", "p001", "", "P00x"]),  # values that break it
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.one_of(id_text, st.none()), max_size=12), max_size=4),
    st.booleans(),
)
def test_codes_always_equal_arrow_dictionary_encode(chunks, fixed_only):
    if fixed_only:  # mostly exercise the number path: drop the values that disable it
        chunks = [[v for v in chunk if v is not None and len(v) == 4 and v[1:].isdigit()
                   and v[0] == "P"] for chunk in chunks]
    assert_same_codes([large(chunk) for chunk in chunks])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**40), 2**40), max_size=60), st.booleans())
def test_first_appearance_codes_equal_pandas_factorize(keys, dense):
    keys = np.asarray(keys, dtype="int64")
    if dense:
        keys = keys % 17
    codes, n = first_appearance_codes(keys)
    expected, uniques = pd.factorize(keys)
    np.testing.assert_array_equal(codes, expected)
    assert n == len(uniques)


def test_eighteen_digits_still_fit_and_nineteen_fall_back():
    longest = large(["C" + "9" * 18, "C" + "0" * 17 + "1", "C" + "9" * 18])
    np.testing.assert_array_equal(fixed_width_numbers([longest]), [10**18 - 1, 1, 10**18 - 1])
    assert_same_codes([longest])
    assert fixed_width_numbers([large(["C" + "9" * 19])]) is None


def test_chunked_columns_are_encoded_without_combining_their_chunks():
    chunked = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(
        [["C003", "C001"], [], ["C003", "C002"]], type=pa.large_string())))
    population = pd.Index(["C001", "C002"], name="customer_id")
    np.testing.assert_array_equal(customer_codes(population, chunked), [-1, 0, -1, 1])
    from features.encoding import factorize_ids
    codes, n = factorize_ids(chunked)
    np.testing.assert_array_equal(codes, [0, 1, 0, 2])
    assert n == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(id_text, st.none()), max_size=15), st.lists(st.one_of(id_text, st.none()), max_size=15),
       st.sampled_from(["str", "object"]))
def test_index_positions_are_pandas_get_indexer_and_has_duplicates(index, rows, dtype):
    index, rows = pd.Index(index, dtype=dtype), pd.Index(rows, dtype=dtype)
    positions, duplicated = index_positions(index, rows)
    assert duplicated == index.has_duplicates
    if not duplicated:
        np.testing.assert_array_equal(positions, index.get_indexer(rows))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(id_text, st.none()), st.booleans()), max_size=20),
       st.booleans(), st.sampled_from(["str", "category", "object"]))
def test_codes_of_the_kept_rows_equal_the_codes_of_the_filtered_column(rows, fixed_only, dtype):
    if fixed_only:
        rows = [(v, k) for v, k in rows if v is not None and len(v) == 4 and v[0] == "P"
                and v[1:].isdigit()]
    ids = pd.Series([v for v, _ in rows], dtype=dtype)
    keep = np.array([k for _, k in rows], dtype=bool)
    codes, n = factorize_ids_where(ids, keep)
    expected, n_expected = factorize_ids(ids[keep])
    np.testing.assert_array_equal(codes, expected)
    assert n == n_expected and codes.dtype == np.int64


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(id_text, st.none()), st.booleans()), max_size=20),
       st.lists(id_text, max_size=8, unique=True), st.booleans())
def test_customer_codes_of_kept_rows_are_their_positions_and_the_rest_are_minus_one(
        rows, population, fixed_only):
    if fixed_only:  # ids that take the whole-column way
        rows = [(v, k) for v, k in rows if v is not None and len(v) == 4 and v[0] == "P"
                and v[1:].isdigit()]
    ids = pd.Series([v for v, _ in rows], dtype="str")
    keep = np.array([k for _, k in rows], dtype=bool)
    pop = pd.Index(population, dtype="str")
    got = customer_codes(pop, ids, keep)
    expected = np.where(keep, customer_codes(pop, ids), -1)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64
