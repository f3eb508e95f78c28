"""Specification of features.families.column_blocks: scipy's CSR product, bit for bit, read by column blocks."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from features.families.column_blocks import ColumnBlocks


def bits(values: np.ndarray) -> np.ndarray:
    """The float64 bit patterns (np.array_equal calls -0.0 and 0.0 equal; these do not)."""
    return np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)


@st.composite
def matrices(draw):
    """A canonical CSR matrix (what scipy builds from COO: duplicates summed, columns sorted), a
    vector and a block width; values of mixed sign and magnitude, so the order of additions shows."""
    rows, columns = draw(st.integers(0, 12)), draw(st.integers(1, 12))
    entries = draw(st.lists(st.tuples(st.integers(0, max(rows - 1, 0)), st.integers(0, columns - 1),
                                      st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
                            max_size=0 if rows == 0 else 80))
    r, c, v = (np.array([e[i] for e in entries], dtype=dtype)
               for i, dtype in enumerate((np.int32, np.int32, np.float64)))
    matrix = sparse.csr_array((v, (r, c)), shape=(rows, columns))
    vector = np.array(draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=columns,
                                    max_size=columns)), dtype=np.float64)
    return matrix, vector, draw(st.integers(1, 14))


@settings(max_examples=300, deadline=None)
@given(matrices())
def test_the_product_is_scipys_bit_for_bit_whatever_the_block_width(case):
    matrix, vector, width = case
    blocks = ColumnBlocks.from_csr(matrix, columns_per_block=width)
    np.testing.assert_array_equal(bits(blocks @ vector), bits(matrix @ vector))


@settings(max_examples=100, deadline=None)
@given(matrices())
def test_entries_are_grouped_by_column_block_then_row_major(case):
    matrix, _, width = case
    blocks = ColumnBlocks.from_csr(matrix, columns_per_block=width)
    coo = matrix.tocoo()
    order = np.lexsort((coo.col, coo.row, coo.col // width))  # block, then row, then column
    np.testing.assert_array_equal(blocks.rows, coo.row[order])
    np.testing.assert_array_equal(blocks.columns, coo.col[order])
    np.testing.assert_array_equal(bits(blocks.values), bits(coo.data[order]))
    assert blocks.rows.dtype == blocks.columns.dtype == np.uint32


def test_a_block_wider_than_the_matrix_keeps_the_csr_order():
    matrix = sparse.csr_array(np.array([[0.0, 2.0, 3.0], [4.0, 0.0, 0.0]]))
    blocks = ColumnBlocks.from_csr(matrix)
    assert blocks.rows.tolist() == [0, 0, 1] and blocks.columns.tolist() == [1, 2, 0]
    assert blocks.nnz == 3 and blocks.shape == (2, 3)


def test_unsorted_columns_are_sorted_first_and_the_matrix_is_left_alone():
    # Row 0 holds column 2 before column 0: the regrouped product adds them in column order.
    matrix = sparse.csr_array((np.array([1e16, 1.0, -1e16]), np.array([2, 1, 0]), np.array([0, 3])),
                              shape=(1, 3))
    matrix.has_sorted_indices = False
    blocks = ColumnBlocks.from_csr(matrix, columns_per_block=1)
    assert matrix.indices.tolist() == [2, 1, 0]
    np.testing.assert_array_equal(blocks @ np.ones(3), matrix.sorted_indices() @ np.ones(3))


def test_rows_without_entries_and_a_matrix_without_entries_give_zeros():
    empty = ColumnBlocks.from_csr(sparse.csr_array((3, 4)))
    np.testing.assert_array_equal(bits(empty @ np.arange(4.0)), bits(np.zeros(3)))
    assert ColumnBlocks.from_csr(sparse.csr_array((0, 2))).product(np.ones(2)).shape == (0,)


def test_the_product_overwrites_out_and_returns_it():
    blocks = ColumnBlocks.from_csr(sparse.csr_array(np.array([[1.0, 2.0], [0.0, 3.0]])))
    out = np.full(2, np.nan)
    assert blocks.product(np.array([1.0, 1.0]), out=out) is out
    assert out.tolist() == [3.0, 3.0]


def test_mismatched_shapes_are_refused():
    blocks = ColumnBlocks.from_csr(sparse.csr_array(np.eye(3)))
    with pytest.raises(ValueError, match="cannot multiply"):
        blocks @ np.ones(2)
    with pytest.raises(ValueError, match="out must be 3 float64"):
        blocks.product(np.ones(3), out=np.empty(2))
    with pytest.raises(ValueError, match="columns_per_block"):
        ColumnBlocks.from_csr(sparse.csr_array(np.eye(3)), columns_per_block=0)
