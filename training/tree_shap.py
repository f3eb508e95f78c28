"""Exact TreeSHAP for LightGBM boosters, 15-20x faster than ``pred_contrib`` on depth-7 trees.

Same values as ``booster.predict(X, raw_score=True, pred_contrib=True)`` (path-dependent TreeSHAP:
the expected value over the training data's cover), computed the FastTreeSHAP v2 way (Yang 2021,
arXiv:2109.09847). A leaf's contribution to a row depends only on which of the distinct features on
its path the row agrees with (a bit pattern over at most depth features), so every leaf's effect on
every pattern is tabled once per model, and a row costs one table lookup per leaf instead of
LightGBM's per-row recursion (O(leaves x depth) against O(leaves x depth^2) per tree). Compiled
with numba; rows are taken in blocks so that consecutive additions are independent
(docs/performance.md, Scoring: 1,200-1,450 against 21,000-30,000 rows/s on 2 threads). The
kernel releases the GIL and the rows are shared among the booster's ``num_threads`` threads.

For a leaf with value v, distinct path features P (k of them), zero fractions z_j (the share of the
training rows that follow the path at the nodes splitting on j) and a row's agreement o_j in {0, 1}:

    phi_i += v * (o_i - z_i) * sum over S subset of {j in P, j != i, o_j = 1} of
             |S|! (k - |S| - 1)! / k! * prod over j in P, j != i, j not in S of z_j

Tables grow as 2^k; a model whose tables would exceed MAX_TABLE_ENTRIES (deep, unbounded trees) or
that LightGBM's dump does not describe fully (linear trees, several classes) gets LightGBM's own
``pred_contrib``, with the same values, slower.
"""

from __future__ import annotations

import math
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import lightgbm as lgb
import numba
import numpy as np

MAX_TABLE_ENTRIES = 1 << 24  # float64 cells, 128 MB: depth 7 (<= 896 a leaf) x 31 leaves x 600 trees
ROWS_PER_TASK = 512  # rows a thread takes at a time (its buffers: features, decisions, patterns)

_NUMERICAL, _CATEGORICAL = 0, 1
# LightGBM's kZeroThreshold is ``const double kZeroThreshold = 1e-35f``: a float32 widened.
ZERO_THRESHOLD = float(np.float32(1e-35))
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}
_MISSING_ZERO, _MISSING_NAN = _MISSING["Zero"], _MISSING["NaN"]


@dataclass(frozen=True)
class ShapTables:
    """A booster's trees as flat arrays, with every leaf's pattern table (see the module docstring).

    Nodes and leaves are numbered tree by tree (``tree_nodes`` / ``tree_leaves`` hold the offsets);
    within a tree, nodes keep LightGBM's split order, so a parent comes before its children. Each
    node and leaf names its parent node (within the tree), the side it hangs on, and ``bit``: the
    pattern bit its parent's split clears when the row goes the other way (the parent's feature's
    place among the distinct features of the path, which all leaves below share).
    """

    n_features: int
    bias: float  # sum of the trees' expected values: the last column of pred_contrib
    tree_nodes: np.ndarray  # (trees + 1,) offsets into the node arrays
    tree_leaves: np.ndarray  # (trees + 1,) offsets into the leaf arrays
    node_feature: np.ndarray
    node_threshold: np.ndarray
    node_kind: np.ndarray  # 0 numerical, 1 categorical
    node_default_left: np.ndarray
    node_missing: np.ndarray  # 0 None, 1 Zero, 2 NaN (LightGBM's missing_type)
    node_categories: np.ndarray  # (nodes + 1,) offsets into category_values
    category_values: np.ndarray  # categories that go left, per categorical node
    node_parent: np.ndarray  # -1 at the root
    node_left: np.ndarray  # hangs on its parent's left
    node_bit: np.ndarray
    leaf_parent: np.ndarray
    leaf_left: np.ndarray
    leaf_bit: np.ndarray
    leaf_features: np.ndarray  # (leaves + 1,) offsets into feature_ids (k per leaf)
    feature_ids: np.ndarray  # the leaf's distinct path features, in order of first split
    leaf_tables: np.ndarray  # (leaves + 1,) offsets into table (2^k x k per leaf)
    table: np.ndarray


