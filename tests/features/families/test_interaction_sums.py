"""Specification of features.families.interaction_sums: the same sums however the interactions arrive.

The batch scorer streams the interactions in batches and keeps the graph's edges in files grouped
by target; training adds the whole table at once. Both must give the same features.
"""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.families import interaction_sums
from features.families.interaction_sums import TOPIC_COUNTS, InteractionSums

AS_OF = pd.Timestamp("2026-01-01")
DAY_NS = pd.Timedelta(days=1).value


@st.composite
def interactions(draw):
    """n profile codes, some with snapshots, and interaction rows between them (some unusable)."""
    n = draw(st.integers(1, 12))
    rows = draw(st.integers(0, 60))
    code = st.integers(-1, n - 1)  # -1: an end that is not a known profile
    return {
        "n": n,
        "profiles": np.array(draw(st.lists(st.integers(0, n - 1), max_size=n)), dtype=np.int64),
        "source": np.array(draw(st.lists(code, min_size=rows, max_size=rows)), dtype=np.int32),
        "target": np.array(draw(st.lists(code, min_size=rows, max_size=rows)), dtype=np.int32),
        # days before as_of; <= 0 is on or after as_of (must be skipped)
        "timestamp_ns": AS_OF.value - np.array(
            draw(st.lists(st.integers(-3, 400), min_size=rows, max_size=rows)), dtype=np.int64) * DAY_NS,
        "kind_in_graph": np.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)), dtype=bool),
        "topic_known": np.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)), dtype=bool),
        "on_topic": np.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)), dtype=bool),
    }


def summed(world, *, batches=1, blocks=1, spill=None) -> InteractionSums:
    sums = InteractionSums(world["n"], AS_OF, 30.0, topics=True, blocks=blocks, spill=spill)
    sums.add_profiles(world["profiles"])
    columns = ("source", "target", "timestamp_ns", "kind_in_graph", "topic_known", "on_topic")
    for rows in np.array_split(np.arange(len(world["source"])), batches):
        sums.add(*(world[c][rows] for c in columns))
    return sums


@settings(max_examples=60, deadline=None)
@given(world=interactions(), blocks=st.integers(2, 5))
def test_edges_grouped_by_target_and_spilled_to_files_change_nothing(world, blocks, tmp_path_factory):
    whole = summed(world).centrality(0.85)
    spill = tmp_path_factory.mktemp("spill")
    grouped = summed(world, blocks=blocks, spill=spill).centrality(0.85)
    for name, values in whole.items():
        np.testing.assert_array_equal(grouped[name], values, err_msg=name)  # bit for bit
    assert not list(spill.iterdir()), "the edge files are deleted once read"


@settings(max_examples=60, deadline=None)
@given(world=interactions(), batches=st.integers(2, 6))
def test_batches_give_the_sums_of_the_whole_table(world, batches):
    whole, streamed = summed(world), summed(world, batches=batches, blocks=3)
    for name in TOPIC_COUNTS:
        np.testing.assert_array_equal(streamed.counts[name], whole.counts[name], err_msg=name)
    np.testing.assert_array_equal(streamed.vertex, whole.vertex)
    # Sums of floats in another order: equal to rounding.
    for name, values in whole.centrality(0.85).items():
        np.testing.assert_allclose(streamed.centrality(0.85)[name], values, rtol=1e-9, err_msg=name)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 20), batches=st.lists(st.lists(st.tuples(
    st.integers(0, 19), st.one_of(st.just(0.0), st.floats(0, 1e6), st.floats(0, 1e-300))), max_size=40),
    max_size=5), dtype=st.sampled_from([np.int32, np.int64]))
