"""Per-customer sums over transaction lines in one compiled pass: spend, windows, refunds, units.

``features.families.history`` needs a dozen sums per customer (gross and net spend, the spend
windows, refunds, units, peak-season spend, margin) and the first transaction time. Summed with
numpy, each one was a boolean mask, two filtered copies of the lines and a bincount: at 40M lines
about 2 GB of temporaries per sum, fresh from the kernel each time, the family's slowest part at
4M customers (docs/performance.md). One numba loop reads each line once and adds it where it
belongs, in the lines' order, so every sum equals np.bincount's to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from features.encoding import DAY_NS

NAT = np.iinfo(np.int64).min

# Rows of the matrix ``line_sums`` returns, before the spend windows (one row per window start).
SUMS = ("gross", "net", "refund_count", "refunded", "quantity", "peak", "margin", "prior")


@dataclass(frozen=True)
class LineSums:
    """Sums per customer (arrays of length n, float64) and each customer's first line time."""

    sums: np.ndarray  # (len(SUMS) + number of windows, n)
    first_time: np.ndarray  # int64 ns; ``now`` for customers without lines

    def __getitem__(self, name: str) -> np.ndarray:
        return self.sums[SUMS.index(name)]

    def window(self, i: int) -> np.ndarray:
        return self.sums[len(SUMS) + i]


def line_sums(code: np.ndarray, t: np.ndarray, amount: np.ndarray, n: int, *, now: int,
              window_starts: list[int], prior: tuple[int, int], peak_months=(),
              quantity: np.ndarray | None = None, margin: np.ndarray | None = None,
              rows: np.ndarray | None = None) -> LineSums:
    """Sums per customer over lines (``code`` in 0..n-1, ``t`` int64 ns, ``amount``).

    gross: positive amounts; net: all amounts; refund_count and refunded: count and -amount of
    negative lines; quantity: units of positive lines and margin: of all lines (NaN as 0, +-inf as
    the largest float, like np.nan_to_num); peak: positive amounts in ``peak_months`` (1-12);
    prior: net amount with prior[0] <= t < prior[1]; window i: net amount with
    t >= window_starts[i]. ``quantity`` and ``margin`` are whole columns read at ``rows`` (the
    lines' positions in them) when given, so the lines' copies are never made.
    """
    peak = np.zeros(13, dtype=np.bool_)
    peak[[m for m in peak_months if 1 <= m <= 12]] = True  # other numbers name no month
    empty = np.empty(0, dtype=np.float64)
    sums = np.zeros((len(SUMS) + len(window_starts), n))
    first_time = np.full(n, now, dtype=np.int64)
    _add(code, t, amount,
         empty if quantity is None else np.asarray(quantity, dtype=np.float64),
         empty if margin is None else np.asarray(margin, dtype=np.float64),
         np.empty(0, dtype=np.int64) if rows is None else rows,
         np.asarray(window_starts, dtype=np.int64), np.int64(prior[0]), np.int64(prior[1]),
         peak, bool(peak_months), sums, first_time)
    return LineSums(sums, first_time)


@numba.njit(nogil=True, cache=True)
def month_of(t):
    """Calendar month (1-12) of int64 ns since the epoch, as datetime64[M] gives it; 0 for NaT.

    Civil-from-days (H. Hinnant) over floored days, exact for every representable time."""
    if t == NAT:
        return 0
    z = t // DAY_NS + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    return mp + 3 if mp < 10 else mp - 9


@numba.njit(nogil=True, cache=True)
def _finite(x):
    """np.nan_to_num of one value."""
    if np.isnan(x):
        return 0.0
    if np.isinf(x):
        return np.finfo(np.float64).max if x > 0 else -np.finfo(np.float64).max
    return x


@numba.njit(nogil=True, cache=True)
def _add(code, t, amount, quantity, margin, rows, starts, prior_lo, prior_hi, peak, use_peak,
         sums, first_time):
    has_quantity, has_margin, has_rows = len(quantity) > 0, len(margin) > 0, len(rows) > 0
    for i in range(len(code)):
        c, ti, a = code[i], t[i], amount[i]
        row = rows[i] if has_rows else i
        sums[1, c] += a
        first_time[c] = min(first_time[c], ti)
        if a > 0:
            sums[0, c] += a
            if has_quantity:
                sums[4, c] += _finite(quantity[row])
            if use_peak and peak[month_of(ti)]:
                sums[5, c] += a
        elif a < 0:
            sums[2, c] += 1.0
            sums[3, c] += -a
        if has_margin:
            sums[6, c] += _finite(margin[row])
        if prior_lo <= ti < prior_hi:
            sums[7, c] += a
        for w in range(len(starts)):
            if ti >= starts[w]:
                sums[8 + w, c] += a


def compile_kernels() -> None:
    """Compile the kernels into numba's cache (beside this file); ``make install`` runs it."""
    line_sums(np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1), 1, now=1,
              window_starts=[0], prior=(0, 1), peak_months=(1,), quantity=np.ones(1),
              margin=np.ones(1), rows=np.zeros(1, np.int64))


if __name__ == "__main__":
    compile_kernels()
