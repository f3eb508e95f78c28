"""Purchase history: recency, frequency, monetary value, trend and mix from the transactions table.

Orders are positive-amount transactions (lines sharing an order_id form one order); negative amounts
are refunds or returns. Every eligible customer gets a row, so counts and spend of customers with no
transactions are 0 while recency and per-order statistics stay NaN (there is nothing to measure).
Rates are normalised by the customer's observed history so a ten-year customer and a new one compare.

The helpers at the top (eligible customers, integer customer codes, nanosecond times) are shared by
the other CRM families and the labels: ids are hashed once per call, then everything is numpy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.config import FeatureConfig
from features.tables import Tables

FAMILY = "history"
POPULATION_WIDE = False

DAY_NS = 86_400 * 10**9
SPEND_WINDOWS_DAYS = (30, 90, 180, 365)
TREND_WINDOW_DAYS = 180
# Rates per year divide by at least this much history, so one early purchase is not extrapolated
# into an enormous annual rate.
MIN_ACTIVE_DAYS = 90

FEATURES = {
    "tenure_days": "days from signup_date to as_of",
    "days_since_first_order": "days from the first order to as_of; NaN without orders",
    "days_since_last_order": "days from the latest order to as_of; NaN without orders",
    "order_count": "distinct orders (positive-amount transactions; distinct order_id when present)",
    "orders_per_year": "order_count per year of observed history (from the earlier of signup and "
    f"first transaction, at least {MIN_ACTIVE_DAYS} days)",
    "gross_spend_total": "sum of positive amounts (what was bought, before refunds)",
    "net_spend_total": "sum of all amounts, refunds included",
    "net_spend_per_year": "net_spend_total per year of observed history (same denominator as "
    "orders_per_year)",
    "order_value_mean": "mean order value (positive lines of an order summed); NaN without orders",
    "order_value_median": "median order value; NaN without orders",
    "order_value_max": "largest order value; NaN without orders",
    "spend_30d": "net amount in the 30 days before as_of (refunds included)",
    "spend_90d": "net amount in the 90 days before as_of",
    "spend_180d": "net amount in the 180 days before as_of",
    "spend_365d": "net amount in the 365 days before as_of",
    "spend_trend_180d": "(a - b) / (a + b) with a = spend_180d and b = net spend in the 180 days "
    "before that (each floored at 0): -1 lapsing ... +1 growing; NaN when both are 0 or history "
    "does not cover both windows",
    "purchase_gap_mean_days": "mean days between consecutive orders; NaN below 2 orders",
    "purchase_gap_std_days": "standard deviation of those gaps (ddof=1); NaN below 3 orders",
    "refund_count": "number of negative-amount transactions",
    "refund_share": "refunded amount / gross spend, capped at 1 (refunds of purchases older than "
    "the data); NaN without gross spend",
    "quantity_total": "units bought (quantity of positive-amount lines, missing counted as 0); "
    "NaN if transactions have no quantity column",
    "category_count": "distinct product categories bought; NaN if no category column",
    "top_category_share": "share of categorised gross spend in the customer's top category; NaN "
    "if no category column or nothing categorised was bought",
    "peak_season_spend_share": "share of gross spend in config.peak_months; NaN without gross "
    "spend or with no peak months configured",
    "margin_total": "sum of margin over all transactions (missing counted as 0); NaN if "
    "transactions have no margin column",
}

FILL = {
    "order_count": 0.0,
    "orders_per_year": 0.0,
    "gross_spend_total": 0.0,
    "net_spend_total": 0.0,
    "net_spend_per_year": 0.0,
    "spend_30d": 0.0,
    "spend_90d": 0.0,
    "spend_180d": 0.0,
    "spend_365d": 0.0,
    "refund_count": 0.0,
}


# ---------------------------------------------------------------- shared helpers


def timestamps_ns(values: pd.Series) -> np.ndarray:
    """int64 nanoseconds since the epoch, whatever the datetime64 unit of the column."""
    return values.to_numpy(dtype="datetime64[ns]").view("int64")


def eligible_customers(customers: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Customers who signed up strictly before as_of, sorted by customer_id (the output rows)."""
    signed_up = timestamps_ns(customers["signup_date"]) < pd.Timestamp(as_of).as_unit("ns").value
    return customers.loc[signed_up].sort_values("customer_id", kind="stable")


