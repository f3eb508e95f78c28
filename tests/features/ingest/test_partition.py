"""Partitioning by customer for chunked and distributed work: stable buckets, id sets, attribute kinds."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.ingest import id_sets
from features.ingest.attribute_kinds import AttributeKinds, conform_attributes
from features.ingest.id_sets import IdSet, hash_ids, is_in
from features.ingest.partition import bucket_of, n_buckets, partition_table, raw_id_buckets

# ---------------------------------------------------------------- buckets


def test_buckets_depend_only_on_the_id():
    # Fixed values: a bucket assignment that changed between versions would silently reshuffle
    # chunks (harmless for scores, but reproducibility is promised).
    assert bucket_of(["C1", "C2", "C3", "customer-0000042"], 7).tolist() == \
        bucket_of(pd.Series(["C1", "C2", "C3", "customer-0000042"]), 7).tolist()
    script = "from features.ingest.partition import bucket_of; print(bucket_of(['C1', 'C2', 'C3'], 7).tolist())"
    other_process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                   env={**os.environ, "PYTHONHASHSEED": "123"}, check=True)
    assert other_process.stdout.strip() == str(bucket_of(["C1", "C2", "C3"], 7).tolist())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=30), st.integers(1, 13))
def test_a_bucket_is_pandas_hash_of_the_id_modulo_the_buckets_and_a_missing_id_goes_to_bucket_0(ids, buckets):
    expected = [0 if v is None else int(pd.util.hash_array(np.array([v], dtype=object), categorize=False)[0] % buckets)
                for v in ids]
    got = bucket_of(ids, buckets)
    assert got.dtype == np.int64 and got.tolist() == expected


def test_raw_ids_go_to_the_bucket_of_the_id_the_contract_parses():
    raw = pa.array([" C1 ", "C1", None, "C2"])
    assert raw_id_buckets(raw, 5).tolist() == [*bucket_of(["C1", "C1"], 5).tolist(), 0,
                                                bucket_of(["C2"], 5)[0]]
    # Numeric ids stored as floats by a spreadsheet keep their digits: 1001.0 is customer "1001".
    assert raw_id_buckets(pa.array([1001.0, 7.0]), 11).tolist() == bucket_of(["1001", "7"], 11).tolist()


def test_every_row_lands_in_its_customers_bucket_with_its_source_row(tmp_path):
    source = tmp_path / "transactions.csv"
    pd.DataFrame({"customer_id": ["a", "b", "a", "c", " b"], "amount": ["1", "2", "3", "4", "5"]}
                 ).to_csv(source, index=False)
    files = partition_table(source, "transactions", "customer_id", 3, tmp_path)
    assert files.rows_in == 5
    seen = []
    for b in range(3):
        frame, rows = files.read(b)
        assert (bucket_of(frame["customer_id"].str.strip(), 3) == b).all()
        seen += list(zip(rows.tolist(), frame["amount"].tolist()))
    assert sorted(seen) == [(0, "1"), (1, "2"), (2, "3"), (3, "4"), (4, "5")]


def test_chunks_hold_about_chunk_size_customers():
    assert n_buckets(1_000_000, 100_000) == 10
    assert n_buckets(1_000_001, 100_000) == 11
    assert n_buckets(0, 100_000) == 1


# ---------------------------------------------------------------- id sets


def test_id_sets_answer_exactly_which_ids_exist():
    parts = [pa.array(["a", "b"]), pa.array(["c"])]
    ids = IdSet(parts, [hash_ids(p) for p in parts])
    assert ids.members(pa.array(["c", "z", None, "a", "b "])).tolist() == [True, False, False, True, False]
    assert ids.known(pd.Series(["b", "b", "q", None], dtype="str")).tolist() == ["b"]
    assert is_in(pd.Series(["a", None, "x"], dtype="str"), ["x", "y"]).tolist() == [False, False, True]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=60, unique=True),
       st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=80))
def test_positions_are_each_ids_place_in_the_set_or_minus_one(members, queries):
    ids = IdSet([pa.array(members, pa.string())])
    stored = ids.ids.to_pylist()
    expected = [stored.index(q) if q is not None and q in stored else -1 for q in queries]
    # Queries repeat and mix members with strangers; the answer keeps their order.
    assert ids.positions(pa.array(queries + queries[::-1], pa.string())).tolist() == expected + expected[::-1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=4), max_size=30),
       st.lists(st.one_of(st.none(), st.text(max_size=4)), max_size=80))
def test_contains_answers_as_arrows_is_in_each_distinct_value_once(members, queries):
    """IdSet.contains (built once, asked per batch) is pc.is_in of the column against the ids, for
    repeated values, strangers and missing ones, in the column's order."""
    ids = IdSet([pa.array(sorted(set(members)), pa.string())])
    values = queries + queries[:5]
    expected = pc.is_in(pa.array(values, pa.string()), value_set=pa.array(members, pa.string()))
    # As a column of a frame read in batches: its Arrow array is in chunks.
    column = pa.chunked_array([pa.array(values[:7], pa.string()), pa.array(values[7:], pa.string())]).to_pandas()
    assert ids.contains(column).tolist() == expected.to_numpy(zero_copy_only=False).tolist()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=40), st.integers(1, 7))
def test_ids_hashed_a_slice_at_a_time_hash_as_all_at_once(values, slice_ids):
    """hash_ids makes Python strings of a slice of the ids at a time; each hash is the id's own."""
    ids = pa.array(values, pa.string())
    whole = pd.util.hash_array(np.asarray(ids.to_pandas(), dtype=object), categorize=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(id_sets, "HASH_SLICE_IDS", slice_ids)
        sliced = hash_ids(ids)
    assert sliced.dtype == whole.dtype == np.uint64
    assert sliced.tolist() == whole.tolist()


# ---------------------------------------------------------------- attribute kinds


def test_a_chunk_of_digits_keeps_the_text_kind_of_the_whole_column():
    kinds = AttributeKinds()
    kinds.add(pa.record_batch({"customer_id": ["a", "b"], "postcode": ["10001", "EC1A"], "age": ["34", ""]}))
    kinds.add(pa.record_batch({"customer_id": ["c"], "postcode": ["10002"], "age": [""]}))
    assert kinds.kinds() == {"postcode": "text", "age": "number"}

    raw = pd.DataFrame({"customer_id": ["c", "d"], "postcode": ["10002", " 10003 "], "age": [None, None]})
    typed = pd.DataFrame({"customer_id": ["c", "d"], "postcode": [10002.0, 10003.0],
                          "age": pd.Categorical([None, None])})
    out = conform_attributes(typed, raw, np.array([0, 1]), kinds.kinds())
    assert out["postcode"].astype("str").tolist() == ["10002", "10003"]
    assert isinstance(out["postcode"].dtype, pd.CategoricalDtype)
    assert out["age"].dtype == "float64" and out["age"].isna().all()