_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tree_shap(booster: lgb.Booster, X: np.ndarray, num_iteration: int | None = None) -> np.ndarray:
    """(rows x features + 1) SHAP values on the raw score, the last column the expected value:
    ``booster.predict(X, raw_score=True, pred_contrib=True, num_iteration=num_iteration)``."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    tables = shap_tables(booster, num_iteration)
    if tables is None:
        return booster.predict(X, raw_score=True, pred_contrib=True, num_iteration=num_iteration,
                               validate_features=False)
    if X.ndim != 2 or X.shape[1] != tables.n_features:
        raise ValueError(f"expected {tables.n_features} feature columns, got {X.shape}")
    out = np.empty((X.shape[0], tables.n_features + 1), np.float64)
    max_nodes = max(1, int(np.diff(tables.tree_nodes).max(initial=0)))  # a block's decision buffers
    arrays = (tables.bias, max_nodes) + tuple(getattr(tables, name) for name in _KERNEL_ARRAYS)
    rows_in_threads(_shap_rows, X, out, ROWS_PER_TASK, booster_threads(booster), *arrays)
    return out


_KERNEL_ARRAYS = ("tree_nodes", "tree_leaves", "node_feature", "node_threshold", "node_kind",
                  "node_default_left", "node_missing", "node_categories", "category_values",
                  "node_parent", "node_left", "node_bit", "leaf_parent", "leaf_left", "leaf_bit",
                  "leaf_features", "feature_ids", "leaf_tables", "table")


def shap_tables(booster: lgb.Booster, num_iteration: int | None = None) -> ShapTables | None:
    """The booster's tables (built once per booster and iteration count), or None when the fast path
    does not apply (see the module docstring)."""
    per_booster = _cache.setdefault(booster, {})
    if num_iteration not in per_booster:
        per_booster[num_iteration] = build_tables(booster.dump_model(num_iteration=num_iteration))
    return per_booster[num_iteration]


def rows_in_threads(kernel, X: np.ndarray, out: np.ndarray, block: int, threads: int, *arrays) -> None:
    """``kernel(X, out, first, last, *arrays)`` over every row of X, the rows shared among
    ``threads`` threads in whole blocks of ``block`` rows (the kernels release the GIL)."""
    blocks = -(-X.shape[0] // block)
    threads = min(threads, blocks)
    if threads <= 1:
        kernel(X, out, 0, X.shape[0], *arrays)
        return
    bounds = [min(X.shape[0], block * (blocks * i // threads)) for i in range(threads + 1)]
    with ThreadPoolExecutor(threads, thread_name_prefix="clv-trees") as pool:
        done = [pool.submit(kernel, X, out, bounds[i], bounds[i + 1], *arrays) for i in range(threads)]
        for future in done:
            future.result()


def booster_threads(booster: lgb.Booster) -> int:
    """The booster's num_threads (LightGBM's pred_contrib uses it too; all cores when unset), at most
    OMP_NUM_THREADS where the process limits OpenMP (the scorer's workers run on one thread each)."""
    threads = os.cpu_count() or 1
    for key in ("num_threads", "num_thread", "nthread", "nthreads", "n_jobs"):
        if key in booster.params and int(booster.params[key]) > 0:
            threads = int(booster.params[key])
            break
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(limit)) if limit.isdigit() and int(limit) > 0 else threads


# ---------------------------------------------------------------------------------------------
# From LightGBM's dump to flat arrays