def factorize_ids(ids: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """(codes, uniques) of an id column; code -1 marks a missing id. Arrow strings hash in C."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        return ids.cat.codes.to_numpy(dtype="int64"), pd.Index(ids.cat.categories)
    try:
        values = pa.array(ids.array)
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        encoded = values.dictionary_encode()
    except (TypeError, pa.ArrowException):
        codes, uniques = pd.factorize(ids)
        return codes.astype("int64", copy=False), pd.Index(uniques)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype("int64")
    return codes, pd.Index(encoded.dictionary.to_pandas())


def customer_codes(population: pd.Index, ids: pd.Series) -> np.ndarray:
    """Position of each id in ``population`` (int64; -1 if absent or missing)."""
    codes, uniques = factorize_ids(ids)
    positions = np.append(population.get_indexer(uniques), -1)
    return positions[codes]


def customer_index(ids: pd.Series) -> pd.Index:
    """The output index of a family: the given ids, named customer_id."""
    return pd.Index(ids.array, name="customer_id")


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


# ---------------------------------------------------------------- the family


def history_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """Recency/frequency/monetary features per eligible customer from transactions before as_of."""
    as_of = pd.Timestamp(as_of).as_unit("ns")
    now = as_of.value
    customers = eligible_customers(tables.customers, as_of)
    ids = customer_index(customers["customer_id"])
    n = len(ids)
    signup = timestamps_ns(customers["signup_date"])

    tx = tables.transactions
    t_all = timestamps_ns(tx["timestamp"])
    before = t_all < now  # rows on or after as_of are the future: never read
    tx = tx.loc[before] if not before.all() else tx
    code = customer_codes(ids, tx["customer_id"])
    known = code >= 0
    t = t_all[before][known]
    code = code[known]
    amount = tx["amount"].to_numpy(dtype="float64")[known]

    def per_customer(weights=None, rows=None):
        c = code if rows is None else code[rows]
        w = weights if rows is None or weights is None else weights[rows]
        return np.bincount(c, weights=w, minlength=n).astype("float64")

    out: dict[str, np.ndarray] = {}
    out["tenure_days"] = (now - signup) / DAY_NS

    buy = amount > 0
    refund = amount < 0
    gross = per_customer(amount, buy)
    net = per_customer(amount)

    # Observed history starts at signup, or earlier when the first transaction predates the
    # recorded signup (migrated CRMs often stamp signup at migration time).
    first_tx = np.full(n, now, dtype="int64")
    np.minimum.at(first_tx, code, t)
    start = np.minimum(signup, first_tx)
    active_years = np.maximum((now - start) / DAY_NS, MIN_ACTIVE_DAYS) / 365.25

    orders = _orders(tx, known, buy, code, t, amount)
    o_cust, o_time, o_value = orders
    count = np.bincount(o_cust, minlength=n)
    has = count > 0
    ends = np.cumsum(count)
    starts = ends - count

    by_time = np.lexsort((o_time, o_cust))
    t_sorted = o_time[by_time]
    c_sorted = o_cust[by_time]
    first_order = np.full(n, np.nan)
    last_order = np.full(n, np.nan)
    first_order[has] = (now - t_sorted[starts[has]]) / DAY_NS
    last_order[has] = (now - t_sorted[ends[has] - 1]) / DAY_NS
    out["days_since_first_order"] = first_order
    out["days_since_last_order"] = last_order
    out["order_count"] = count.astype("float64")
    out["orders_per_year"] = count / active_years
    out["gross_spend_total"] = gross
    out["net_spend_total"] = net
    out["net_spend_per_year"] = net / active_years

    by_value = np.lexsort((o_value, o_cust))
    v_sorted = o_value[by_value]
    mean = np.full(n, np.nan)
    median = np.full(n, np.nan)
    vmax = np.full(n, np.nan)
    mean[has] = np.bincount(o_cust, weights=o_value, minlength=n)[has] / count[has]
    lo = starts[has] + (count[has] - 1) // 2
    hi = starts[has] + count[has] // 2
    median[has] = (v_sorted[lo] + v_sorted[hi]) / 2
    vmax[has] = v_sorted[ends[has] - 1]
    out["order_value_mean"] = mean
    out["order_value_median"] = median
    out["order_value_max"] = vmax

    for days in SPEND_WINDOWS_DAYS:
        out[f"spend_{days}d"] = per_customer(amount, t >= now - days * DAY_NS)
    w = TREND_WINDOW_DAYS * DAY_NS
    recent = np.maximum(out[f"spend_{TREND_WINDOW_DAYS}d"], 0.0)
    prior = np.maximum(per_customer(amount, (t >= now - 2 * w) & (t < now - w)), 0.0)
    trend = _safe_divide(recent - prior, recent + prior)
    # A customer younger than both windows would look "growing" only because the earlier window
    # predates them: unknown, not +1.
    trend[start > now - 2 * w] = np.nan
    out["spend_trend_180d"] = trend

    gap_mean, gap_std = _gaps(c_sorted, t_sorted, count, n)
    out["purchase_gap_mean_days"] = gap_mean
    out["purchase_gap_std_days"] = gap_std

    out["refund_count"] = per_customer(None, refund)
    out["refund_share"] = np.minimum(_safe_divide(per_customer(-amount, refund), gross), 1.0)

    if "quantity" in tx.columns:
        quantity = np.nan_to_num(tx["quantity"].to_numpy(dtype="float64")[known])
        out["quantity_total"] = per_customer(quantity, buy)
    else:
        out["quantity_total"] = np.full(n, np.nan)

    out["category_count"], out["top_category_share"] = _category_mix(tx, known, buy, code, amount, n)

    if config.peak_months:
        month = t.view("datetime64[ns]").astype("datetime64[M]").astype("int64") % 12 + 1
        peak = per_customer(amount, buy & np.isin(month, np.asarray(config.peak_months)))
        out["peak_season_spend_share"] = _safe_divide(peak, gross)
    else:
        out["peak_season_spend_share"] = np.full(n, np.nan)

    if "margin" in tx.columns:
        margin = np.nan_to_num(tx["margin"].to_numpy(dtype="float64")[known])
        out["margin_total"] = per_customer(margin)
    else:
        out["margin_total"] = np.full(n, np.nan)

    return pd.DataFrame({name: out[name] for name in FEATURES}, index=ids)


def _orders(tx, known, buy, code, t, amount):
    """(customer code, time, value) per order: positive lines grouped by order_id when present."""
    b_code, b_time, b_amount = code[buy], t[buy], amount[buy]
    if "order_id" not in tx.columns or not buy.any():
        return b_code, b_time, b_amount
    oid, uniques = factorize_ids(tx["order_id"])
    oid = oid[known][buy]
    # A line without an order_id is its own order.
    missing = oid < 0
    oid[missing] = len(uniques) + np.arange(int(missing.sum()))
    key = b_code * (len(uniques) + int(missing.sum())) + oid
    order, _ = pd.factorize(key)
    n_orders = int(order.max()) + 1
    o_cust = np.empty(n_orders, dtype="int64")
    o_cust[order] = b_code
    o_time = np.full(n_orders, np.iinfo("int64").max)
    np.minimum.at(o_time, order, b_time)  # an order happened when its first line did
    o_value = np.bincount(order, weights=b_amount, minlength=n_orders)
    return o_cust, o_time, o_value


def _gaps(c_sorted, t_sorted, count, n):
    """Mean and std (ddof=1) of days between consecutive orders, per customer."""
    same = c_sorted[1:] == c_sorted[:-1]
    gaps = np.diff(t_sorted)[same] / DAY_NS
    who = c_sorted[1:][same]
    n_gaps = np.maximum(count - 1, 0)
    mean = _safe_divide(np.bincount(who, weights=gaps, minlength=n), n_gaps)
    dev = gaps - mean[who]
    std = np.sqrt(_safe_divide(np.bincount(who, weights=dev * dev, minlength=n), n_gaps - 1))
    return mean, std


def _category_mix(tx, known, buy, code, amount, n):
    """(number of categories bought, share of categorised gross spend in the top one)."""
    if "category" not in tx.columns:
        return np.full(n, np.nan), np.full(n, np.nan)
    cat, uniques = factorize_ids(tx["category"])
    cat = cat[known][buy]
    has_cat = cat >= 0
    n_cats = max(len(uniques), 1)
    key = code[buy][has_cat] * n_cats + cat[has_cat]
    pair, pairs = pd.factorize(key)
    spend = np.bincount(pair, weights=amount[buy][has_cat], minlength=len(pairs))
    who = np.asarray(pairs) // n_cats
    top = np.zeros(n)
    np.maximum.at(top, who, spend)
    categorised = np.bincount(who, weights=spend, minlength=n)
    return np.bincount(who, minlength=n).astype("float64"), _safe_divide(top, categorised)
