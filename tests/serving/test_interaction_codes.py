"""Interactions held as codes read back as the same values as the text they came from."""

import pandas as pd
import pyarrow as pa

from features.id_sets import IdSet
from serving.interaction_codes import InteractionCodes

PROFILES = IdSet([pa.array(["p1", "p2", "p3", "p4"])])


def batch(rows, topic=True):
    frame = pd.DataFrame(rows, columns=["source_profile_id", "target_profile_id", "timestamp", "kind", "topic"])
    frame = frame.astype({"source_profile_id": "str", "target_profile_id": "str", "kind": "str",
                          "topic": "str", "timestamp": "datetime64[ns]"})
    return frame if topic else frame.drop(columns="topic")


def mentioned(frame):
    ids = pa.array(pd.concat([frame["source_profile_id"], frame["target_profile_id"]]).unique(),
                   type=pa.string())
    return ids, PROFILES.positions(ids)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({c: "str" for c in frame.columns if c != "timestamp"})


def test_batches_read_back_as_their_text_in_order():
    first = batch([("p1", "p2", "2024-01-01", "mention", "running"),
                   ("p3", "p1", "2024-01-02", "like", None)])
    second = batch([("p2", "p4", "2024-02-01", "share", "Running"),
                    ("p4", "p4", "2024-02-02", "mention", "running")])
    codes = InteractionCodes(PROFILES)
    codes.add(first, *mentioned(first))
    codes.add(second, *mentioned(second))
    frame = codes.frame()
    assert isinstance(frame["source_profile_id"].dtype, pd.CategoricalDtype)
    expected = pd.concat([first, second], ignore_index=True)
    pd.testing.assert_frame_equal(as_text(frame), expected)


def test_an_optional_topic_stays_absent_and_no_batch_gives_an_empty_frame_with_kind():
    codes = InteractionCodes(PROFILES)
    only = batch([("p1", "p2", "2024-01-01", "mention", None)], topic=False)
    codes.add(only, *mentioned(only))
    assert list(codes.frame().columns) == ["source_profile_id", "target_profile_id", "timestamp", "kind"]
    empty = InteractionCodes(PROFILES).frame()
    assert list(empty.columns) == ["source_profile_id", "target_profile_id", "timestamp", "kind"]
    assert len(empty) == 0


def test_id_set_positions_point_at_the_ids():
    values = pa.array(["p3", "zz", None, "p1"])
    where = PROFILES.positions(values)
    assert where[1] == -1 and where[2] == -1
    assert PROFILES.ids[int(where[0])].as_py() == "p3"
    assert PROFILES.ids[int(where[3])].as_py() == "p1"