def build_tables(model: dict) -> ShapTables | None:
    """Flat arrays and pattern tables from ``Booster.dump_model()``; None when the fast path does not apply."""
    if model.get("num_tree_per_iteration", 1) != 1:
        return None
    nodes: dict[str, list] = {k: [] for k in _NODE_DTYPES}
    leaves: dict[str, list] = {k: [] for k in ("value", "parent", "left", "bit", "z", "features")}
    categories, node_categories, leaf_features, tree_nodes, tree_leaves = [], [0], [0], [0], [0]
    bias, table_size = 0.0, 0
    for tree in model["tree_info"]:
        root = tree["tree_structure"]
        if "leaf_coeff" in root or any("leaf_coeff" in leaf for leaf in _leaves(root)):
            return None  # linear trees
        if "split_index" not in root:  # a single leaf: a constant, which only moves the expected value
            bias += float(root["leaf_value"])
        else:
            bias += _expected_value(root)
            tree_internal, tree_leaf = _walk(root)
            for node in sorted(tree_internal, key=lambda n: n["index"]):
                for key in ("parent", "left", "bit"):
                    nodes[key].append(node[key])
                _add_split(node["node"], nodes, categories, node_categories)
            for leaf in tree_leaf:
                for key in ("value", "parent", "left", "bit", "z"):
                    leaves[key].append(leaf[key])
                leaves["features"].extend(leaf["features"])
                leaf_features.append(len(leaves["features"]))
                table_size += (1 << len(leaf["features"])) * len(leaf["features"])
                if table_size > MAX_TABLE_ENTRIES:
                    return None
        tree_nodes.append(len(nodes["feature"]))
        tree_leaves.append(len(leaves["value"]))

    leaf_features = np.asarray(leaf_features, np.int64)
    k = np.diff(leaf_features)
    leaf_tables = np.concatenate([[0], np.cumsum((1 << k) * k)]).astype(np.int64)
    z = np.asarray([v for zs in leaves["z"] for v in zs], np.float64)
    table = _pattern_tables(np.asarray(leaves["value"], np.float64), leaf_features, z, leaf_tables,
                            _shapley_weights(int(k.max(initial=0))))
    return ShapTables(
        n_features=int(model["max_feature_idx"]) + 1,
        bias=bias,
        tree_nodes=np.asarray(tree_nodes, np.int64),
        tree_leaves=np.asarray(tree_leaves, np.int64),
        node_categories=np.asarray(node_categories, np.int64),
        category_values=np.asarray(categories, np.int64),
        leaf_features=leaf_features,
        feature_ids=np.asarray(leaves["features"], np.int64),
        leaf_tables=leaf_tables,
        table=table,
        **{f"node_{key}": np.asarray(nodes[key], dtype) for key, dtype in _NODE_DTYPES.items()},
        **{f"leaf_{key}": np.asarray(leaves[key], _NODE_DTYPES[key]) for key in ("parent", "left", "bit")},
    )


_NODE_DTYPES = {"feature": np.int64, "threshold": np.float64, "kind": np.uint8, "default_left": np.bool_,
                "missing": np.uint8, "parent": np.int64, "left": np.bool_, "bit": np.int64}


def _walk(root: dict) -> tuple[list[dict], list[dict]]:
    """Every internal node and leaf of a tree with its parent, side and pattern bit; leaves also with
    their value, distinct path features (first-split order) and each one's zero fraction (the share
    of the training rows that follow the path at the nodes splitting on it, multiplied)."""
    internal, leaves = [], []
    stack = [(root, -1, False, 0, [], [])]
    while stack:
        node, parent, left, bit, features, z = stack.pop()
        if "split_index" not in node:
            leaves.append({"value": float(node["leaf_value"]), "parent": parent, "left": left, "bit": bit,
                           "features": features, "z": z})
            continue
        internal.append({"node": node, "index": int(node["split_index"]), "parent": parent, "left": left,
                         "bit": bit})
        feature = int(node["split_feature"])
        below = features if feature in features else features + [feature]
        position = below.index(feature)
        for side in (True, False):
            child = node["left_child"] if side else node["right_child"]
            z_child = z + [1.0] if len(below) > len(z) else list(z)
            z_child[position] *= _count(child) / _count(node)
            stack.append((child, int(node["split_index"]), side, 1 << position, below, z_child))
    return internal, leaves


