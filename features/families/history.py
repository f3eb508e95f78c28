"""Purchase history: recency, frequency, monetary value, trend and mix from the transactions table.

Orders are positive-amount transactions (lines sharing an order_id form one order); negative amounts
are refunds or returns. Every eligible customer gets a row, so counts and spend of customers with no
transactions are 0 while recency and per-order statistics stay NaN (there is nothing to measure).
Rates are normalised by the customer's observed history so a ten-year customer and a new one compare.

Ids are hashed once per call (features.encoding); the sums over lines and the grouping into orders
are compiled passes (features.families.line_sums, features.families.orders), the rest numpy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.encoding import (
    DAY_NS,
    customer_codes,
    customer_index,
    eligible_customers,
    factorize_ids_where,
    first_appearance_codes,
    timestamps_ns,
)
from features.families.line_sums import line_sums
from features.families.orders import gap_sums, in_customer_time_order, median_values, orders
from features.tables import Tables

FAMILY = "history"
POPULATION_WIDE = False

SPEND_WINDOWS_DAYS = (30, 90, 180, 365)
TREND_WINDOW_DAYS = 180
# Rates per year divide by at least this much history, so one early purchase is not extrapolated
# into an enormous annual rate.
MIN_ACTIVE_DAYS = 90
# Customer x category spend is a dense matrix up to this many cells (8 bytes each), else hashed.
DENSE_CATEGORY_CELLS = 20_000_000

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
    "spend_horizon": "net amount in the config.horizon_days before as_of: the last-horizon baseline "
    "('the next horizon looks like the last one')",
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
    "spend_horizon": 0.0,
    "refund_count": 0.0,
}


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


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
    everything = bool(before.all())

    def text(column: str) -> tuple[np.ndarray, int]:
        """Integer codes of a text column over the kept rows (-1 = missing), and how many."""
        codes, n_distinct = factorize_ids_where(tx[column], None if everything else before)
        return codes[known], n_distinct

    code = customer_codes(ids, tx["customer_id"], None if everything else before)
    code = code if everything else code[before]
    known = code >= 0
    kept = np.flatnonzero(before)[known] if not (everything and known.all()) else None

    t = t_all if kept is None else t_all[kept]
    code = code[known]
    amount = tx["amount"].to_numpy(dtype="float64")
    amount = amount if kept is None else amount[kept]

    def column(name: str) -> np.ndarray | None:
        """A numeric column whole (read at ``kept`` by line_sums), None when absent."""
        return tx[name].to_numpy(dtype="float64") if name in tx.columns else None

    w = TREND_WINDOW_DAYS * DAY_NS
    windows = (*SPEND_WINDOWS_DAYS, config.horizon_days)
    sums = line_sums(code, t, amount, n, now=now,
                     window_starts=[now - days * DAY_NS for days in windows],
                     prior=(now - 2 * w, now - w), peak_months=config.peak_months,
                     quantity=column("quantity"), margin=column("margin"), rows=kept)

    out: dict[str, np.ndarray] = {}
    out["tenure_days"] = (now - signup) / DAY_NS

    gross, net = sums["gross"], sums["net"]

    # Observed history starts at signup, or earlier when the first transaction predates the
    # recorded signup (migrated CRMs often stamp signup at migration time).
    start = np.minimum(signup, sums.first_time)
    active_years = np.maximum((now - start) / DAY_NS, MIN_ACTIVE_DAYS) / 365.25

    order_ids = text("order_id") if "order_id" in tx.columns else None
    o_cust, o_time, o_value = orders(order_ids, code, t, amount)
    count = np.bincount(o_cust, minlength=n)
    has = count > 0
    ends = np.cumsum(count)
    starts = ends - count

    c_sorted, t_sorted = _sorted_by_customer_then_time(o_cust, o_time, n)
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

    mean = np.full(n, np.nan)
    vmax = np.full(n, -np.inf)
    mean[has] = np.bincount(o_cust, weights=o_value, minlength=n)[has] / count[has]
    np.maximum.at(vmax, o_cust, o_value)
    vmax[~has] = np.nan
    median = median_values(o_cust, o_value, count)
    out["order_value_mean"] = mean
    out["order_value_median"] = median
    out["order_value_max"] = vmax

    for i, days in enumerate(SPEND_WINDOWS_DAYS):
        out[f"spend_{days}d"] = sums.window(i)
    out["spend_horizon"] = sums.window(len(SPEND_WINDOWS_DAYS))
    recent = np.maximum(out[f"spend_{TREND_WINDOW_DAYS}d"], 0.0)
    prior = np.maximum(sums["prior"], 0.0)
    trend = _safe_divide(recent - prior, recent + prior)
    # A customer younger than both windows would look "growing" only because the earlier window
    # predates them: unknown, not +1.
    trend[start > now - 2 * w] = np.nan
    out["spend_trend_180d"] = trend

    gap_mean, gap_std = _gaps(c_sorted, t_sorted, count, n)
    out["purchase_gap_mean_days"] = gap_mean
    out["purchase_gap_std_days"] = gap_std

    out["refund_count"] = sums["refund_count"]
    out["refund_share"] = np.minimum(_safe_divide(sums["refunded"], gross), 1.0)
    out["quantity_total"] = sums["quantity"] if "quantity" in tx.columns else np.full(n, np.nan)

    categories = text("category") if "category" in tx.columns else None
    out["category_count"], out["top_category_share"] = _category_mix(categories, code, amount, n)

    out["peak_season_spend_share"] = (_safe_divide(sums["peak"], gross) if config.peak_months
                                      else np.full(n, np.nan))
    out["margin_total"] = sums["margin"] if "margin" in tx.columns else np.full(n, np.nan)

    return pd.DataFrame({name: out[name] for name in FEATURES}, index=ids)


def _sorted_by_customer_then_time(group: np.ndarray, t: np.ndarray, n: int):
    """(group, t) sorted by group then t (0 <= group < n; t in int64 ns).

    When the times fit beside the group in one int64 at a unit that divides them all exactly
    (seconds for typical CRM exports), a single np.sort of the packed key does it; otherwise a
    key sort plus radix passes on the group.
    """
    if in_customer_time_order(group, t):  # orders usually come by customer and time already
        return group, t
    t0 = int(t.min())
    rel = t - t0
    for unit in (10**9, 10**6, 10**3, 1):
        if unit == 1 or not (rel % unit).any():
            break
    span = int(rel.max()) // unit + 1
    if n * span < 2**62:
        key = np.sort(group * span + rel // unit)
        return key // span, (key % span) * unit + t0
    order = _customer_order(group, t, n)
    return group[order], t[order]


def _customer_order(group: np.ndarray, key: np.ndarray, n: int) -> np.ndarray:
    """Indices sorting rows by group (0 <= group < n), then key: like np.lexsort((key, group)).

    Sorts by key once, then by group with stable 16-bit radix passes, several times faster than
    lexsort on millions of rows.
    """
    order = np.argsort(key)
    g = group[order]
    for shift in range(0, max(n - 1, 1).bit_length(), 16):
        step = np.argsort(((g >> shift) & 0xFFFF).astype(np.uint16), kind="stable")
        order = order[step]
        g = g[step]
    return order


def _gaps(c_sorted, t_sorted, count, n):
    """Mean and std (ddof=1) of days between consecutive orders, per customer."""
    n_gaps = np.maximum(count - 1, 0)
    mean = _safe_divide(gap_sums(c_sorted, t_sorted, n), n_gaps)
    std = np.sqrt(_safe_divide(gap_sums(c_sorted, t_sorted, n, mean), n_gaps - 1))
    return mean, std


def _category_mix(categories, code, amount, n):
    """(number of categories bought, share of categorised gross spend in the top one)."""
    if categories is None:
        return np.full(n, np.nan), np.full(n, np.nan)
    cat, n_cats = categories
    purchase = (amount > 0) & (cat >= 0)  # categorised purchase lines
    n_cats = max(n_cats, 1)
    key = code[purchase] * n_cats + cat[purchase]
    weights = amount[purchase]
    if n * n_cats <= DENSE_CATEGORY_CELLS:
        spend = np.bincount(key, weights=weights, minlength=n * n_cats).reshape(n, n_cats)
        bought = (spend > 0).sum(axis=1).astype("float64")
        return bought, _safe_divide(spend.max(axis=1, initial=0.0), spend.sum(axis=1))
    # (customer, category) pairs numbered by first appearance, as pd.factorize numbers them.
    pair, n_pairs = first_appearance_codes(key)
    pairs = np.empty(n_pairs, dtype=key.dtype)
    pairs[pair] = key
    spend = np.bincount(pair, weights=weights, minlength=n_pairs)
    who = pairs // n_cats
    top = np.zeros(n)
    np.maximum.at(top, who, spend)
    categorised = np.bincount(who, weights=spend, minlength=n)
    return np.bincount(who, minlength=n).astype("float64"), _safe_divide(top, categorised)
