"""Profiles at a cutoff: who owns each profile, its latest snapshot, and the interactions between them.

The social families (coverage, social, network, topical) all start from these derivations. Profile
ids are hashed once per Tables object into one vocabulary shared by snapshots and both ends of the
interactions, and the derivations are memoised on that object (``Tables.derived``), so the four
families pay for one pass over millions of id strings instead of one pass each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from features.digit_ids import fixed_width_numbers
from features.encoding import arrow_chunks, factorize_ids, text_codes, timestamps_ns
from features.tables import Tables


@dataclass(frozen=True)
class ProfileCodes:
    """Integer codes of the profile ids of every snapshot and interaction row (-1 = missing).

    Codes index one vocabulary of size ``n``: the same profile has the same code in both tables.
    They are int32 (4 bytes a row: training holds the interaction table whole).
    """

    snapshot: np.ndarray  # per social_profiles row
    source: np.ndarray  # per social_interactions row
    target: np.ndarray  # per social_interactions row
    n: int


@dataclass(frozen=True)
class InteractionsBefore:
    """The interactions dated before as_of with both ends known, as positions and profile codes."""

    rows: np.ndarray | slice  # positions in social_interactions (int32), or slice(None): every row
    source: np.ndarray  # profile codes (ProfileCodes vocabulary)
    target: np.ndarray
    timestamp_ns: np.ndarray  # int64 nanoseconds since the epoch


def profile_codes(tables: Tables) -> ProfileCodes:
    """ProfileCodes of ``tables``, computed once per Tables object."""
    return tables.derived("profile_codes", lambda: _encode(tables))


def _encode(tables: Tables) -> ProfileCodes:
    snapshots, interactions = tables.social_profiles, tables.social_interactions
    columns = {
        "snapshot": None if snapshots is None else snapshots["profile_id"],
        "source": None if interactions is None else interactions["source_profile_id"],
        "target": None if interactions is None else interactions["target_profile_id"],
    }
    present = {name: column for name, column in columns.items() if column is not None}
    shared = _shared_categories(present.values())
    if shared is not None:
        # Every column is categorical over one vocabulary (the scorer's tables): its codes are the
        # profile codes already, so no id is hashed and nothing is copied.
        out = dict.fromkeys(columns, np.array([], dtype=np.int32))
        for name, column in present.items():
            out[name] = column.array.codes.astype(np.int32, copy=False)  # a view, not a copy
        return ProfileCodes(out["snapshot"], out["source"], out["target"], len(shared))
    # A categorical column is encoded through its categories, each id once.
    values = [
        c.cat.categories if isinstance(c.dtype, pd.CategoricalDtype) else c for c in present.values()
    ]
    arrays = [arrow_chunks(v) for v in values]
    if not present:
        codes, n = np.array([], dtype=np.int32), 0
    elif all(a is not None for a in arrays):
        # One vocabulary over all columns, numbered as a chunked array's dictionary_encode would.
        codes, n = text_codes([chunk for chunks in arrays for chunk in chunks])
        codes = codes.astype(np.int32, copy=False)
    else:  # ids that are not text: let pandas factorize them together
        codes, n = factorize_ids(pd.Series(np.concatenate([np.asarray(v, dtype=object) for v in values])))
    out = dict.fromkeys(columns, np.array([], dtype=np.int32))
    start = 0
    for (name, column), value in zip(present.items(), values, strict=True):
        part = codes[start : start + len(value)]
        start += len(value)
        if isinstance(column.dtype, pd.CategoricalDtype):
            part = np.append(part, -1)[column.cat.codes.to_numpy()]  # code -1 (missing) stays -1
        out[name] = part.astype(np.int32, copy=False)
    return ProfileCodes(out["snapshot"], out["source"], out["target"], n)


def _shared_categories(columns) -> pd.Index | None:
    """The categories of ``columns`` if they are all categorical over the same ones, else None."""
    columns = list(columns)
    if not columns or not all(isinstance(c.dtype, pd.CategoricalDtype) for c in columns):
        return None
    first = columns[0].cat.categories
    same = all(c.cat.categories is first or c.cat.categories.equals(first) for c in columns[1:])
    return first if same else None


def latest_profiles(
    tables: Tables, as_of: pd.Timestamp, lookback_days: tuple[int, ...] = ()
) -> tuple[pd.DataFrame, np.ndarray]:
    """profile_snapshots of every profile at as_of, and each row's code in profile_codes(tables).

    Which row is each profile's latest (and which its owner's), and the frame of those rows without
    lookback columns, are memoised per Tables object and cutoff; each call gets its own shallow
    copy with the lookback columns it asks for.
    """
    codes = profile_codes(tables)
    snapshots = tables.social_profiles
    latest = tables.derived(
        "latest_rows", lambda: _LatestRows.of(snapshots, as_of, codes.snapshot, codes.n), as_of=as_of
    )
    # The frame without lookbacks is shared too (taking 1.5M rows of a 15M-row table costs about a
    # second); each call gets a shallow copy, which copy-on-write keeps from changing it.
    base = tables.derived("latest_frame", lambda: latest.frame(snapshots, ()), as_of=as_of)
    frame = base.copy(deep=False)
    latest.add_lookbacks(frame, snapshots, lookback_days)
    return frame, latest.profile_code


def interactions_before(tables: Tables, as_of: pd.Timestamp) -> InteractionsBefore:
    """The interactions dated before as_of with both ends known (memoised per cutoff)."""
    def compute():
        inter = tables.social_interactions
        codes = profile_codes(tables)
        t = timestamps_ns(inter["timestamp"])
        # Leakage: only interactions strictly before as_of.
        usable = (t < as_of.value) & (codes.source >= 0) & (codes.target >= 0)
        if usable.all():  # e.g. the scorer keeps only earlier interactions: share, do not copy
            return InteractionsBefore(slice(None), codes.source, codes.target, t)
        rows = np.flatnonzero(usable).astype(np.int32 if len(t) < 2**31 else np.int64)
        return InteractionsBefore(rows, codes.source[rows], codes.target[rows], t[rows])

    return tables.derived("interactions_before", compute, as_of=as_of)


def on_market_topic(topic: pd.Series, market_topics: Iterable[str]) -> np.ndarray:
    """Mask of interactions whose topic is a market topic (ignoring case and surrounding spaces).

    Topic labels come from vendors and taggers that disagree on case ("Running" vs "running").
    Missing topics are never on-topic.
    """
    # Normalise the few distinct labels, not every row.
    codes, labels = pd.factorize(topic)
    wanted = {t.strip().lower() for t in market_topics}
    labels_on_topic = pd.Index(labels, dtype="str").str.strip().str.lower().isin(wanted)
    return np.r_[labels_on_topic, False][codes]  # code -1 (missing topic) picks the False


def profile_snapshots(
    social_profiles: pd.DataFrame, as_of: pd.Timestamp, lookback_days: tuple[int, ...] = ()
) -> pd.DataFrame:
    """One row per profile with a snapshot before as_of: its owner and its latest snapshot.

    Index ``profile_id``; columns ``customer_id`` (owner, NaN for non-customer profiles),
    ``network``, ``snapshot_date`` and the metrics of the latest snapshot (``followers``,
    ``following``, ``posts``, ``engagements``, ``influence_score`` when supplied), plus
    ``followers_{d}d_before`` for each d in lookback_days: followers on the latest snapshot dated
    at least d days before the latest one (NaN when the profile has no such history).

    The owner is the customer_id of the latest snapshot that carries one: identity resolution
    re-links profiles when it corrects itself, and the newest link known at as_of wins. Among
    snapshots of one profile on the same date, the later row of the table wins. Profiles come in
    the order of their first snapshot in the table.
    """
    codes, n = factorize_ids(social_profiles["profile_id"])
    return _LatestRows.of(social_profiles, as_of, codes, n).frame(social_profiles, lookback_days)


@dataclass(frozen=True)
class _LatestRows:
    """Per profile with a snapshot before as_of (in order of first snapshot): the row positions of
    its latest snapshot and of its latest owner link (-1 if none), and its profile code."""

    codes: np.ndarray  # profile code of every snapshot row
    eligible: np.ndarray  # snapshot rows dated before as_of with a profile id
    dates: np.ndarray  # int64 ns of every snapshot row
    n: int
    latest: np.ndarray
    owner: np.ndarray
    profile_code: np.ndarray

    @classmethod
    def of(cls, snapshots: pd.DataFrame, as_of: pd.Timestamp, codes: np.ndarray, n: int) -> _LatestRows:
        dates = timestamps_ns(snapshots["snapshot_date"])
        # Leakage: only snapshots strictly before as_of exist at scoring time.
        eligible = (dates < as_of.value) & (codes >= 0)
        latest = _latest_rows(codes, dates, eligible, n)
        linked = eligible & snapshots["customer_id"].notna().to_numpy()
        owner = _latest_rows(codes, dates, linked, n)
        first = _first_rows(codes, eligible, n)
        profile_code = np.flatnonzero(latest >= 0)
        profile_code = profile_code[np.argsort(first[profile_code], kind="stable")]
        return cls(codes, eligible, dates, n, latest[profile_code], owner[profile_code], profile_code)

    def frame(self, snapshots: pd.DataFrame, lookback_days: tuple[int, ...]) -> pd.DataFrame:
        metrics = ["network", "snapshot_date", "followers", "following", "posts", "engagements"]
        if "influence_score" in snapshots.columns:
            metrics.append("influence_score")
        out = snapshots[metrics].iloc[self.latest]
        out.index = pd.Index(snapshots["profile_id"].array.take(self.latest), name="profile_id")
        owners = snapshots["customer_id"].iloc[np.maximum(self.owner, 0)].where(self.owner >= 0)
        out.insert(0, "customer_id", owners.array)
        self.add_lookbacks(out, snapshots, lookback_days)
        return out

    def add_lookbacks(self, out: pd.DataFrame, snapshots: pd.DataFrame, lookback_days: tuple[int, ...]) -> None:
        """Columns followers_{d}d_before (profile_snapshots) added to a frame of these rows."""
        if not lookback_days:
            return
        followers = snapshots["followers"].to_numpy("float64")
        latest_date = np.full(self.n, np.iinfo(np.int64).max)
        latest_date[self.profile_code] = self.dates[self.latest]
        for d in lookback_days:
            cutoff = latest_date - pd.Timedelta(days=d).value
            reference = _latest_rows(self.codes, self.dates, self.eligible, self.n,
                                     cutoff)[self.profile_code]
            out[f"followers_{d}d_before"] = np.where(reference >= 0, followers[reference], np.nan)


def _latest_rows(codes: np.ndarray, dates: np.ndarray, eligible: np.ndarray, n_groups: int,
                 cutoff: np.ndarray | None = None) -> np.ndarray:
    """Row position of each group's latest eligible row (-1 if none); the later row wins a date tie.

    ``cutoff`` (per group) keeps only rows dated at or before it. One compiled pass (numba) over
    the rows: the two scatter-max passes it replaced copied the eligible codes and dates, 0.7 GB
    at 61M snapshots, for each of the four calls per cutoff.
    """
    rows = np.full(n_groups, -1, dtype=np.int64)
    no_cutoff = np.empty(0, dtype=np.int64)
    _scan_latest(codes, dates, eligible, no_cutoff if cutoff is None else cutoff, rows)
    return rows


@numba.njit(nogil=True, cache=True)
def _scan_latest(codes, dates, eligible, cutoff, rows):
    has_cutoff = len(cutoff) > 0
    latest = np.full(len(rows), np.iinfo(np.int64).min)
    for i in range(len(codes)):
        if not eligible[i]:
            continue
        c = codes[i]
        if has_cutoff and dates[i] > cutoff[c]:
            continue
        if dates[i] >= latest[c]:  # rows come in order: the later of equal dates wins
            latest[c] = dates[i]
            rows[c] = i


@numba.njit(nogil=True, cache=True)
def _first_rows(codes, eligible, n_groups):
    """Row position of each group's first eligible row (the row count if none)."""
    first = np.full(n_groups, len(codes), dtype=np.int64)
    for i in range(len(codes) - 1, -1, -1):
        if eligible[i]:
            first[codes[i]] = i
    return first


