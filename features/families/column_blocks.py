"""Sparse matrix entries grouped by blocks of columns, so a product reads its vector from cache.

scipy's CSR product reads the vector at random, once per entry. Past the processor's caches (a
PageRank score vector of 6M vertices is 48 MB at 4M customers) each read waits on memory: the
4M world's product took 5-7x the 1M world's for 4x the entries. Grouped by blocks of
COLUMNS_PER_BLOCK columns (4 MB of float64), a product reads one block's slice of the vector at a
time, from cache, and writes the result's rows in order: 2.5x faster at 4M, 1.9x at 1M (two
PageRanks on two threads; docs/performance.md, Features). Within a block the entries keep the
CSR's row-major order, so each row's terms are added in the same order as scipy adds them: the
product equals scipy's bit for bit (tests/features/families/test_column_blocks.py). The kernels
are compiled with numba.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy import sparse

COLUMNS_PER_BLOCK = 2**19  # 4 MB of the vector per block: the fastest width at 1M and 4M customers


@dataclass(frozen=True)
class ColumnBlocks:
    """The entries (row, column, value) of a shape[0] x shape[1] matrix, grouped by column block in
    column order and, within a block, in row-major order with columns ascending in each row.
    16 bytes per entry (scipy's CSR: 12, plus a row pointer per row)."""

    shape: tuple[int, int]
    rows: np.ndarray  # uint32
    columns: np.ndarray  # uint32
    values: np.ndarray  # float64

    @classmethod
    def from_csr(cls, matrix: sparse.csr_array,
                 columns_per_block: int = COLUMNS_PER_BLOCK) -> ColumnBlocks:
        """The matrix's entries regrouped (the matrix is not modified; its indices are sorted
        first if they are not, as scipy's canonical form has them)."""
        if not matrix.has_sorted_indices:
            matrix = matrix.sorted_indices()
        rows, columns = matrix.shape
        if max(rows, columns) >= 2**32:
            raise ValueError(f"a {rows} x {columns} matrix has indexes beyond uint32")
        if columns_per_block < 1:
            raise ValueError(f"columns_per_block must be positive, got {columns_per_block}")
        data = np.ascontiguousarray(matrix.data, dtype=np.float64)
        arrays = _regroup(matrix.indptr, matrix.indices, data, np.int64(columns_per_block),
                          np.int64(columns))
        return cls((rows, columns), *arrays)

    @property
    def nnz(self) -> int:
        return len(self.values)

    def product(self, vector: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """matrix @ vector (float64), into ``out`` when given (shape[0] floats, overwritten)."""
        vector = np.ascontiguousarray(vector, dtype=np.float64)
        if vector.shape != (self.shape[1],):
            raise ValueError(f"a {self.shape} matrix cannot multiply a vector of shape {vector.shape}")
        if out is None:
            out = np.empty(self.shape[0])
        elif out.shape != (self.shape[0],) or out.dtype != np.float64:
            raise ValueError(f"out must be {self.shape[0]} float64, got {out.shape} {out.dtype}")
        _product(self.rows, self.columns, self.values, vector, out)
        return out

    def __matmul__(self, vector: np.ndarray) -> np.ndarray:
        return self.product(vector)


@numba.njit(nogil=True, cache=True)
def _regroup(indptr, indices, data, width, columns):
    """A stable counting sort of the CSR's entries by column block: (rows, columns, values)."""
    starts = np.zeros((columns + width - 1) // width + 1, dtype=np.int64)
    for j in range(len(indices)):
        starts[indices[j] // width + 1] += 1
    for b in range(1, len(starts)):
        starts[b] += starts[b - 1]
    rows = np.empty(len(indices), dtype=np.uint32)
    cols = np.empty(len(indices), dtype=np.uint32)
    values = np.empty(len(indices), dtype=np.float64)
    for i in range(len(indptr) - 1):
        for j in range(indptr[i], indptr[i + 1]):
            k = starts[indices[j] // width]
            rows[k] = i
            cols[k] = indices[j]
            values[k] = data[j]
            starts[indices[j] // width] = k + 1
    return rows, cols, values


@numba.njit(nogil=True, cache=True)
def _product(rows, columns, values, vector, out):
    # out starts at zero and each row's terms arrive in the CSR's order: scipy's csr_matvec sums
    # (from 0.0, in stored order) the same terms in the same order, one rounding per addition.
    out[:] = 0.0
    for e in range(len(rows)):
        out[rows[e]] += values[e] * vector[columns[e]]


def compile_kernels() -> None:
    """Compile the kernels into numba's cache (beside this file); ``make install`` runs it."""
    ColumnBlocks.from_csr(sparse.csr_array(np.eye(2))).product(np.ones(2))


if __name__ == "__main__":
    compile_kernels()
