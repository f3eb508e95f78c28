"""Checked interactions held as integer codes while the population-wide families need them.

The population step holds every interaction before as_of in one process (the graph cannot be cut
into chunks). As text, a row costs about 80 bytes (two profile ids, kind, topic); as codes about 18:
profile ids become positions in the run's set of valid profiles (features.id_sets.IdSet) and kind
and topic codes of their few distinct labels. The feature families read the result as categoricals
(features.profiles encodes each category once), so the features are the same as from text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.history import arrow_text
from features.id_sets import IdSet

ENDS = ("source_profile_id", "target_profile_id")
LABELS = ("kind", "topic")


class InteractionCodes:
    """Collects checked interaction batches (contract-typed frames) as codes; ``frame()`` returns
    them as one frame with categorical ids and labels."""

    def __init__(self, profiles: IdSet, profile_ids: pd.CategoricalDtype | None = None):
        self.profiles = profiles
        # The ids' categorical type; pass one to share it with other tables (see frame()).
        self.profile_ids = profile_ids
        self.parts: dict[str, list[np.ndarray]] = {c: [] for c in (*ENDS, "timestamp", *LABELS)}
        self.labels: dict[str, dict[str, int]] = {c: {} for c in LABELS}
        self.columns: set[str] = set()

    def add(self, typed: pd.DataFrame, ids: pa.Array, positions: np.ndarray) -> None:
        """Add a checked batch. ``ids`` are distinct ids covering the batch's profile ids (e.g. all
        it mentions) and ``positions`` their positions in the profile set (IdSet.positions), so no
        id is hashed twice."""
        self.columns.update(typed.columns)
        lookup = np.append(positions, -1).astype(np.int32)
        # Both ends in one lookup: Arrow builds the hash table of ``ids`` once, not once per end.
        ends = pa.chunked_array([arrow_text(typed[name]) for name in ENDS], type=pa.large_string())
        index = pc.index_in(ends, value_set=ids.cast(pa.large_string())).fill_null(-1)
        codes = lookup[index.to_numpy()] if len(typed) else np.array([], dtype=np.int32)
        for i, name in enumerate(ENDS):
            self.parts[name].append(codes[i * len(typed):(i + 1) * len(typed)])
        self.parts["timestamp"].append(typed["timestamp"].to_numpy("datetime64[ns]"))
        for name in LABELS:
            if name in typed.columns:
                self.parts[name].append(self._label_codes(name, typed[name]))
            else:
                self.parts[name].append(np.full(len(typed), -1, dtype=np.int16))

    def _label_codes(self, name: str, values: pd.Series) -> np.ndarray:
        encoded = arrow_text(values).dictionary_encode()
        seen = self.labels[name]
        lookup = np.array([seen.setdefault(label, len(seen)) for label in encoded.dictionary.to_pylist()]
                          + [-1], dtype=np.int16)
        return lookup[encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)]

    def frame(self) -> pd.DataFrame:
        """The collected rows as one frame, taking each column's batches (freed as soon as it is
        joined, so at most one column is held twice): call it once, after the last add()."""
        ids = self.profile_ids
        if ids is None:
            ids = pd.CategoricalDtype(pd.Index(self.profiles.ids.to_pandas(), dtype="str"))
        out = {name: pd.Categorical.from_codes(_joined(self.parts.pop(name), np.int32), dtype=ids, validate=False)
               for name in ENDS}
        out["timestamp"] = _joined(self.parts.pop("timestamp"), "datetime64[ns]")
        for name in LABELS:
            if name in self.columns or name == "kind":  # kind is required, topic optional
                labels = pd.Index(list(self.labels[name]), dtype="str")
                out[name] = pd.Categorical.from_codes(_joined(self.parts.pop(name), np.int16),
                                                      dtype=pd.CategoricalDtype(labels), validate=False)
        return pd.DataFrame(out, copy=False)


def _joined(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.array([], dtype=dtype)
