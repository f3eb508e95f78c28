"""Orders from transaction lines (customer, time, value of each), and per-customer order statistics.

An order is the positive-amount lines sharing an order_id; a line without one is an order by
itself. Orders are numbered by order_id code (the ids' first appearance), then the lines without
an id in line order. One compiled pass (numba) checks that each order_id belongs to one customer
and a second one fills the orders: the numpy version it replaced made eight copies of the lines
(40M at 4M customers, fresh memory each, docs/performance.md) for the same numbers, bit for bit.
When order numbers restart per customer (or per store), the order is the pair (customer,
order_id), numbered by first appearance with pandas. The statistics (median value, gaps between
orders) are compiled passes too, equal to the numpy and pandas code they replaced bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd

from features.encoding import DAY_NS


def orders(order_ids: tuple[np.ndarray, int] | None, code: np.ndarray, t: np.ndarray,
           amount: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(customer code, time, value) per order from lines (customer ``code``, ``t`` int64 ns,
    ``amount``) and ``order_ids`` = (order_id code per line, -1 if missing; number of codes), or
    None when the table has no order_id. An order's time is its first line's; its value the sum
    of its lines' amounts in line order."""
    oid, n_ids = order_ids if order_ids is not None else (np.empty(0, dtype=np.int64), 0)
    number = np.full(n_ids, -1, dtype=np.int64)  # an order_id's owner, then its order number
    used = _number(oid, code, amount, number)
    if used < 0:
        return _pair_orders(oid, n_ids, code, t, amount)
    alone = int(((oid < 0) & (amount > 0)).sum() if len(oid) else (amount > 0).sum())
    o_cust = np.empty(used + alone, dtype=np.int64)
    o_time = np.full(used + alone, np.iinfo(np.int64).max)
    o_value = np.zeros(used + alone)
    _fill(oid, code, t, amount, number, used, o_cust, o_time, o_value)
    return o_cust, o_time, o_value


@numba.njit(nogil=True, cache=True)
def _number(oid, code, amount, number):
    """Number the order_ids of positive lines 0, 1, ... in code order (-1: unused) and return how
    many; -1 as soon as an order_id appears with two customers (``number`` then holds owners)."""
    for i in range(len(oid)):
        o = oid[i]
        if amount[i] > 0 and o >= 0:
            if number[o] == -1:
                number[o] = code[i]
            elif number[o] != code[i]:
                return -1
    used = 0
    for o in range(len(number)):
        if number[o] >= 0:
            number[o] = used
            used += 1
    return used


@numba.njit(nogil=True, cache=True)
def _fill(oid, code, t, amount, number, alone, o_cust, o_time, o_value):
    """Each positive line into its order; lines without an order_id are orders numbered from
    ``alone`` (the ids' count) in line order."""
    has_ids = len(oid) > 0
    for i in range(len(code)):
        a = amount[i]
        if not a > 0:
            continue
        o = oid[i] if has_ids else -1
        if o >= 0:
            k = number[o]
        else:
            k = alone
            alone += 1
        o_cust[k] = code[i]
        o_time[k] = min(o_time[k], t[i])
        o_value[k] += a


def median_values(o_cust: np.ndarray, o_value: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Median order value per customer (NaN without orders), as pandas' groupby median gives it:
    the middle value, or the mean of the two middle ones (their sum / 2).

    Each customer's values are gathered in a buffer by counting sort and sorted in place: order
    values are sums of positive amounts, so every ordering gives the same order statistics. The
    groupby it replaced made 1.2 GB of temporaries at 4M customers."""
    out = np.full(len(count), np.nan)
    _medians(o_cust, o_value, count.astype(np.int64, copy=False), out)
    return out


@numba.njit(nogil=True, cache=True)
def _medians(o_cust, o_value, count, out):
    start = np.zeros(len(count) + 1, dtype=np.int64)
    for c in range(len(count)):
        start[c + 1] = start[c] + count[c]
    cursor = start[:-1].copy()
    values = np.empty(len(o_value))
    for k in range(len(o_value)):
        c = o_cust[k]
        values[cursor[c]] = o_value[k]
        cursor[c] += 1
    for c in range(len(count)):
        m = count[c]
        if m == 0:
            continue
        group = values[start[c]:start[c + 1]]
        group.sort()
        out[c] = group[m // 2] if m % 2 else (group[m // 2] + group[m // 2 - 1]) / 2


def in_customer_time_order(o_cust: np.ndarray, o_time: np.ndarray) -> bool:
    """Whether orders come sorted by customer, then time (as they do when the lines come by
    customer and time): one pass, no packed key or copies."""
    return bool(_in_order(o_cust, o_time))


@numba.njit(nogil=True, cache=True)
def _in_order(c, t):
    for i in range(len(c) - 1):
        if c[i + 1] < c[i] or (c[i + 1] == c[i] and t[i + 1] < t[i]):
            return False
    return True


def gap_sums(c_sorted: np.ndarray, t_sorted: np.ndarray, n: int,
             mean: np.ndarray | None = None) -> np.ndarray:
    """Per customer, the sum over consecutive orders (sorted by customer, then time) of the gap in
    days, or with ``mean`` of the squared deviation (gap - mean of the customer): what np.bincount
    of the gaps gives, in the same order, without an array of the gaps."""
    out = np.zeros(n)
    _gap_sums(c_sorted, t_sorted, np.empty(0) if mean is None else mean, out)
    return out


@numba.njit(nogil=True, cache=True)
def _gap_sums(c, t, mean, out):
    squares = len(mean) > 0
    for i in range(len(c) - 1):
        if c[i + 1] == c[i]:
            gap = (t[i + 1] - t[i]) / DAY_NS
            if squares:
                dev = gap - mean[c[i]]
                out[c[i]] += dev * dev
            else:
                out[c[i]] += gap


def _pair_orders(oid, n_ids, code, t, amount):
    """Orders when an order_id spans customers: (customer, order_id) pairs by first appearance."""
    buy = amount > 0
    oid, b_code, b_time, b_amount = oid[buy], code[buy], t[buy], amount[buy]
    missing = oid < 0
    n_missing = int(missing.sum())
    oid[missing] = n_ids + np.arange(n_missing)
    order, uniques = pd.factorize(b_code * (n_ids + n_missing) + oid)
    n_orders = len(uniques)
    o_cust = np.empty(n_orders, dtype="int64")
    o_cust[order] = b_code
    o_time = np.full(n_orders, np.iinfo("int64").max)
    np.minimum.at(o_time, order, b_time)
    o_value = np.bincount(order, weights=b_amount, minlength=n_orders)
    return o_cust, o_time, o_value


def compile_kernels() -> None:
    """Compile the kernels into numba's cache (beside this file); ``make install`` runs it."""
    one = np.zeros(1, np.int64)
    orders((one, 1), one, one, np.ones(1))
    orders(None, one, one, np.ones(1))
    median_values(one, np.ones(1), np.ones(1, np.int64))
    in_customer_time_order(one, one)
    gap_sums(one, one, 1)
    gap_sums(one, one, 1, np.zeros(1))


if __name__ == "__main__":
    compile_kernels()
