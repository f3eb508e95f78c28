"""Per-profile sums over the interactions before a cutoff, added batch by batch.

Of millions of interaction rows, the network and topical families need only a few numbers per
profile (decayed mentions, shares and replies received and sent; counts of on-topic interactions)
and the graph's edges. ``InteractionSums`` collects exactly those from batches of rows: the
whole-table families add the table as one batch, and the batch scorer streams the interactions
through it without ever holding them (the edges can wait in files, grouped by target profile, and
the transition matrix is then built one group of rows at a time). One code path for both, so
training and scoring compute the same features.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.encoding import timestamps_ns
from features.families.column_blocks import ColumnBlocks
from features.families.pagerank import stationary_distribution, transition_rows
from features.families.profiles import (
    interactions_before,
    latest_profiles,
    on_market_topic,
    profile_codes,
)
from features.tables import Tables

# Being mentioned, shared or replied to costs the author effort and signals attention. Likes are
# left out: they are one click, cheap to buy and to automate, and would swamp the other kinds.
GRAPH_KINDS = ("mention", "share", "reply")
RECENT_DAYS = 90  # the topical family's recent window
# Per profile: interactions made or received whose topic is known / is a market topic, over all
# time before as_of and over the RECENT_DAYS before it.
TOPIC_COUNTS = ("known", "on_topic", "known_90d", "on_topic_90d")
# Those counts are int32 (half the memory of int64 per profile) until more rows than this have been
# counted; then int64. The values are the same integers either way.
COUNT_INT32_ROWS = np.iinfo(np.int32).max

_DAY = pd.Timedelta(days=1)


def interaction_weights(
    timestamp_ns: np.ndarray, as_of: pd.Timestamp, half_life_days: float
) -> np.ndarray:
    """0.5 ** (age in days / half-life): a recent interaction counts more than an old one."""
    age_days = (as_of.value - timestamp_ns) / _DAY.value
    return np.power(0.5, age_days / half_life_days)


def normalised_topics(market_topics) -> tuple[str, ...]:
    """Market topics as the families compare them: trimmed, lower case, sorted, each once."""
    return tuple(sorted({t.strip().lower() for t in market_topics}))


def interaction_flags(interactions: pd.DataFrame, topics: tuple[str, ...]):
    """Per interaction row: whether its kind is one of GRAPH_KINDS, and (when market ``topics`` are
    given and the rows carry a topic) whether its topic is known and whether it is a market topic."""
    in_graph = interactions["kind"].isin(GRAPH_KINDS).to_numpy()
    if not topics or "topic" not in interactions.columns:
        return in_graph, None, None
    return in_graph, interactions["topic"].notna().to_numpy(), on_market_topic(interactions["topic"], topics)


class InteractionSums:
    """Sums over interactions dated before ``as_of``, per profile code 0..n-1.

    ``topics``: whether market topics are configured and the interactions carry a topic (else the
    topic sums are not kept). ``blocks``: the graph's edges are grouped into this many ranges of
    target code, each turned into its rows of the transition matrix on its own; ``spill``: a
    directory where they wait in files instead of memory. Neither changes any result.
    """

    def __init__(self, n: int, as_of: pd.Timestamp, half_life_days: float, *, topics: bool,
                 blocks: int = 1, spill: Path | None = None):
        self.n, self.as_of, self.half_life_days, self.topics = n, as_of, half_life_days, topics
        self.vertex = np.zeros(n, dtype=bool)  # a snapshot or a graph interaction before as_of
        self.in_weight = np.zeros(n)  # decayed graph interactions received (self ones excluded)
        self.out_weight = np.zeros(n)  # ... and made
        # decayed market-topic graph interactions made or received: topic PageRank's jump weights
        self.topic_activity = np.zeros(n) if topics else None
        # int32 while no count can pass it (4 bytes a profile each, not 8): widened when it could
        self.counts = {name: np.zeros(n, dtype=np.int32) for name in TOPIC_COUNTS} if topics else None
        self._batch_sums: np.ndarray | None = None  # add_batch_sums' scratch (all zero between calls)
        self._counted = 0  # rows counted so far: no profile's count can exceed it
        self.edges = _EdgeGroups(n, blocks, spill)
        self._centrality: tuple[float, dict] | None = None

    def add_profiles(self, codes: np.ndarray) -> None:
        """Profiles with a snapshot before as_of: graph vertices even without interactions."""
        self.vertex[codes] = True

    def add(self, source: np.ndarray, target: np.ndarray, timestamp_ns: np.ndarray, kind_in_graph: np.ndarray,
            topic_known: np.ndarray | None = None, on_topic: np.ndarray | None = None) -> None:
        """A batch of interactions: profile codes of both ends (-1 = unknown), int64 ns timestamps,
        whether the kind is a GRAPH_KINDS one, and (when ``topics``) whether the topic is known and
        a market topic. Rows on or after as_of or with an unknown end are skipped (leakage)."""
        usable = (timestamp_ns < self.as_of.value) & (source >= 0) & (target >= 0)
        if not usable.all():
            source, target, timestamp_ns, kind_in_graph = (
                a[usable] for a in (source, target, timestamp_ns, kind_in_graph))
            if self.topics:
                topic_known, on_topic = topic_known[usable], on_topic[usable]
        n = self.n
        self.vertex[source[kind_in_graph]] = True
        self.vertex[target[kind_in_graph]] = True
        if self.topics:
            self._count_topics(source, target, timestamp_ns, topic_known, on_topic)

        # Self-mentions are self-promotion, not influence.
        keep = kind_in_graph & (source != target)
        weight = interaction_weights(timestamp_ns[keep], self.as_of, self.half_life_days)
        source, target = source[keep], target[keep]
        # Each sum adds the batch's sums per profile, as `+= np.bincount(..., minlength=n)` does, but
        # touching only the batch's profiles: a bincount costs n per batch, so streamed batches
        # (their number grows with the base, like n) cost n squared (14.6 s at 4M customers).
        if self._batch_sums is None:
            self._batch_sums = np.zeros(n)
        scratch = self._batch_sums
        add_batch_sums(self.in_weight, target, weight, scratch)
        add_batch_sums(self.out_weight, source, weight, scratch)
        if self.topics:
            topic_weight = weight * on_topic[keep]
            add_batch_sums(self.topic_activity, source, topic_weight, scratch)
            add_batch_sums(self.topic_activity, target, topic_weight, scratch)
        self.edges.add(source, target, weight)

    def add_frame(self, interactions: pd.DataFrame, source: np.ndarray, target: np.ndarray,
                  topics: tuple[str, ...]) -> None:
        """A batch of checked interaction rows with the profile codes of both ends (-1 = unknown);
        ``topics``: the market topics (normalised, as InteractionSums counts them)."""
        in_graph, known, on_topic = interaction_flags(interactions, topics if self.topics else ())
        self.add(source, target, timestamps_ns(interactions["timestamp"]), in_graph, known, on_topic)

    def _count_topics(self, source, target, timestamp_ns, topic_known, on_topic) -> None:
        # Each interaction counts for its author and its target; with itself on both ends, once.
        # So no profile counts more than the rows seen, and int32 counts hold until they pass it.
        self._counted += len(source)
        if self._counted > COUNT_INT32_ROWS and self.counts["known"].dtype != np.int64:
            self.counts = {name: values.astype(np.int64) for name, values in self.counts.items()}
        recent = (self.as_of - pd.Timedelta(days=RECENT_DAYS)).value
        # One compiled pass counts every flag (integer counts: the order of additions is moot);
        # masking and bincounting each flag copied the codes 8 times, 2 GB at 4M customers.
        _count_flags(source, target, timestamp_ns, topic_known, on_topic, np.int64(recent),
                     *(self.counts[name] for name in TOPIC_COUNTS))

    def centrality(self, damping: float) -> dict[str, np.ndarray]:
        """Per profile code: ``pagerank`` and ``topic_pagerank`` (x number of vertices, so 1 is the
        average) and ``weighted_in_degree``; NaN for codes that are not vertices, and topic_pagerank
        NaN everywhere when no market-topic graph interaction exists.

        Vertices are numbered in code order. topic_pagerank (after TwitterRank) jumps to profiles
        in proportion to their topic_activity; dangling profiles jump by it too. The edges are
        consumed by the first call, and with them out_weight and topic_activity (set to None: the
        matrix and the jump weights hold what they had); later calls with the same damping return
        the first call's result.
        """
        if self._centrality is not None:
            if self._centrality[0] != damping:
                raise ValueError("centrality was computed with another damping; the edges are gone")
            return self._centrality[1]
        self._batch_sums = None  # no batch comes after: not held through PageRank
        nv = int(np.count_nonzero(self.vertex))
        reset = self._topic_reset()
        transition = self._transition()
        # The plain and the topic PageRank are independent power iterations over one matrix: they
        # run side by side (scipy's sparse product and numpy's reductions release the GIL), each
        # doing exactly what it would do alone.
        with ThreadPoolExecutor(max_workers=2) as pool:
            plain = pool.submit(stationary_distribution, transition, damping)
            topic = None if reset is None else pool.submit(stationary_distribution, transition, damping, reset)
            plain, topic = plain.result(), None if topic is None else topic.result()
        # The matrix and the jump weights go before the outputs are made: they are not held together.
        del transition, reset
        out = {"weighted_in_degree": self._per_code(self.in_weight[self.vertex]),
               "pagerank": self._per_code(np.multiply(plain, nv, out=plain))}
        del plain
        if topic is not None:
            out["topic_pagerank"] = self._per_code(np.multiply(topic, nv, out=topic))
        else:
            out["topic_pagerank"] = np.full(self.n, np.nan)
        self._centrality = (damping, out)
        return out

    def _topic_reset(self) -> np.ndarray | None:
        """topic PageRank's jump distribution over the vertices (None: no market topics, or no
        activity); topic_activity is released once it is taken."""
        if not self.topics:
            return None
        activity = self.topic_activity[self.vertex]  # vertices in code order, as np.flatnonzero gives them
        self.topic_activity = None
        total = activity.sum()
        if not total > 0:
            return None
        np.divide(activity, total, out=activity)  # in place: the same quotients as activity / total
        return activity

    def _transition(self) -> list[ColumnBlocks]:
        """The transition matrix over the vertices, as blocks of rows (one per edge group, each
        regrouped by column blocks for the products), from the edges, which are consumed;
        out_weight is released once the vertices' copy is taken.

        Vertex numbers are int32 from the start (no int64 copy of every edge's ends to narrow): codes
        already are, so the number of profiles is below 2**31.
        """
        out_weight = self.out_weight[self.vertex]
        self.out_weight = None
        # below[c]: the number of vertices with a code below c, i.e. the vertex number of code c
        below = np.zeros(self.n + 1, dtype=np.int32)
        np.cumsum(self.vertex, dtype=np.int32, out=below[1:])
        blocks = []
        for start, stop, source, target, weight in self.edges.groups():
            source, target = below[source], below[target]
            rows = transition_rows(int(below[start]), int(below[stop]), source, target, weight, out_weight)
            del source, target, weight
            # regrouped once here for both PageRanks; the CSR goes before the next group is built
            blocks.append(ColumnBlocks.from_csr(rows))
            del rows
        return blocks

    def _per_code(self, values: np.ndarray) -> np.ndarray:
        """``values`` of the vertices (in code order) spread to every profile code, NaN elsewhere."""
        out = np.full(self.n, np.nan)
        out[self.vertex] = values
        return out


class _EdgeGroups:
    """Graph edges (source and target code, weight) grouped by ranges of target code, in order of
    arrival within each group: in memory, or appended to three files per group under ``spill``."""

    _PARTS = (("source", np.int32), ("target", np.int32), ("weight", np.float64))

    def __init__(self, n: int, groups: int, spill: Path | None):
        self.bounds = np.linspace(0, n, max(1, int(groups)) + 1).round().astype(np.int64)
        self.spill = spill
        self.held: list[list[list[np.ndarray]]] = [[] for _ in range(len(self.bounds) - 1)]
        if spill is not None:
            spill.mkdir(parents=True, exist_ok=True)

    def _path(self, group: int, part: str) -> Path:
        return self.spill / f"edges-{group:04d}.{part}"

    def add(self, source: np.ndarray, target: np.ndarray, weight: np.ndarray) -> None:
        if len(self.held) == 1:
            parts = [(0, source, target, weight)]
        else:
            group = np.searchsorted(self.bounds, target, side="right") - 1
            order = np.argsort(group, kind="stable")  # arrival order kept within each group
            cuts = np.searchsorted(group[order], np.arange(len(self.held) + 1))
            parts = [(g, *(a[order[cuts[g]:cuts[g + 1]]] for a in (source, target, weight)))
                     for g in range(len(self.held)) if cuts[g + 1] > cuts[g]]
        for g, s, t, w in parts:
            arrays = [a.astype(dtype, copy=False) for a, (_, dtype) in zip((s, t, w), self._PARTS, strict=True)]
            if self.spill is None:
                self.held[g].append(arrays)
            else:
                for array, (part, _) in zip(arrays, self._PARTS, strict=True):
                    with open(self._path(g, part), "ab") as fh:
                        array.tofile(fh)

    def groups(self):
        """(first code, code after the last, source, target, weight) per group, in code order;
        each group's edges are released (or its files deleted) once the next one is asked for."""
        for g in range(len(self.held)):
            if self.spill is None:
                held, self.held[g] = self.held[g], []
                arrays = [np.concatenate([h[i] for h in held]) if held else np.array([], dtype=dtype)
                          for i, (_, dtype) in enumerate(self._PARTS)]
                del held
            else:
                arrays = []
                for part, dtype in self._PARTS:
                    path = self._path(g, part)
                    arrays.append(np.fromfile(path, dtype=dtype) if path.exists() else np.array([], dtype=dtype))
                    path.unlink(missing_ok=True)
            yield (int(self.bounds[g]), int(self.bounds[g + 1]), *arrays)


@numba.njit(nogil=True, cache=True)
def add_batch_sums(total, index, weights, scratch):
    """``total += np.bincount(index, weights, minlength=len(total))``, bit for bit, in time of the
    batch only: the batch's sum per index (in row order, as bincount adds) is built in ``scratch``
    (zeros of len(total)), added to ``total`` once per index, and zeroed again.

    For weights that are not negative: an index whose batch sum is exactly 0.0 is left alone, which
    is what adding bincount's +0.0 does to a total that is not -0.0 (sums of such weights never are).
    """
    for i in range(len(index)):
        scratch[index[i]] += weights[i]
    for i in range(len(index)):
        j = index[i]
        if scratch[j] != 0.0:
            total[j] += scratch[j]
            scratch[j] = 0.0


@numba.njit(nogil=True, cache=True)
def _count_flags(source, target, timestamp_ns, topic_known, on_topic, recent, known, on_topic_count,
                 known_90d, on_topic_90d):
    """Add each row to its author's and (when another profile) its target's counts of the flags
    it carries: topic known, market topic, and both within the recent days."""
    for i in range(len(source)):
        s, t = source[i], target[i]
        is_recent = timestamp_ns[i] >= recent
        if topic_known[i]:
            _count_row(known, s, t)
            if is_recent:
                _count_row(known_90d, s, t)
        if on_topic[i]:
            _count_row(on_topic_count, s, t)
            if is_recent:
                _count_row(on_topic_90d, s, t)


@numba.njit(nogil=True, cache=True, inline="always")
def _count_row(counts, source, target):
    counts[source] += 1
    if target != source:
        counts[target] += 1


def interaction_sums(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> InteractionSums:
    """InteractionSums of a whole interactions table, added as one batch (memoised per Tables,
    cutoff and config): the network and topical families share one pass over the rows."""
    topics = normalised_topics(config.market_topics)

    def compute() -> InteractionSums:
        frame = tables.social_interactions
        has_topics = bool(topics) and "topic" in frame.columns
        sums = InteractionSums(profile_codes(tables).n, as_of, config.interaction_half_life_days,
                               topics=has_topics)
        sums.add_profiles(latest_profiles(tables, as_of)[1])
        inter = interactions_before(tables, as_of)
        in_graph, known, on_topic = interaction_flags(frame, topics if has_topics else ())
        sums.add(inter.source, inter.target, inter.timestamp_ns, in_graph[inter.rows],
                 None if known is None else known[inter.rows],
                 None if on_topic is None else on_topic[inter.rows])
        return sums

    key = ("interaction_sums", topics, config.interaction_half_life_days)
    return tables.derived(key, compute, as_of=as_of)


def compile_kernels() -> None:
    """Compile the kernels into numba's cache (beside this file); ``make install`` runs it."""
    for dtype in (np.int32, np.int64):  # counts widen to int64 past COUNT_INT32_ROWS
        one, counts = np.zeros(1, np.int32), [np.zeros(1, dtype) for _ in TOPIC_COUNTS]
        _count_flags(one, one, np.zeros(1, np.int64), np.ones(1, bool), np.ones(1, bool),
                     np.int64(0), *counts)
    for dtype in (np.int32, np.int64):  # profile codes; whole tables may number them in int64
        add_batch_sums(np.zeros(1), np.zeros(1, dtype), np.ones(1), np.zeros(1))


if __name__ == "__main__":
    compile_kernels()
