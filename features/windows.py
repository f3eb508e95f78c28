"""Training windows: several past cutoffs, each with features before it and a label after it.

Stacking windows gives the model more (customer, moment) examples and teaches it how values move
over time. Every label window [cutoff, cutoff + horizon) ends on or before the evaluation cutoff,
so nothing the held-out evaluation measures is ever seen in training.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd

from features.build import build_features
from features.config import FeatureConfig
from features.labels import label_values
from features.tables import Tables

OnWindow = Callable[[pd.Timestamp, int, float], None]


def training_cutoffs(eval_cutoff: pd.Timestamp, horizon_days: int, n_windows: int,
                     step_days: int) -> list[pd.Timestamp]:
    """eval_cutoff - horizon - k * step for k = 0 .. n_windows - 1 (latest first)."""
    if horizon_days <= 0 or n_windows <= 0 or step_days <= 0:
        raise ValueError(
            f"horizon_days, n_windows and step_days must be positive "
            f"(got {horizon_days}, {n_windows}, {step_days})"
        )
    last = eval_cutoff - pd.Timedelta(days=horizon_days)
    return [last - pd.Timedelta(days=k * step_days) for k in range(n_windows)]


def build_training_set(
    tables: Tables,
    eval_cutoff: pd.Timestamp,
    config: FeatureConfig,
    *,
    n_windows: int,
    step_days: int,
    families=None,
    on_window: OnWindow | None = None,
) -> pd.DataFrame:
    """Feature tables of every training cutoff stacked, oldest first, with ``cutoff`` and ``label``.

    Indexed by customer_id (a customer appears once per window they had signed up for). A window
    whose cutoff is on or before the first transaction has no history to learn from and is skipped
    without error (``on_window`` still hears about it, with 0 rows). ``on_window(cutoff, rows,
    seconds)`` is called after each window. Raises ValueError when no window has any history.
    """
    horizon = config.horizon_days
    cutoffs = sorted(training_cutoffs(eval_cutoff, horizon, n_windows, step_days))
    first = tables.transactions["timestamp"].min()
    frames = []
    for cutoff in cutoffs:
        # The label window must close before the evaluation period opens (kept under python -O).
        if cutoff + pd.Timedelta(days=horizon) > eval_cutoff:
            raise AssertionError(f"label window from {cutoff} passes eval_cutoff {eval_cutoff}")
        start = time.perf_counter()
        if pd.isna(first) or cutoff <= first:
            if on_window is not None:
                on_window(cutoff, 0, time.perf_counter() - start)
            continue
        window = build_features(tables, cutoff, config, families=families)
        label = label_values(tables, cutoff, config)
        window = window.assign(
            cutoff=pd.Series(cutoff, index=window.index, dtype="datetime64[ns]"),
            label=label,
        )
        frames.append(window)
        if on_window is not None:
            on_window(cutoff, len(window), time.perf_counter() - start)
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ValueError(
            f"no training window has transactions before its cutoff (cutoffs {cutoffs[0].date()}"
            f" .. {cutoffs[-1].date()}); use fewer windows, a smaller step or a later eval_cutoff"
        )
    return pd.concat(_shared_categories(frames))


def _shared_categories(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Give each categorical column the union of its levels across windows, so concat keeps it."""
    out = list(frames)
    for column in frames[0].columns:
        dtypes = [f[column].dtype for f in frames]
        if not isinstance(dtypes[0], pd.CategoricalDtype) or all(d == dtypes[0] for d in dtypes):
            continue
        levels = list(dict.fromkeys(level for d in dtypes for level in d.categories))
        shared = pd.CategoricalDtype(levels, ordered=dtypes[0].ordered)
        out = [f.assign(**{column: f[column].astype(shared)}) for f in out]
    return out
