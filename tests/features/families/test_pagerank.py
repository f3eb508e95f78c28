"""Specification of features.families.pagerank: igraph's weighted (personalised) PageRank, from arrays."""

import itertools

import igraph
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.families.pagerank import (
    PageRankDidNotConverge,
    pagerank,
    stationary_distribution,
    transition_matrix,
    transition_rows,
)


def sorted_distinct_edges(n: int, pairs: list[tuple[int, int, float]]):
    """(source, target, weight) arrays: self-loops dropped, parallel edges summed, sorted."""
    merged: dict[tuple[int, int], float] = {}
    for s, t, w in pairs:
        if s != t:
            merged[(s, t)] = merged.get((s, t), 0.0) + w
    keys = sorted(merged)
    source = np.array([k[0] for k in keys], dtype=np.int32)
    target = np.array([k[1] for k in keys], dtype=np.int32)
    weight = np.array([merged[k] for k in keys], dtype="float64")
    return source, target, weight


def igraph_pagerank(n, source, target, weight, damping, reset=None):
    graph = igraph.Graph(n, list(zip(source.tolist(), target.tolist(), strict=True)), directed=True)
    if reset is None:
        return np.array(graph.pagerank(weights=weight.tolist(), damping=damping, directed=True))
    return np.array(
        graph.personalized_pagerank(
            weights=weight.tolist(), damping=damping, directed=True, reset=reset.tolist()
        )
    )


def test_a_dangling_hub_spreads_its_rank_uniformly():
    # Two leaves point at the hub, which points nowhere: p_leaf = 0.05 + 0.85 * p_hub / 3 and
    # p_hub = 1 - 2 p_leaf, so p_leaf = 1 / 4.7.
    scores = pagerank(3, np.array([0, 1]), np.array([2, 2]), np.array([1.0, 1.0]), 0.85)
    np.testing.assert_allclose(scores, [1 / 4.7, 1 / 4.7, 2.7 / 4.7], rtol=1e-12)


def test_a_cycle_gives_everyone_the_same_rank():
    scores = pagerank(3, np.array([0, 1, 2]), np.array([1, 2, 0]), np.array([1.0, 5.0, 0.1]), 0.85)
    np.testing.assert_allclose(scores, [1 / 3] * 3, rtol=1e-12)


def test_weights_split_a_vertex_rank_between_its_out_edges():
    # 0 -> 1 carries three times the weight of 0 -> 2, so 1 receives three times what 2 does.
    scores = pagerank(3, np.array([0, 0]), np.array([1, 2]), np.array([3.0, 1.0]), 0.85)
    assert scores[1] - scores[0] == pytest.approx(3 * (scores[2] - scores[0]), rel=1e-9)


def test_a_graph_without_edges_is_uniform_or_the_reset_vector():
    empty = np.array([], dtype=np.int32)
    np.testing.assert_allclose(pagerank(4, empty, empty, np.array([]), 0.85), [0.25] * 4)
    reset = np.array([0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(pagerank(4, empty, empty, np.array([]), 0.85, reset), reset)


def test_parallel_edges_in_any_order_count_as_one_edge_with_their_summed_weight():
    merged = pagerank(4, np.array([0, 0, 1, 3]), np.array([1, 2, 2, 0]), np.array([3.0, 1.0, 2.0, 1.0]), 0.85)
    # 0 -> 1 split into 1.0 + 2.0, 1 -> 2 into 0.5 + 1.5, everything shuffled.
    split = pagerank(
        4,
        np.array([1, 3, 0, 1, 0, 0]),
        np.array([2, 0, 1, 2, 2, 1]),
        np.array([1.5, 1.0, 2.0, 0.5, 1.0, 1.0]),
        0.85,
    )
    np.testing.assert_allclose(split, merged, rtol=1e-12)


def test_a_damping_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="damping"):
        pagerank(3, np.array([0]), np.array([1]), np.array([1.0]), 1.0)
    with pytest.raises(ValueError, match="damping"):
        stationary_distribution(transition_matrix(3, np.array([0]), np.array([1]), np.array([1.0])), -0.1)


def test_one_transition_matrix_serves_plain_and_personalised_pagerank():
    source, target, weight = np.array([0, 1, 2]), np.array([1, 2, 1]), np.array([1.0, 2.0, 3.0])
    transition = transition_matrix(3, source, target, weight)
    reset = np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(stationary_distribution(transition, 0.85),
                               pagerank(3, source, target, weight, 0.85), rtol=1e-15)
    np.testing.assert_allclose(stationary_distribution(transition, 0.85, reset),
                               pagerank(3, source, target, weight, 0.85, reset), rtol=1e-15)


@settings(max_examples=50, deadline=None)
@given(edges=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9), st.floats(0.1, 5.0)), max_size=40),
       cuts=st.lists(st.integers(1, 9), max_size=4))
