"""Interaction ends become positions in the run's profile set: each code names its row's id."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.config import FeatureConfig
from features.ingest.contract import check_table, parsed_ids
from features.ingest.id_sets import IdSet
from features.population import ENDS, EndCodes, PopulationFeatures, profile_positions

PROFILES = IdSet([pa.array(["p1", "p2", "p3", "p4"])])


def batch(rows):
    frame = pd.DataFrame(rows, columns=["source_profile_id", "target_profile_id"])
    return frame.astype({"source_profile_id": "str", "target_profile_id": "str"})


def test_both_ends_are_coded_by_their_position_in_the_profile_set():
    frame = batch([("p1", "p2"), ("p3", "p1"), ("p4", "p4"), ("p2", "p3")])
    ids = pa.array(pd.concat([frame["source_profile_id"], frame["target_profile_id"]]).unique(), type=pa.string())
    source, target = profile_positions(frame, ids, PROFILES.positions(ids))
    named = PROFILES.ids.to_pylist()
    assert [named[s] for s in source] == frame["source_profile_id"].tolist()
    assert [named[t] for t in target] == frame["target_profile_id"].tolist()
    assert source.dtype == target.dtype == "int32"


def test_ids_outside_the_set_or_missing_are_minus_one():
    frame = batch([("p1", "zz"), (None, "p2")])
    ids = pa.array(["p1", "zz", "p2"])
    source, target = profile_positions(frame, ids, PROFILES.positions(ids))
    assert source[1] == -1 and target[0] == -1
    assert source[0] >= 0 and target[1] >= 0


def test_an_empty_batch_has_no_codes():
    source, target = profile_positions(batch([]), pa.array([], pa.string()), PROFILES.positions(pa.array([], pa.string())))
    assert len(source) == len(target) == 0


def test_id_set_positions_point_at_the_ids():
    values = pa.array(["p3", "zz", None, "p1"])
    where = PROFILES.positions(values)
    assert where[1] == -1 and where[2] == -1
    assert PROFILES.ids[int(where[0])].as_py() == "p3"
    assert PROFILES.ids[int(where[3])].as_py() == "p1"


# ---------------------------------------------------------------------------------------------
# EndCodes: one lookup of a raw batch's ends serves the contract's reference check and the sums


def raw_batch(rows):
    """A raw interactions batch as the scorer reads it (text columns, some ids missing or padded)."""
    frame = pd.DataFrame(rows, columns=["source_profile_id", "target_profile_id", "timestamp", "kind"])
    return frame.astype({"source_profile_id": "str", "target_profile_id": "str", "kind": "str"})


AWKWARD = raw_batch([
    ("p1", "p2", "2025-01-01", "mention"),
    ("p3", "zz", "2025-01-02", "share"),  # target unknown
    (None, "p1", "2025-01-03", "reply"),  # source missing: only the non-null rule speaks
    (" p4 ", "p4", "2025-01-04", "like"),  # padded: parsed to p4, known
    ("p2", "  ", "2025-01-05", "mention"),  # blank target: missing
    ("yy", "xx", "2025-01-06", "share"),  # both unknown
    ("p2", "p3", "not a date", "reply"),  # rejected for another reason
    ("p4", "p1", "2025-01-07", "like"),
])


def test_end_codes_reject_exactly_the_rows_an_index_of_known_ids_rejects():
    mentioned = pa.array(pd.concat([parsed_ids(AWKWARD[c]) for c in ENDS]).unique(), type=pa.string())
    known = pd.Index(mentioned.filter(pa.array(PROFILES.positions(mentioned) >= 0)).to_pandas(), dtype="str")
    by_index = check_table("social_interactions", AWKWARD, {"profiles": known}, 1.0, part=True)
    by_codes = check_table("social_interactions", AWKWARD, {"profiles": EndCodes(PROFILES, AWKWARD)}, 1.0,
                           part=True)
    pd.testing.assert_frame_equal(by_codes.rejects, by_index.rejects)
    pd.testing.assert_frame_equal(by_codes.typed, by_index.typed)
    assert by_codes.rejects["row"].tolist() == [1, 2, 4, 5, 6]
    assert by_codes.rejects["reason"].iloc[1] == "missing source_profile_id"


def test_end_codes_of_the_kept_rows_are_their_positions_in_the_profile_set():
    codes = EndCodes(PROFILES, AWKWARD)
    checked = check_table("social_interactions", AWKWARD, {"profiles": codes}, 1.0, part=True)
    source, target = codes.kept(checked.rejects["row"].to_numpy())
    named = PROFILES.ids.to_pylist()
    assert [named[s] for s in source] == checked.typed["source_profile_id"].tolist() == ["p1", "p4", "p4"]
    assert [named[t] for t in target] == checked.typed["target_profile_id"].tolist() == ["p2", "p4", "p1"]
    ids = pa.array(["p1", "p2", "p4"])  # as the sums coded them before EndCodes
    for got, expected in zip((source, target), profile_positions(checked.typed, ids, PROFILES.positions(ids)),
                             strict=True):
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == expected.dtype


def test_end_codes_answer_only_for_the_batch_they_were_made_from():
    codes = EndCodes(PROFILES, AWKWARD)
    with pytest.raises(ValueError, match="no profile codes"):
        codes.known_rows(pd.Series(["p1"], index=[len(AWKWARD)], name="source_profile_id", dtype="str"))
    with pytest.raises(ValueError, match="no profile codes"):
        codes.known_rows(pd.Series(["p1"], name="kind", dtype="str"))


def test_end_codes_of_an_empty_batch():
    codes = EndCodes(PROFILES, raw_batch([]))
    checked = check_table("social_interactions", raw_batch([]), {"profiles": codes}, 1.0, part=True)
    source, target = codes.kept(checked.rejects["row"].to_numpy())
    assert len(source) == len(target) == len(checked.typed) == 0


def test_the_profile_set_is_let_go_once_the_profile_values_are_read():
    """PageRank runs without the profile set (millions of ids) held beside its matrix."""
    population = PopulationFeatures(pd.Timestamp("2026-01-01"), FeatureConfig(), ["network"],
                                    profiles=PROFILES, interactions=True)
    population.add_latest_profiles(pa.array(["p1", "p2"]))
    population.add_interactions(pd.DataFrame({
        "source_profile_id": pd.Series(["p1"], dtype="str"), "target_profile_id": pd.Series(["p2"], dtype="str"),
        "timestamp": pd.to_datetime(["2025-06-01"]), "kind": ["mention"]}))
    values = population.profile_values()
    assert population.profiles is None
    assert values["pagerank"][PROFILES.positions(pa.array(["p2"]))[0]] > 1
