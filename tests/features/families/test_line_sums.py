"""Specification of features.families.line_sums: numpy's masked bincounts, bit for bit, in one pass."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.encoding import DAY_NS
from features.families.line_sums import NAT, SUMS, line_sums, month_of

NOW = np.datetime64("2026-01-01", "ns").astype(np.int64)
# Times within two years before NOW: any nanosecond, or exactly on a window's edge (whole days).
times = st.one_of(st.integers(int(NOW) - 730 * DAY_NS, int(NOW) - 1),
                  st.sampled_from([1, 30, 90, 180, 360, 365, 730]).map(
                      lambda days: int(NOW) - days * DAY_NS))
amounts = st.one_of(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.0, -0.0, 0.1, 1e-300]))
units = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(np.nan))


def bits(values: np.ndarray) -> np.ndarray:
    """The float64 bit patterns (np.array_equal calls -0.0 and 0.0 equal; these do not)."""
    return np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)


@st.composite
def lines(draw):
    n = draw(st.integers(1, 6))
    size = draw(st.integers(0, 60))
    code = np.array(draw(st.lists(st.integers(0, n - 1), min_size=size, max_size=size)), np.int64)
    t = np.array(draw(st.lists(times, min_size=size, max_size=size)), dtype=np.int64)
    amount = np.array(draw(st.lists(amounts, min_size=size, max_size=size)), dtype=np.float64)
    # Whole columns with the lines at ``rows`` among other rows, as history reads them.
    extra = draw(st.integers(0, 5))
    rows = np.sort(draw(st.permutations(range(size + extra)))[:size]).astype(np.int64)
    quantity, margin = (np.array(draw(st.lists(units, min_size=size + extra, max_size=size + extra)),
                                 dtype=np.float64) for _ in range(2))
    months = tuple(draw(st.sets(st.integers(0, 14), max_size=4)))
    return n, code, t, amount, rows, quantity, margin, months


def numpy_sums(n, code, t, amount, rows, quantity, margin, months, starts, prior):
    """What history computed before line_sums: a mask, filtered copies and a bincount per sum."""
    def per_customer(weights=None, where=None):
        c = code if where is None else code[where]
        w = weights if where is None or weights is None else weights[where]
        return np.bincount(c, weights=w, minlength=n).astype("float64")
    buy, refund = amount > 0, amount < 0
    month = t.view("datetime64[ns]").astype("datetime64[M]").astype("int64") % 12 + 1
    first = np.full(n, NOW, dtype=np.int64)
    np.minimum.at(first, code, t)
    sums = {"gross": per_customer(amount, buy), "net": per_customer(amount),
            "refund_count": per_customer(None, refund), "refunded": per_customer(-amount, refund),
            "quantity": per_customer(np.nan_to_num(quantity[rows]), buy),
            "peak": per_customer(amount, buy & np.isin(month, np.asarray(months, dtype=np.int64))),
            "margin": per_customer(np.nan_to_num(margin[rows])),
            "prior": per_customer(amount, (t >= prior[0]) & (t < prior[1]))}
    return sums, [per_customer(amount, t >= s) for s in starts], first


@settings(max_examples=300, deadline=None)
@given(lines(), st.lists(st.sampled_from([0, 1, 30, 90, 180, 365, 800]), max_size=5))
def test_every_sum_equals_numpys_masked_bincount_bit_for_bit(case, window_days):
    n, code, t, amount, rows, quantity, margin, months = case
    starts = [int(NOW) - d * DAY_NS for d in window_days]
    prior = (int(NOW) - 360 * DAY_NS, int(NOW) - 180 * DAY_NS)
    got = line_sums(code, t, amount, n, now=int(NOW), window_starts=starts, prior=prior,
                    peak_months=months, quantity=quantity, margin=margin, rows=rows)
    expected, windows, first = numpy_sums(n, code, t, amount, rows, quantity, margin, months,
                                          starts, prior)
    for name in SUMS:
        np.testing.assert_array_equal(bits(got[name]), bits(expected[name]), err_msg=name)
    for i, window in enumerate(windows):
        np.testing.assert_array_equal(bits(got.window(i)), bits(window))
    np.testing.assert_array_equal(got.first_time, first)


def test_without_rows_the_columns_are_the_lines_themselves():
    code, t = np.array([0, 1, 0]), np.full(3, int(NOW) - DAY_NS)
    amount, quantity = np.array([5.0, -2.0, 1.0]), np.array([2.0, 7.0, np.nan])
    got = line_sums(code, t, amount, 2, now=int(NOW), window_starts=[], prior=(0, 0),
                    quantity=quantity)
    assert got["quantity"].tolist() == [2.0, 0.0]  # the refund's units and the NaN count nothing
    assert got["refund_count"].tolist() == [0.0, 1.0] and got["refunded"].tolist() == [0.0, 2.0]
    assert got["margin"].tolist() == [0.0, 0.0]  # no margin column: nothing summed


def test_a_customer_without_lines_sums_to_zero_and_starts_now():
    got = line_sums(np.array([1]), np.array([int(NOW) - 5]), np.array([3.0]), 3, now=int(NOW),
                    window_starts=[int(NOW) - DAY_NS], prior=(0, 1))
    assert got["net"].tolist() == [0.0, 3.0, 0.0] and got.window(0).tolist() == [0.0, 3.0, 0.0]
    assert got.first_time.tolist() == [int(NOW), int(NOW) - 5, int(NOW)]


@settings(max_examples=500, deadline=None)
@given(st.integers(np.iinfo(np.int64).min + 1, np.iinfo(np.int64).max))
def test_the_month_is_numpys_calendar_month_for_any_time(t):
    expected = np.array([t]).view("datetime64[ns]").astype("datetime64[M]").astype("int64") % 12 + 1
    assert month_of(np.int64(t)) == expected[0]


def test_month_boundaries_and_nat():
    for stamp, month in [("1969-12-31T23:59:59.999999999", 12), ("1970-01-01", 1),
                         ("2024-02-29T12:00", 2), ("2024-03-01", 3), ("1900-03-01", 3)]:
        assert month_of(np.datetime64(stamp, "ns").astype(np.int64)) == month
    assert month_of(np.int64(NAT)) == 0  # NaT is in no month (the contract rejects it anyway)