def test_row_blocks_give_the_scores_of_the_whole_matrix(edges, cuts):
    """Rows built block by block, each from the edges into its targets, are the whole matrix."""
    n = 10
    source = np.array([e[0] for e in edges], dtype=np.int32)
    target = np.array([e[1] for e in edges], dtype=np.int32)
    weight = np.array([e[2] for e in edges], dtype="float64")
    out_weight = np.bincount(source, weights=weight, minlength=n).astype("float64")
    bounds = [0, *sorted(set(cuts)), n]
    blocks = []
    for start, stop in itertools.pairwise(bounds):
        into = (target >= start) & (target < stop)
        blocks.append(transition_rows(start, stop, source[into], target[into], weight[into], out_weight))
    whole = transition_matrix(n, source, target, weight)
    reset = np.linspace(1.0, 2.0, n) / np.linspace(1.0, 2.0, n).sum()
    for jump in (None, reset):
        np.testing.assert_array_equal(stationary_distribution(blocks, 0.85, jump),
                                      stationary_distribution(whole, 0.85, jump))  # bit for bit


def test_an_iteration_that_does_not_converge_is_an_error_not_a_result(monkeypatch):
    monkeypatch.setattr("features.families.pagerank.MAX_ITERATIONS", 3)
    with pytest.raises(PageRankDidNotConverge, match="3 iterations"):
        pagerank(3, np.array([0, 1]), np.array([2, 2]), np.array([1.0, 1.0]), 0.85)


@st.composite
def graphs(draw):
    n = draw(st.integers(1, 30))
    pairs = draw(
        st.lists(
            st.tuples(
                st.integers(0, n - 1),
                st.integers(0, n - 1),
                st.floats(0.01, 100.0, allow_nan=False, allow_infinity=False),
            ),
            max_size=120,
        )
    )
    reset = None
    if draw(st.booleans()):
        mass = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
        if sum(mass) > 0:
            reset = np.array(mass) / sum(mass)
    damping = draw(st.sampled_from([0.5, 0.85, 0.95]))
    return n, pairs, reset, damping


@settings(max_examples=150, deadline=None)
@given(graphs())
def test_equals_igraph_on_any_small_graph(graph):
    n, pairs, reset, damping = graph
    source, target, weight = sorted_distinct_edges(n, pairs)
    # Ours takes the interactions as they come: unsorted, parallel edges not merged.
    raw = [(s, t, w) for s, t, w in pairs if s != t]
    ours = pagerank(
        n,
        np.array([s for s, _, _ in raw], dtype=np.int32),
        np.array([t for _, t, _ in raw], dtype=np.int32),
        np.array([w for _, _, w in raw], dtype="float64"),
        damping,
        reset,
    )
    np.testing.assert_allclose(
        ours, igraph_pagerank(n, source, target, weight, damping, reset), rtol=1e-8, atol=1e-12
    )


@pytest.mark.parametrize("personalised", [False, True])
def test_equals_igraph_on_a_large_power_law_graph(personalised):
    # Mentions go mostly to a few popular profiles; many profiles mention nobody (dangling).
    rng = np.random.default_rng(7)
    n, m = 20_000, 120_000
    pairs = list(
        zip(
            rng.integers(0, n // 2, m).tolist(),
            (rng.zipf(1.6, m) % n).tolist(),
            rng.exponential(1.0, m).tolist(),
            strict=True,
        )
    )
    source, target, weight = sorted_distinct_edges(n, pairs)
    reset = None
    if personalised:
        reset = np.zeros(n)
        reset[rng.choice(n, 300, replace=False)] = rng.random(300)
        reset /= reset.sum()
    ours = pagerank(n, source, target, weight, 0.85, reset)
    assert ours.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(
        ours, igraph_pagerank(n, source, target, weight, 0.85, reset), rtol=1e-8, atol=1e-14
    )


def scipy_power_iteration(transition, damping, reset=None):
    """The iteration with scipy's own product (the code before ColumnBlocks), for bit comparisons."""
    n = transition.shape[0]
    scores = np.full(n, 1.0 / n) if reset is None else reset.copy()
    while True:
        following = transition @ scores
        following *= damping
        leak = 1.0 - following.sum()
        following += leak / n if reset is None else leak * reset
        change = np.abs(following - scores).sum()
        scores = following
        if change < 1e-12:
            return scores


@pytest.mark.parametrize("personalised", [False, True])
def test_the_scores_are_those_of_scipys_product_bit_for_bit(personalised):
    # A graph wider than one column block (2**19 columns), so the products read several blocks.
    rng = np.random.default_rng(3)
    n, m = 1_200_000, 2_000_000
    source, target = rng.integers(0, n, m).astype(np.int32), rng.integers(0, n, m).astype(np.int32)
    weight = rng.exponential(1.0, m)
    reset = None
    if personalised:
        reset = np.zeros(n)
        reset[rng.choice(n, 5000, replace=False)] = rng.random(5000)
        reset /= reset.sum()
    transition = transition_matrix(n, source, target, weight)
    ours = stationary_distribution(transition, 0.85, reset)
    np.testing.assert_array_equal(ours.view(np.uint64),
                                  scipy_power_iteration(transition, 0.85, reset).view(np.uint64))