def test_batch_sums_add_what_a_bincount_adds_bit_for_bit(n, batches, dtype):
    """add_batch_sums is `total += np.bincount(index, weights, minlength=n)`, batch after batch,
    to the last bit (zero weights and sums included), and leaves its scratch all zero."""
    by_bincount, by_kernel, scratch = np.zeros(n), np.zeros(n), np.zeros(n)
    for rows in batches:
        index = np.array([i % n for i, _ in rows], dtype=dtype)
        weights = np.array([w for _, w in rows], dtype=np.float64)
        by_bincount += np.bincount(index, weights=weights, minlength=n)
        interaction_sums.add_batch_sums(by_kernel, index, weights, scratch)
        assert by_kernel.view(np.int64).tolist() == by_bincount.view(np.int64).tolist()
        assert not scratch.any()


def test_unusable_rows_count_for_nothing():
    """Interactions on or after as_of, or with an unknown end, are not seen at all."""
    world = {
        "n": 2, "profiles": np.array([0, 1]),
        "source": np.array([0, -1, 0], dtype=np.int32), "target": np.array([1, 1, 1], dtype=np.int32),
        "timestamp_ns": np.array([AS_OF.value, AS_OF.value - DAY_NS, AS_OF.value + DAY_NS]),
        "kind_in_graph": np.ones(3, dtype=bool), "topic_known": np.ones(3, dtype=bool),
        "on_topic": np.ones(3, dtype=bool),
    }
    sums = summed(world)
    assert sums.in_weight.tolist() == [0.0, 0.0]
    assert all(c.tolist() == [0, 0] for c in sums.counts.values())
    np.testing.assert_allclose(sums.centrality(0.85)["pagerank"], [1.0, 1.0])


def test_centrality_is_computed_once():
    world = {"n": 2, "profiles": np.array([0, 1]), "source": np.array([0], dtype=np.int32),
             "target": np.array([1], dtype=np.int32), "timestamp_ns": np.array([AS_OF.value - DAY_NS]),
             "kind_in_graph": np.array([True]), "topic_known": np.array([True]), "on_topic": np.array([True])}
    sums = summed(world)
    first = sums.centrality(0.85)
    assert sums.centrality(0.85) is first
    with pytest.raises(ValueError, match="another damping"):  # the edges are consumed
        sums.centrality(0.5)


@settings(max_examples=30, deadline=None)
@given(world=interactions())
def test_topic_counts_are_int32_until_the_rows_counted_could_overflow_it_then_int64(world):
    """The counts are held as int32 (half the memory per profile); past COUNT_INT32_ROWS counted rows
    they are widened to int64, with the same integers as never widened."""
    narrow = summed(world, batches=3)
    assert all(c.dtype == np.int32 for c in narrow.counts.values())
    with pytest.MonkeyPatch.context() as patch:  # a lower limit, so small worlds pass it
        patch.setattr(interaction_sums, "COUNT_INT32_ROWS", len(world["source"]) // 2)
        widened = summed(world, batches=3)
    usable = (world["timestamp_ns"] < AS_OF.value) & (world["source"] >= 0) & (world["target"] >= 0)
    if usable.sum() > len(world["source"]) // 2:  # more rows counted than the lowered limit
        assert all(c.dtype == np.int64 for c in widened.counts.values())
    for name in TOPIC_COUNTS:
        np.testing.assert_array_equal(widened.counts[name], narrow.counts[name], err_msg=name)


def test_centrality_lets_go_of_what_only_the_matrix_needed():
    """out_weight and topic_activity are consumed with the edges (the matrix and the jump weights
    hold them); in_weight stays, and a second call still returns the first result."""
    world = {"n": 3, "profiles": np.array([0, 1, 2]), "source": np.array([0, 1], dtype=np.int32),
             "target": np.array([1, 2], dtype=np.int32),
             "timestamp_ns": np.array([AS_OF.value - DAY_NS, AS_OF.value - 2 * DAY_NS]),
             "kind_in_graph": np.array([True, True]), "topic_known": np.array([True, True]),
             "on_topic": np.array([True, False])}
    sums = summed(world)
    first = sums.centrality(0.85)
    assert sums.out_weight is None and sums.topic_activity is None
    assert sums.in_weight[1] > 0
    assert sums.centrality(0.85) is first
    assert np.isfinite(first["topic_pagerank"]).all()
