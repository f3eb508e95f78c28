"""Specification of features.families.orders: lines grouped into orders as numpy grouped them."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.encoding import DAY_NS
from features.families.orders import gap_sums, in_customer_time_order, median_values, orders


def numpy_orders(order_ids, code, t, amount):
    """The grouping history did with numpy before features.families.orders (the reference)."""
    buy = amount > 0
    b_code, b_time, b_amount = code[buy], t[buy], amount[buy]
    if order_ids is None or not buy.any():
        return b_code, b_time, b_amount
    oid, n_ids = order_ids
    oid = oid[buy]
    missing = oid < 0
    n_missing = int(missing.sum())
    oid[missing] = n_ids + np.arange(n_missing)
    n_ids += n_missing
    owner = np.full(n_ids, -1, dtype="int64")
    owner[oid] = b_code
    if np.array_equal(owner[oid], b_code):
        used = np.bincount(oid, minlength=n_ids) > 0
        order = (np.cumsum(used) - 1)[oid]
        n_orders = int(used.sum())
    else:
        order, uniques = pd.factorize(b_code * n_ids + oid)
        n_orders = len(uniques)
    o_cust = np.empty(n_orders, dtype="int64")
    o_cust[order] = b_code
    o_time = np.full(n_orders, np.iinfo("int64").max)
    np.minimum.at(o_time, order, b_time)
    o_value = np.bincount(order, weights=b_amount, minlength=n_orders)
    return o_cust, o_time, o_value


@st.composite
def lines(draw):
    size = draw(st.integers(0, 40))
    n_ids = draw(st.integers(1, 12))
    # Few customers and few ids: ids shared by two customers (restarting numbers) come up often.
    shared = draw(st.booleans())
    code = np.array(draw(st.lists(st.integers(0, 4), min_size=size, max_size=size)), np.int64)
    oid = np.array(draw(st.lists(st.integers(-1, n_ids - 1), min_size=size, max_size=size)),
                   np.int64)
    if not shared:  # each id belongs to one customer
        oid = np.where(oid >= 0, oid * 5 + code, -1)
        n_ids *= 5
    t = np.array(draw(st.lists(st.integers(0, 10**12), min_size=size, max_size=size)), np.int64)
    amount = np.array(draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=size,
                                    max_size=size)), np.float64)
    with_ids = draw(st.booleans())
    return ((oid, n_ids) if with_ids else None), code, t, amount


def bits(values):
    return np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)


@settings(max_examples=400, deadline=None)
@given(lines())
def test_orders_are_numbered_timed_and_summed_as_numpy_did_bit_for_bit(case):
    order_ids, code, t, amount = case
    reference = numpy_orders(None if order_ids is None else (order_ids[0].copy(), order_ids[1]),
                             code, t, amount)
    got = orders(order_ids, code, t, amount)
    np.testing.assert_array_equal(got[0], reference[0])
    np.testing.assert_array_equal(got[1], reference[1])
    np.testing.assert_array_equal(bits(got[2]), bits(reference[2]))
    assert [a.dtype for a in got] == [np.int64, np.int64, np.float64]


def test_lines_of_one_order_make_one_order_timed_at_its_first_line():
    oid = (np.array([3, 3, -1, 0, 3]), 4)
    code, t = np.array([1, 1, 1, 0, 1]), np.array([50, 20, 30, 10, 40])
    amount = np.array([5.0, 2.0, 7.0, 1.0, -2.0])  # the refund line is no part of an order
    o_cust, o_time, o_value = orders(oid, code, t, amount)
    assert o_cust.tolist() == [0, 1, 1]  # id 0, id 3, then the line without an id
    assert o_time.tolist() == [10, 20, 30] and o_value.tolist() == [1.0, 7.0, 7.0]


def test_an_order_id_reused_by_another_customer_is_another_order():
    oid = (np.array([0, 0, 0]), 1)
    o_cust, _, o_value = orders(oid, np.array([2, 0, 2]), np.array([1, 2, 3]),
                                np.array([1.0, 2.0, 4.0]))
    assert o_cust.tolist() == [2, 0] and o_value.tolist() == [5.0, 2.0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(1e-3, 1e6)), max_size=40), st.integers(6, 8))
def test_median_values_are_pandas_groupby_medians_bit_for_bit(values, n):
    o_cust = np.array([v[0] for v in values], dtype=np.int64)
    o_value = np.array([v[1] for v in values], dtype=np.float64)
    groups = pd.Categorical.from_codes(o_cust, categories=pd.RangeIndex(n))
    expected = pd.Series(o_value).groupby(groups, observed=False).median().to_numpy()
    got = median_values(o_cust, o_value, np.bincount(o_cust, minlength=n))
    np.testing.assert_array_equal(bits(got), bits(expected))


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two():
    got = median_values(np.array([1, 1, 1, 1, 0]), np.array([4.0, 1.0, 3.0, 10.0, 2.0]),
                        np.array([1, 4, 0]))
    assert got[0] == 2.0 and got[1] == 3.5 and np.isnan(got[2])


@st.composite
def sorted_orders(draw):
    """Orders sorted by customer then time, as history sorts them; times at whole seconds."""
    pairs = sorted(draw(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10**6)), max_size=30)))
    return (np.array([p[0] for p in pairs], dtype=np.int64),
            np.array([p[1] for p in pairs], dtype=np.int64) * 10**9)


@settings(max_examples=300, deadline=None)
@given(sorted_orders())
def test_gap_sums_are_the_bincounts_of_the_gaps_bit_for_bit(orders_):
    c, t = orders_
    same = c[1:] == c[:-1]
    gaps, who = np.diff(t)[same] / DAY_NS, c[1:][same]
    total = np.bincount(who, weights=gaps, minlength=5)
    np.testing.assert_array_equal(bits(gap_sums(c, t, 5)), bits(total))
    mean = total / np.maximum(np.bincount(who, minlength=5), 1)
    dev = gaps - mean[who]
    np.testing.assert_array_equal(bits(gap_sums(c, t, 5, mean)),
                                  bits(np.bincount(who, weights=dev * dev, minlength=5)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=12))
def test_customer_time_order_is_lexicographic_order(pairs):
    c = np.array([p[0] for p in pairs], dtype=np.int64)
    t = np.array([p[1] for p in pairs], dtype=np.int64)
    assert in_customer_time_order(c, t) == (pairs == sorted(pairs))
