"""LightGBM's raw score, bit for bit, about 1.5x faster than ``Booster.predict``.

``raw_score(booster, X, num_iteration)`` equals ``booster.predict(X, raw_score=True,
num_iteration=num_iteration)`` exactly: every node decides as LightGBM's Tree::NumericalDecision and
CategoricalDecision do (the same missing-value rules, categories as a bitset; values within
LightGBM's zero threshold read as 0.0, as its dense-row reader drops them), and a row's tree
outputs are added in LightGBM's order, from 0.0, in float64 (GBDT::PredictRaw). The speed comes from
the walk's order: rows are taken in blocks and the trees one level at a time, every row of the block
one step down per level, so consecutive steps belong to different rows and do not wait on each
other's decisions (LightGBM walks one row down one tree at a time). Leaves point to themselves, so a
row that reaches a leaf early just stays there. Compiled with numba; the kernel releases the GIL and
the rows are shared among the booster's ``num_threads`` threads.

Categorical splits are taken out of the walk (``_numeric_rows``): each distinct (feature, categories)
split becomes a derived feature of the block, 0.0 for the rows it sends left and 1.0 for the others,
and its nodes compare that with 0.5. Every node then decides by one comparison, which the compiler
turns into vector instructions: about 2x the mixed walk (``_raw_rows``) on the benchmark model, which
stays for forests with zero-as-missing splits (docs/performance.md, Scoring).

A booster's arrays are built on its first predict of at least BUILD_MIN_ROWS rows and kept with it;
until then it predicts with LightGBM (the same values). Models it does not describe (linear trees,
several outputs per iteration as in multiclass, random forests' averaged output, trees of more than
32,768 nodes, more than 65,536 features) get LightGBM's own predict.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

import lightgbm as lgb
import numba
import numpy as np

from training.tree_shap import booster_threads, rows_in_threads, tiny_model

ROWS_PER_BLOCK = 64  # rows walked together: their features (rows x features floats) stay in L1
# Building a booster's arrays (dump_model, about 0.35 s for 300 trees) pays for itself from about
# 30,000 rows; fewer rows of a booster not yet built go to LightGBM (training's many small predicts).
BUILD_MIN_ROWS = 50_000
MAX_TREE_NODES = 1 << 15  # node numbers within a tree are packed into 16 bits

# Bits of a node's packed word: feature (16), left child (16), right child (16), then the flags.
_ZERO_IS_MISSING, _NAN_LEFT, _DEFAULT_LEFT, _CATEGORICAL = 48, 49, 50, 51
# LightGBM's kZeroThreshold is ``const double kZeroThreshold = 1e-35f``: a float32 widened.
ZERO_THRESHOLD = float(np.float32(1e-35))


@dataclass(frozen=True)
class Forest:
    """A booster's trees as flat arrays. Within a tree, node 0 is the root; a leaf is a node whose
    children are itself and whose ``threshold`` holds its value."""

    tree_nodes: np.ndarray  # (trees + 1,) offsets into the node arrays
    tree_depth: np.ndarray  # levels from the root to the deepest leaf
    packed: np.ndarray  # int64: feature | left << 16 | right << 32 | flags (children within the tree)
    threshold: np.ndarray  # float64; a leaf's value
    category_words: np.ndarray  # (nodes,) offsets into words, per categorical node
    category_limit: np.ndarray  # float64: 32 x the node's words (0 for numerical nodes)
    words: np.ndarray  # uint32 bitsets of the categories that go left
    numeric: NumericForest | None = None  # the same trees for _numeric_rows (no zero-as-missing split)


@dataclass(frozen=True)
class NumericForest:
    """The Forest's nodes with every categorical split reading a derived feature (numbered after the
    model's own): derived feature k is 0.0 where the row's ``feature[k]`` is in the categories at
    ``words[offset[k]:]`` (``limit[k]`` = 32 x their words), else 1.0; its nodes' threshold is 0.5."""

    packed: np.ndarray
    threshold: np.ndarray
    feature: np.ndarray  # int64 (derived,)
    offset: np.ndarray  # int64 (derived,)
    limit: np.ndarray  # float64 (derived,)


