"""The population-wide families (referral, network, topical) computed from batches of the whole base.

A customer's values in these families depend on other customers' rows (whom they referred and what
those customers spent; the interaction graph; the buy-till-you-die models fitted over every buyer),
so an engine that never holds a whole table (the chunked scorer, the Dask engine) cannot build them
chunk by chunk. It feeds ``PopulationFeatures`` instead, in this order: the referrals, each chunk's
customers with their transactions (or at least the referred customers'), each chunk's purchase
summary, every profile's latest snapshot, then the interactions in batches. The families' own
accumulators do the work (ReferralSums, BtydSums, InteractionSums), so the numbers are the
whole-table build's; ``precomputed`` turns the results into the frames
``build_features(..., precomputed=...)`` joins to each chunk.

Profiles are numbered by their position in the run's set of valid profile ids (an IdSet), so a
batch of interactions costs time in proportion to its own rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.build import FAMILIES
from features.catalog import empty_features
from features.config import FeatureConfig
from features.encoding import arrow_text, text_codes
from features.families.btyd import BtydFit, BtydSums
from features.families.interaction_sums import TOPIC_COUNTS, InteractionSums, normalised_topics
from features.families.network import FEATURES as NETWORK_FEATURES
from features.families.network import network_by_customer
from features.families.referral import ReferralSums
from features.families.topical import FEATURES as TOPICAL_FEATURES
from features.families.topical import topical_by_customer
from features.ingest.id_sets import IdSet
from features.ingest.parsing import PARSERS
from features.ingest.partition import bucket_of

POPULATION_FAMILIES = tuple(f.name for f in FAMILIES if f.population_wide)
SOCIAL_GRAPH_FAMILIES = ("network", "topical")  # the population-wide families fed by interactions
ENDS = ("source_profile_id", "target_profile_id")
_EMPTY = {"network": NETWORK_FEATURES, "topical": TOPICAL_FEATURES}


class PopulationFeatures:
    """The population-wide families among ``families`` as of ``as_of``, fed in batches.

    profiles: every valid profile id of the source (None without a social_profiles table).
    interactions: whether the source has a social_interactions table (even one without rows).
    graph_groups / spill: the interaction graph's edges are grouped into this many ranges of
    profiles, and wait in files under ``spill`` until the transition matrix is built
    (InteractionSums); neither changes a number.
    """

    def __init__(self, as_of: pd.Timestamp, config: FeatureConfig, families, *,
                 profiles: IdSet | None = None, interactions: bool = False, graph_groups: int = 1,
                 spill: Path | None = None):
        self.as_of, self.config = as_of, config
        self.families = tuple(name for name in POPULATION_FAMILIES if name in set(families))
        self.referrals = ReferralSums(as_of) if "referral" in self.families else None
        self.btyd = BtydSums(as_of) if "btyd" in self.families else None
        self.graph = [name for name in SOCIAL_GRAPH_FAMILIES if name in self.families]
        self.profiles = profiles
        self.topics = normalised_topics(config.market_topics)
        self._graph_groups, self._spill = graph_groups, spill
        self._vertices: list[np.ndarray] = []
        self._sums: InteractionSums | None = None
        # Without both social tables the graph families have no rows (as in the whole-table build).
        self._social_data = profiles is not None and interactions

    # ------------------------------------------------------------------ referral inputs

    def add_referrals(self, referrals: pd.DataFrame | None) -> None:
        """The checked referrals table (None: the source has none, so referral features are unknown)."""
        if self.referrals is not None:
            self.referrals.add_referrals(referrals)

    def add_customers(self, customers: pd.DataFrame, transactions: pd.DataFrame) -> None:
        """A chunk's customers (customer_id, signup_date) and every transaction of theirs (or at
        least every one of the customers the referrals name as referred)."""
        if self.referrals is not None:
            self.referrals.add_customers(customers, transactions)

    def add_purchase_summary(self, summary: pd.DataFrame) -> None:
        """A chunk's features.families.btyd.purchase_summary (all of its customers)."""
        if self.btyd is not None:
            self.btyd.add(summary)

    # ------------------------------------------------------------------ social inputs

    def add_latest_profiles(self, profile_ids) -> np.ndarray:
        """Profiles with a snapshot before as_of (graph vertices even without interactions); returns
        their codes, which index profile_values."""
        if self.profiles is None:
            raise ValueError("latest profiles given to a run without a profile set")
        codes = _codes(self.profiles, profile_ids)
        if (codes < 0).any():
            raise ValueError("a latest snapshot's profile is missing from the run's profile set")
        self._vertices.append(codes)
        return codes

    def add_interactions(self, interactions: pd.DataFrame, mentioned: pa.Array | None = None,
                         positions: np.ndarray | None = None,
                         codes: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """A checked batch of interactions. ``mentioned`` (distinct ids covering the batch's ends)
        and their ``positions`` in the profile set may be passed when already known, or the rows'
        (source, target) ``codes`` themselves (EndCodes.kept)."""
        if not self.graph or not self._social_data:
            return
        sums = self._start("topic" in interactions.columns)
        if codes is not None:
            source, target = codes
            if len(source) != len(interactions) or len(target) != len(interactions):
                raise ValueError("the codes given are not those of the interaction rows")
        else:
            if mentioned is None:
                mentioned = pa.array(pd.concat([interactions[c] for c in ENDS]).dropna().unique(), type=pa.string())
                positions = self.profiles.positions(mentioned)
            source, target = profile_positions(interactions, mentioned, positions)
        sums.add_frame(interactions, source, target, self.topics)

    def profile_values(self) -> dict[str, np.ndarray]:
        """Per profile code: the network family's centrality and the topical family's counts (only
        the families asked for and computable), read once the last interaction is in. The profile
        set is let go: no profile or interaction can be added after."""
        if not self.graph or not self._social_data:
            return {}
        sums = self._start(False)
        # Every code is given: the profile set (millions of ids and their hashes) is not held through
        # PageRank, whose matrix and vectors set the scorer's peak (docs/performance.md, Scoring).
        self.profiles = None
        values = dict(sums.centrality(self.config.pagerank_damping)) if "network" in self.graph else {}
        if "topical" in self.graph and sums.topics:
            values.update(sums.counts)
        self._sums = None  # the edges are consumed; the sums are no longer needed
        return values

    # ------------------------------------------------------------------ results

    def referral_frame(self) -> pd.DataFrame | None:
        """The referral family's frame over the customers whose rows differ from its fill (None when
        the family was not asked for)."""
        return None if self.referrals is None else self.referrals.finish(self.config)

    def btyd_frame(self) -> pd.DataFrame | None:
        """The btyd family's frame over every summarised customer (None when not asked for)."""
        return None if self.btyd is None else self.btyd.finish(self.config)

    def btyd_fit(self) -> BtydFit | None:
        """The btyd family's fit over every summarised customer, for an engine that applies it to
        each chunk's summary with btyd_predictions (None when not asked for)."""
        return None if self.btyd is None else self.btyd.fitted(self.config)

    def social_frames(self, owned: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
        """The network and topical frames of the customers owning the profiles in ``owned``: one row
        per owned profile with customer_id (the owner), engagements and followers (latest snapshot)
        and the profile's profile_values. A chunk's owned profiles give that chunk's customers' rows."""
        out = {}
        computable = self._social_data and owned is not None and len(owned)
        for name in self.graph:
            if not computable or (name == "topical" and not all(c in owned for c in TOPIC_COUNTS)):
                out[name] = empty_features(_EMPTY[name])
                continue
            owners = owned["customer_id"].astype("str")
            if name == "network":
                out[name] = network_by_customer(
                    owners, {c: owned[c].to_numpy("float64") for c in NETWORK_FEATURES})
            else:
                out[name] = topical_by_customer(owners, owned["engagements"].to_numpy("float64"),
                                                owned["followers"].to_numpy("float64"),
                                                {c: owned[c].to_numpy("int64") for c in TOPIC_COUNTS})
        return out

    def _start(self, has_topic: bool) -> InteractionSums:
        if self._sums is None:
            self._sums = InteractionSums(
                len(self.profiles), self.as_of, self.config.interaction_half_life_days,
                topics=bool(self.topics) and has_topic, blocks=self._graph_groups, spill=self._spill)
            for codes in self._vertices:
                self._sums.add_profiles(codes)
        return self._sums


def precomputed(frames: dict[str, pd.DataFrame], as_of: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Population-wide frames as build_features takes them for a chunk: stamped with as_of, without
    the rows it rebuilds for a customer it has no row for (every value its fill, or NaN)."""
    out = {}
    for name, frame in frames.items():
        fill = {} if frame.attrs.get("unknown") else next(f.fill for f in FAMILIES if f.name == name)
        same = np.ones(len(frame), dtype=bool)
        for column in frame.columns:
            values = frame[column]
            numeric = pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype)
            if numeric and column in fill:
                same &= values.to_numpy(dtype="float64", na_value=np.nan) == fill[column]
            else:
                same &= values.isna().to_numpy()
        kept = frame.loc[~same]
        kept.attrs = {**frame.attrs, "as_of": str(as_of), "family": name}
        out[name] = kept
    return out


def split_by_bucket(frame: pd.DataFrame, buckets: int) -> list[pd.DataFrame]:
    """A family's frame over everyone cut into each bucket's customers' rows (by the stable hash of
    customer_id that partitions the engines' chunks), its attrs kept."""
    where = bucket_of(frame.index.to_series(), buckets)
    order = np.argsort(where, kind="stable")
    bounds = np.searchsorted(where[order], np.arange(buckets + 1))
    pieces = []
    for b in range(buckets):
        piece = frame.iloc[order[bounds[b]: bounds[b + 1]]]
        piece.attrs = dict(frame.attrs)
        pieces.append(piece)
    return pieces


class EndCodes:
    """Both ends of a batch of raw interactions as profile codes: positions in the run's profile
    set (IdSet), -1 where the id is missing or not in the set; each distinct id looked up once.

    One lookup serves the contract and the sums. check_table takes this object as
    ``known["profiles"]`` and asks known_rows for each end it checks (an id in the set or missing
    passes, exactly as with an Index of the known ids); add_interactions takes the kept rows' codes
    (kept). Before, the batch's distinct ids were found and looked up, then Arrow hashed them again
    for each end's check and once more for the sums: about 1.4 s of every 1M-row batch.
    """

    def __init__(self, profiles: IdSet, raw: pd.DataFrame):
        # Parsed as check_table parses them, so known_rows answers for the very values it checks.
        columns = [c for c in ENDS if c in raw.columns]
        parsed = [pa.array(PARSERS["id"](raw[c]).array).cast(pa.large_string()) for c in columns]
        distinct, size = text_codes(parsed)  # both ends in one vocabulary; -1 for a missing id
        present = np.flatnonzero(distinct >= 0)
        first = np.empty(size, dtype=np.int64)
        first[distinct[present]] = present  # a row holding each distinct id (any one will do)
        ids = pa.chunked_array(parsed, type=pa.large_string()).take(pa.array(first)).combine_chunks()
        lookup = np.append(profiles.positions(ids.cast(pa.string())), -1).astype(np.int32)
        codes = lookup[distinct]  # -1 (a missing id) takes the last entry, -1
        n = len(raw)
        self.rows = n
        self.codes = {c: codes[i * n: (i + 1) * n] for i, c in enumerate(columns)}

    def known_rows(self, ids: pd.Series) -> np.ndarray:
        """Which of ``ids`` have their id in the profile set or missing: ``ids`` is an end column as
        check_table's reference check gets it, parsed and indexed by row position in the batch
        (pandera passes only its present values)."""
        rows = ids.index.to_numpy()
        if ids.name not in self.codes or not pd.api.types.is_integer_dtype(rows.dtype) or (
                len(rows) and (rows.min() < 0 or rows.max() >= self.rows)):
            raise ValueError(f"no profile codes for the rows of a column {ids.name!r}")
        return (self.codes[ids.name][rows] >= 0) | ids.isna().to_numpy()

    def kept(self, rejected_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source, target) codes of the rows the check kept (every row but ``rejected_rows``,
        positions in the batch), in order: the rows of its ``typed`` frame."""
        keep = np.ones(self.rows, dtype=bool)
        keep[np.asarray(rejected_rows, dtype=np.int64)] = False
        return tuple(self.codes[c][keep] for c in ENDS)


def profile_positions(typed: pd.DataFrame, ids: pa.Array, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) int32 codes of a batch's rows (-1 where an id is missing or not in ``ids``).

    ``ids`` are distinct ids covering the batch's profile ids and ``positions`` their positions in
    the profile set (IdSet.positions), so no id is hashed twice.
    """
    lookup = np.append(positions, -1).astype(np.int32)
    # Both ends in one lookup: Arrow builds the hash table of ``ids`` once, not once per end.
    ends = pa.chunked_array([arrow_text(typed[name]) for name in ENDS], type=pa.large_string())
    index = pc.index_in(ends, value_set=ids.cast(pa.large_string())).fill_null(-1)
    codes = lookup[index.to_numpy()] if len(typed) else np.array([], dtype=np.int32)
    return codes[:len(typed)], codes[len(typed):]


def _codes(profiles: IdSet, profile_ids) -> np.ndarray:
    if isinstance(profile_ids, pa.ChunkedArray):
        profile_ids = profile_ids.combine_chunks()
    return profiles.positions(profile_ids).astype(np.int32)
