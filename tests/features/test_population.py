"""Interaction ends become positions in the run's profile set: each code names its row's id."""

import pandas as pd
import pyarrow as pa

from features.ingest.id_sets import IdSet
from features.population import profile_positions

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


def test_the_profile_set_is_let_go_once_the_profile_values_are_read():
    """PageRank runs without the profile set (millions of ids) held beside its matrix."""
    from features.config import FeatureConfig
    from features.population import PopulationFeatures

    population = PopulationFeatures(pd.Timestamp("2026-01-01"), FeatureConfig(), ["network"],
                                    profiles=PROFILES, interactions=True)
    population.add_latest_profiles(pa.array(["p1", "p2"]))
    population.add_interactions(pd.DataFrame({
        "source_profile_id": pd.Series(["p1"], dtype="str"), "target_profile_id": pd.Series(["p2"], dtype="str"),
        "timestamp": pd.to_datetime(["2025-06-01"]), "kind": ["mention"]}))
    values = population.profile_values()
    assert population.profiles is None
    assert values["pagerank"][PROFILES.positions(pa.array(["p2"]))[0]] > 1