def customer_profiles(
    tables: Tables, as_of: pd.Timestamp, lookback_days: tuple[int, ...] = ()
) -> pd.DataFrame:
    """latest_profiles of the profiles owned by a customer (empty when there is no table)."""
    if tables.social_profiles is None:
        return pd.DataFrame(
            columns=["customer_id"], index=pd.Index([], dtype="str", name="profile_id")
        )
    profiles, _ = latest_profiles(tables, as_of, lookback_days)
    return profiles.loc[profiles["customer_id"].notna().to_numpy()]


def customer_codes(customer_ids: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer code of each row's customer and the sorted customer_id index the codes point into.

    Aggregating with np.bincount on these codes hashes the ids once instead of once per groupby.
    Ids of one prefix and a fixed number of digits sort as the numbers they spell, so those are
    numbered by sorting integers (features.digit_ids) instead of hashing and comparing strings.
    """
    arrays = arrow_chunks(customer_ids)
    numbers = None if arrays is None else fixed_width_numbers(arrays)
    if numbers is not None:
        _, first, codes = np.unique(numbers, return_index=True, return_inverse=True)
        return codes, pd.Index(customer_ids.array.take(first), dtype="str", name="customer_id")
    codes, customers = pd.factorize(customer_ids, sort=True)
    return codes, pd.Index(customers, dtype="str", name="customer_id")


def compile_kernels() -> None:
    """Compile the kernels into numba's cache (beside this file); ``make install`` runs it."""
    for codes in (np.zeros(1, np.int32), np.zeros(1, np.int64)):  # ProfileCodes, factorize_ids
        _latest_rows(codes, np.zeros(1, np.int64), np.ones(1, bool), 1)
        _latest_rows(codes, np.zeros(1, np.int64), np.ones(1, bool), 1, np.zeros(1, np.int64))
        _first_rows(codes, np.ones(1, bool), 1)


if __name__ == "__main__":
    compile_kernels()