_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def raw_score(booster: lgb.Booster, X: np.ndarray, num_iteration: int | None = None) -> np.ndarray:
    """``booster.predict(X, raw_score=True, num_iteration=num_iteration)``, bit for bit (a 1-d array)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    built = num_iteration_key(booster, num_iteration) in _cache.get(booster, {})
    forest = forest_of(booster, num_iteration) if built or len(X) >= BUILD_MIN_ROWS else None
    if forest is None:
        return booster.predict(X, raw_score=True, num_iteration=num_iteration, validate_features=False)
    if X.ndim != 2 or X.shape[1] != booster.num_feature():
        raise ValueError(f"expected {booster.num_feature()} feature columns, got {X.shape}")
    out = np.empty(X.shape[0], np.float64)
    kernel, arrays = kernel_arrays(forest)
    rows_in_threads(kernel, X, out, ROWS_PER_BLOCK, booster_threads(booster), *arrays)
    return out


def kernel_arrays(forest: Forest, mixed: bool = False) -> tuple:
    """The kernel for the forest (``mixed``: the mixed walk whatever the forest) and its arrays."""
    if forest.numeric is not None and not mixed:
        fast = forest.numeric
        return _numeric_rows, (forest.tree_nodes, forest.tree_depth, fast.packed, fast.threshold, fast.feature,
                               fast.offset, fast.limit, forest.words)
    return _raw_rows, (forest.tree_nodes, forest.tree_depth, forest.packed, forest.threshold, forest.category_words,
                       forest.category_limit, forest.words)


def forest_of(booster: lgb.Booster, num_iteration: int | None = None) -> Forest | None:
    """The booster's first ``num_iteration`` iterations as a Forest (built once per booster and
    iteration count); None when the fast path does not apply. ``num_iteration`` means what it means
    to ``Booster.predict``: None the best iteration if the booster has one, <= 0 every iteration."""
    key = num_iteration_key(booster, num_iteration)
    per_booster = _cache.setdefault(booster, {})
    if key not in per_booster:
        per_booster[key] = build_forest(booster.dump_model(num_iteration=key))
    return per_booster[key]


def num_iteration_key(booster: lgb.Booster, num_iteration: int | None) -> int:
    """The iterations ``Booster.predict`` uses: the best one for None (when there is one), -1 for all."""
    if num_iteration is None:
        num_iteration = booster.best_iteration
    return num_iteration if num_iteration > 0 else -1


def build_forest(model: dict) -> Forest | None:
    """Flat arrays from ``Booster.dump_model()``; None when the fast path does not apply."""
    if model.get("num_tree_per_iteration", 1) != 1 or model.get("average_output", False):
        return None
    if int(model["max_feature_idx"]) >= 1 << 16:  # feature numbers are packed into 16 bits
        return None
    packed, threshold, word_offsets, limits, words = [], [], [], [], [0]
    tree_nodes, tree_depth = [0], []
    for tree in model["tree_info"]:
        nodes, depth = _tree_nodes(tree["tree_structure"])
        if nodes is None or len(nodes) > MAX_TREE_NODES:
            return None
        number = {id(node): i for i, node in enumerate(nodes)}
        for i, node in enumerate(nodes):
            if "split_index" not in node:  # a leaf: its own children, its value in the threshold
                packed.append((i << 16) | (i << 32))
                threshold.append(float(node["leaf_value"]))
                word_offsets.append(0)
                limits.append(0.0)
                continue
            word = int(node["split_feature"]) | (number[id(node["left_child"])] << 16) \
                | (number[id(node["right_child"])] << 32)
            default_left = bool(node["default_left"])
            word |= int(default_left) << _DEFAULT_LEFT
            if node["decision_type"] == "==":
                categories = [int(c) for c in str(node["threshold"]).split("||")]
                bits = [0] * (max(categories) // 32 + 1)
                for c in categories:
                    bits[c // 32] |= 1 << (c % 32)
                word |= 1 << _CATEGORICAL
                threshold.append(0.0)
                word_offsets.append(len(words))
                limits.append(32.0 * len(bits))
                words.extend(bits)
            else:
                value = float(node["threshold"])
                missing = node["missing_type"]
                # NaN: the default side when missing values are NaN or zero (NaN counts as zero);
                # otherwise NaN is read as 0.0 and compared.
                nan_left = default_left if missing in ("NaN", "Zero") else 0.0 <= value
                word |= (int(missing == "Zero") << _ZERO_IS_MISSING) | (int(nan_left) << _NAN_LEFT)
                threshold.append(value)
                word_offsets.append(0)
                limits.append(0.0)
            packed.append(word)
        tree_nodes.append(len(packed))
        tree_depth.append(depth)
    forest = Forest(
        tree_nodes=np.asarray(tree_nodes, np.int64),
        tree_depth=np.asarray(tree_depth, np.int64),
        packed=np.asarray(packed, np.int64),
        threshold=np.asarray(threshold, np.float64),
        category_words=np.asarray(word_offsets, np.int64),
        category_limit=np.asarray(limits, np.float64),
        words=np.asarray(words, np.uint32),
    )
    return replace(forest, numeric=numeric_forest(forest, int(model["max_feature_idx"]) + 1))


def numeric_forest(forest: Forest, features: int) -> NumericForest | None:
    """The forest's categorical splits as derived features (NumericForest); None when a split treats
    zero as missing (its decision is not one comparison) or the derived features do not fit 16 bits."""
    flags = forest.packed >> _ZERO_IS_MISSING
    if ((flags & 1) == 1).any():
        return None
    categorical = np.flatnonzero((forest.packed >> _CATEGORICAL) & 1)
    derived: dict[tuple, int] = {}
    feature, offset, limit = [], [], []
    packed, threshold = forest.packed.copy(), forest.threshold.copy()
    for g in categorical:
        source = int(forest.packed[g] & 0xFFFF)
        start, size = int(forest.category_words[g]), int(forest.category_limit[g]) // 32
        key = (source, tuple(forest.words[start: start + size].tolist()))
        if key not in derived:
            derived[key] = len(feature)
            feature.append(source)
            offset.append(start)
            limit.append(forest.category_limit[g])
        number = features + derived[key]
        if number > 0xFFFF:
            return None
        # Left at 0.0 <= 0.5; a derived value is never missing, so the NaN and default bits are cleared.
        children = int(forest.packed[g]) & (0xFFFFFFFF << 16)
        packed[g] = children | number
        threshold[g] = 0.5
    return NumericForest(packed, threshold, np.asarray(feature, np.int64), np.asarray(offset, np.int64),
                         np.asarray(limit, np.float64))


def _tree_nodes(root: dict) -> tuple[list[dict] | None, int]:
    """A tree's nodes and leaves, root first, and its depth; None for a linear tree."""
    nodes, depth, stack = [], 0, [(root, 0)]
    while stack:
        node, level = stack.pop()
        if "leaf_coeff" in node:
            return None, 0
        nodes.append(node)
        depth = max(depth, level)
        if "split_index" in node:
            stack += [(node["right_child"], level + 1), (node["left_child"], level + 1)]
    return nodes, depth


