"""The compiled first-appearance numbering gives pandas' factorize codes."""

import numpy as np
import pandas as pd
import pytest

from features.first_appearance import number_by_first_appearance


def test_keys_are_numbered_as_pandas_factorize_numbers_them():
    keys = np.random.default_rng(7).integers(0, 5_000, 100_000).astype(np.int32)
    codes, n = number_by_first_appearance(keys, 5_000)
    expected, uniques = pd.factorize(keys)
    np.testing.assert_array_equal(codes, expected)
    assert codes.dtype == np.int64 and n == len(uniques)


def test_no_keys_give_no_codes_and_key_values_never_seen_get_no_number():
    codes, n = number_by_first_appearance(np.array([], dtype=np.int32), 10)
    assert len(codes) == 0 and n == 0
    codes, n = number_by_first_appearance(np.array([9, 9, 0], dtype=np.int32), 10)
    np.testing.assert_array_equal(codes, [0, 0, 1])
    assert n == 2


@pytest.mark.parametrize("key", [-1, 10])
def test_a_key_outside_the_span_is_refused_not_written_out_of_bounds(key):
    with pytest.raises(ValueError, match="outside"):
        number_by_first_appearance(np.array([3, key], dtype=np.int32), 10)


def test_int64_keys_are_numbered_from_low_without_a_shifted_copy():
    keys = np.array([10**15 + 7, 10**15 + 2, 10**15 + 7, 10**15], dtype=np.int64)
    codes, n = number_by_first_appearance(keys, 8, low=10**15)
    np.testing.assert_array_equal(codes, [0, 1, 0, 2])
    assert n == 3
    with pytest.raises(ValueError, match="outside"):
        number_by_first_appearance(keys, 8, low=10**15 + 1)  # 10**15 is below low


def test_overwritten_keys_become_the_codes_the_copy_would_have_held():
    keys = np.random.default_rng(3).integers(50, 2_000, 10_000).astype(np.int64)
    expected, n_expected = number_by_first_appearance(keys.copy(), 2_000)
    codes, n = number_by_first_appearance(keys, 2_000, overwrite=True)
    assert codes is keys and n == n_expected
    np.testing.assert_array_equal(codes, expected)
    int32_keys = keys.astype(np.int32)
    codes, _ = number_by_first_appearance(int32_keys, 2_000, overwrite=True)  # int32 cannot hold
    assert codes is not int32_keys and codes.dtype == np.int64  # int64 codes: a new array
