"""Interaction ends as profile codes: positions in the run's set of valid profiles.

The scorer streams the interactions in batches and keeps of each batch only numbers
(features.families.interaction_sums); the profile ids of both ends become positions in the profile set
(features.ingest.id_sets.IdSet), found once per distinct id of the batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.families.history import arrow_text

ENDS = ("source_profile_id", "target_profile_id")


def profile_positions(typed: pd.DataFrame, ids: pa.Array, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) int32 codes of a checked batch's rows (-1 where an id is missing or not in
    ``ids``). ``ids`` are distinct ids covering the batch's profile ids (e.g. all it mentions) and
    ``positions`` their positions in the profile set (IdSet.positions), so no id is hashed twice."""
    lookup = np.append(positions, -1).astype(np.int32)
    # Both ends in one lookup: Arrow builds the hash table of ``ids`` once, not once per end.
    ends = pa.chunked_array([arrow_text(typed[name]) for name in ENDS], type=pa.large_string())
    index = pc.index_in(ends, value_set=ids.cast(pa.large_string())).fill_null(-1)
    codes = lookup[index.to_numpy()] if len(typed) else np.array([], dtype=np.int32)
    return codes[:len(typed)], codes[len(typed):]