@numba.njit(inline="always")
def _read_block(X, x, total, first_row, rows):
    """Rows first_row.. of X into the block's features (feature-major), read as LightGBM reads a row:
    sparse, so values within its zero threshold are not kept (0.0); the block's totals reset."""
    for j in range(rows):
        total[j] = 0.0
        for f in range(X.shape[1]):
            value = X[first_row + j, f]
            x[f * ROWS_PER_BLOCK + j] = 0.0 if -ZERO_THRESHOLD <= value <= ZERO_THRESHOLD else value


@numba.njit(inline="always")
def _in_categories(value, limit, words, offset):
    """A categorical split's decision: NaN, negative codes (after truncation) and codes past the
    bitset at words[offset:] (``limit`` = 32 x its words) go right."""
    if value > -1.0 and value < limit:
        code = np.int64(value)
        return ((words[offset + (code >> 5)] >> (code & 31)) & 1) == 1
    return False


@numba.njit(nogil=True, cache=True)
def _raw_rows(X, out, first, last, tree_nodes, tree_depth, packed, threshold, category_words, category_limit,
              words):
    """Raw scores of rows first..last-1 into ``out``: block by block of rows, tree by tree, level by
    level, every row of the block one step per level."""
    m = X.shape[1]
    x = np.empty(m * ROWS_PER_BLOCK, np.float64)  # the block's features, feature-major
    node = np.empty(ROWS_PER_BLOCK, np.int64)
    total = np.empty(ROWS_PER_BLOCK, np.float64)
    for first_row in range(first, last, ROWS_PER_BLOCK):
        rows = min(last, first_row + ROWS_PER_BLOCK) - first_row
        _read_block(X, x, total, first_row, rows)
        for t in range(tree_nodes.shape[0] - 1):
            base = tree_nodes[t]
            for j in range(rows):
                node[j] = 0
            for _ in range(tree_depth[t]):
                for j in range(rows):
                    g = base + node[j]
                    word = packed[g]
                    value = x[(word & 0xFFFF) * ROWS_PER_BLOCK + j]
                    if (word >> _CATEGORICAL) & 1:
                        left = _in_categories(value, category_limit[g], words, category_words[g])
                    else:
                        # Zero is missing: 0.0 takes the default side (values near zero are 0.0 by now).
                        zero = ((word >> _ZERO_IS_MISSING) & 1 == 1) & (value == 0.0)
                        nan_left = np.isnan(value) & ((word >> _NAN_LEFT) & 1 == 1)
                        left = ((value <= threshold[g]) & ~zero) | nan_left | (zero & ((word >> _DEFAULT_LEFT) & 1 == 1))
                    node[j] = (word >> (32 - 16 * np.int64(left))) & 0xFFFF
            for j in range(rows):
                total[j] += threshold[base + node[j]]
        for j in range(rows):
            out[first_row + j] = total[j]