def _add_split(node: dict, nodes: dict, categories: list, node_categories: list) -> None:
    categorical = node["decision_type"] == "=="
    nodes["feature"].append(int(node["split_feature"]))
    nodes["kind"].append(_CATEGORICAL if categorical else _NUMERICAL)
    nodes["default_left"].append(bool(node["default_left"]))
    nodes["missing"].append(_MISSING[node["missing_type"]])
    if categorical:
        nodes["threshold"].append(0.0)
        categories.extend(int(c) for c in str(node["threshold"]).split("||"))
    else:
        nodes["threshold"].append(float(node["threshold"]))
    node_categories.append(len(categories))


def _count(node: dict) -> float:
    return float(node["internal_count"] if "split_index" in node else node["leaf_count"])


def _expected_value(root: dict) -> float:
    """Mean leaf value weighted by the leaves' training counts (LightGBM's Tree::ExpectedValue)."""
    total = _count(root)
    return sum(_count(leaf) / total * float(leaf["leaf_value"]) for leaf in _leaves(root))


def _leaves(root: dict):
    stack = [root]
    while stack:
        node = stack.pop()
        if "split_index" in node:
            stack += [node["left_child"], node["right_child"]]
        else:
            yield node


def _shapley_weights(k_max: int) -> np.ndarray:
    """w[k, s] = s! (k - s - 1)! / k!: the Shapley weight of a coalition of s among k players."""
    w = np.zeros((k_max + 1, max(k_max, 1)), np.float64)
    for k in range(1, k_max + 1):
        for s in range(k):
            w[k, s] = math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k)
    return w


# ---------------------------------------------------------------------------------------------
# Compiled parts


@numba.njit(cache=True)
def _pattern_tables(value, leaf_features, z, leaf_tables, weights):
    """Per leaf, per agreement pattern b (bit p: the row agrees with distinct feature p), per p:
    the leaf's SHAP contribution to its p-th distinct feature (module docstring)."""
    table = np.zeros(leaf_tables[-1], np.float64)
    coef = np.zeros(weights.shape[1] + 1, np.float64)
    for leaf in range(value.shape[0]):
        start = leaf_features[leaf]
        k = leaf_features[leaf + 1] - start
        for pattern in range(1 << k):
            for p in range(k):
                # Coefficients of prod over j != p of (z_j + t [j agrees]); t^s picks coalitions of s.
                coef[:] = 0.0
                coef[0] = 1.0
                degree = 0
                for j in range(k):
                    if j == p:
                        continue
                    zj = z[start + j]
                    if (pattern >> j) & 1:
                        for s in range(degree + 1, 0, -1):
                            coef[s] = coef[s] * zj + coef[s - 1]
                        coef[0] *= zj
                        degree += 1
                    else:
                        for s in range(degree + 1):
                            coef[s] *= zj
                total = 0.0
                for s in range(degree + 1):
                    total += weights[k, s] * coef[s]
                agrees = 1.0 if (pattern >> p) & 1 else 0.0
                table[leaf_tables[leaf] + pattern * k + p] = value[leaf] * (agrees - z[start + p]) * total
    return table


@numba.njit(inline="always")
def _goes_left(x, kind, threshold, default_left, missing, categories, first, last):
    """LightGBM's Tree::Decision for one node: NumericalDecision / CategoricalDecision."""
    if kind == 0:
        if np.isnan(x) and missing != 2:
            x = 0.0
        if (missing == 1 and -ZERO_THRESHOLD <= x <= ZERO_THRESHOLD) or (missing == 2 and np.isnan(x)):
            return default_left
        return x <= threshold
    if np.isnan(x):  # NaN always goes right at a categorical split
        return False
    category = int(x)
    if category < 0:
        return False
    for i in range(first, last):
        if categories[i] == category:
            return True
    return False