@numba.njit(nogil=True, cache=True)
def _numeric_rows(X, out, first, last, tree_nodes, tree_depth, packed, threshold, feature, offset, limit, words):
    """_raw_rows for a NumericForest: each block's derived features are computed first (as
    _raw_rows decides a categorical split), then every node decides by one comparison."""
    m = X.shape[1]
    x = np.empty((m + feature.shape[0]) * ROWS_PER_BLOCK, np.float64)  # feature-major
    node = np.empty(ROWS_PER_BLOCK, np.int64)
    total = np.empty(ROWS_PER_BLOCK, np.float64)
    for first_row in range(first, last, ROWS_PER_BLOCK):
        rows = min(last, first_row + ROWS_PER_BLOCK) - first_row
        _read_block(X, x, total, first_row, rows)
        for k in range(feature.shape[0]):
            for j in range(rows):
                left = _in_categories(x[feature[k] * ROWS_PER_BLOCK + j], limit[k], words, offset[k])
                x[(m + k) * ROWS_PER_BLOCK + j] = 0.0 if left else 1.0
        for t in range(tree_nodes.shape[0] - 1):
            base = tree_nodes[t]
            for j in range(rows):
                node[j] = 0
            for _ in range(tree_depth[t]):
                for j in range(rows):
                    g = base + node[j]
                    word = packed[g]
                    value = x[(word & 0xFFFF) * ROWS_PER_BLOCK + j]
                    left = (value <= threshold[g]) | (np.isnan(value) & ((word >> _NAN_LEFT) & 1 == 1))
                    node[j] = (word >> (32 - 16 * np.int64(left))) & 0xFFFF
            for j in range(rows):
                total[j] += threshold[base + node[j]]
        for j in range(rows):
            out[first_row + j] = total[j]


def compile_kernels() -> None:
    """Compile both kernels into numba's cache (beside this file) on a tiny model, so that the first
    scoring run does not pay the seconds of compiling; ``make install`` runs it. The arrays are
    built first: a predict of this few rows would otherwise go to LightGBM (BUILD_MIN_ROWS)."""
    booster, X = tiny_model()
    forest = forest_of(booster)
    X = np.ascontiguousarray(X, dtype=np.float64)
    for mixed in (False, True):
        kernel, arrays = kernel_arrays(forest, mixed)
        kernel(X, np.empty(len(X), np.float64), 0, len(X), *arrays)


if __name__ == "__main__":
    compile_kernels()