@numba.njit(nogil=True, cache=True)
def _shap_rows(X, out, first, last, bias, max_nodes, tree_nodes, tree_leaves, node_feature, node_threshold,
               node_kind, node_default_left, node_missing, node_categories, category_values,
               node_parent, node_left, node_bit, leaf_parent, leaf_left, leaf_bit, leaf_features,
               feature_ids, leaf_tables, table):
    """SHAP values of rows first..last-1 into ``out``. Block by block of rows; within a block, tree
    by tree (its tables stay in cache) and, innermost, row by row, so consecutive additions are
    independent. A node's pattern is its parent's with the parent's bit cleared where the row goes
    the other way."""
    m = X.shape[1]
    for first_row in range(first, last, ROWS_PER_TASK):
        rows = min(last, first_row + ROWS_PER_TASK) - first_row
        x = np.empty((m, rows), np.float64)  # the block's features, feature-major
        for j in range(rows):
            for f in range(m):
                value = X[first_row + j, f]
                # LightGBM reads a row as sparse: values within its zero threshold are not kept (0.0).
                x[f, j] = 0.0 if -ZERO_THRESHOLD <= value <= ZERO_THRESHOLD else value
        phi = np.zeros((m, rows), np.float64)
        left = np.empty((max_nodes, rows), np.bool_)
        pattern = np.empty((max_nodes, rows), np.int64)
        cells = np.empty(rows, np.int64)
        for t in range(tree_nodes.shape[0] - 1):
            first_node = tree_nodes[t]
            for i in range(tree_nodes[t + 1] - first_node):
                g = first_node + i
                parent, side, bit, f = node_parent[g], node_left[g], node_bit[g], node_feature[g]
                # The row loops hold no branch (what varies by node is decided outside them), so the
                # compiler makes them vector instructions: about 1.15x the rows per second.
                if parent < 0:
                    for j in range(rows):
                        pattern[i, j] = -1
                else:
                    for j in range(rows):
                        pattern[i, j] = pattern[parent, j] & ~(bit * np.int64(left[parent, j] != side))
                kind, missing, threshold = node_kind[g], node_missing[g], node_threshold[g]
                if kind == _NUMERICAL and missing != _MISSING_ZERO:
                    # _goes_left in one comparison: a NaN goes to the default side (missing NaN) or is
                    # read as 0.0 (missing None), and NaN <= threshold is false.
                    nan_left = node_default_left[g] if missing == _MISSING_NAN else 0.0 <= threshold
                    for j in range(rows):
                        value = x[f, j]
                        left[i, j] = (value <= threshold) | (np.isnan(value) & nan_left)
                else:
                    for j in range(rows):
                        left[i, j] = _goes_left(x[f, j], kind, threshold, node_default_left[g], missing,
                                                category_values, node_categories[g], node_categories[g + 1])
            for leaf in range(tree_leaves[t], tree_leaves[t + 1]):
                parent, side, bit = leaf_parent[leaf], leaf_left[leaf], leaf_bit[leaf]
                start = leaf_features[leaf]
                k = leaf_features[leaf + 1] - start
                mask = (1 << k) - 1
                for j in range(rows):
                    bits = pattern[parent, j] & ~(bit * np.int64(left[parent, j] != side))
                    cells[j] = leaf_tables[leaf] + (bits & mask) * k
                for p in range(k):
                    f = feature_ids[start + p]
                    for j in range(rows):
                        phi[f, j] += table[cells[j] + p]
        for j in range(rows):
            for f in range(m):
                out[first_row + j, f] = phi[f, j]
            out[first_row + j, m] = bias


def tiny_model() -> tuple[lgb.Booster, np.ndarray]:
    """A two-tree booster and its rows: enough to compile a kernel."""
    X = np.random.default_rng(0).normal(size=(200, 2))
    booster = lgb.train({"objective": "regression", "verbosity": -1, "num_threads": 1},
                        lgb.Dataset(X, X[:, 0]), num_boost_round=2)
    return booster, X


def compile_kernels() -> None:
    """Compile the kernels into numba's cache (beside this file) on a tiny model, so that the first
    scoring run does not pay the 2-10 s of compiling; ``make install`` runs it."""
    tree_shap(*tiny_model())


if __name__ == "__main__":
    compile_kernels()
