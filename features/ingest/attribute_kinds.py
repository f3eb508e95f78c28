"""Whole-table kind (number or text) of each static customer attribute, when customers arrive in chunks.

The contract types an attribute column by looking at all of it: numbers when every present value
parses as a number, text (categorical) otherwise. A chunk sees only part of the column and could
decide differently (a chunk of a postcode column that happens to hold only digits), so the scorer
decides once from every batch of the source and puts each chunk's column back to that kind.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.ingest.contract import PARSERS

KEY_COLUMNS = ("customer_id", "signup_date")


class AttributeKinds:
    """Accumulates, batch by batch, whether each attribute column is numeric in the whole table."""

    def __init__(self):
        self.typed_numeric: dict[str, bool] = {}
        self.present: dict[str, bool] = {}
        self.all_numeric: dict[str, bool] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        for name in batch.schema.names:
            if name in KEY_COLUMNS or name.startswith("__clv_"):
                continue
            column = batch.column(name)
            if pa.types.is_dictionary(column.type):
                column = column.dictionary  # the distinct values decide, not how often they occur
            raw = column.to_pandas()
            numeric_type = pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw)
            self.typed_numeric[name] = numeric_type
            if numeric_type:
                continue
            raw = pd.Series(raw.dropna().unique(), dtype=raw.dtype)
            text = raw.astype("str").str.strip()
            present = text.ne("")
            numbers = pd.to_numeric(text, errors="coerce")
            self.present[name] = self.present.get(name, False) or bool(present.any())
            self.all_numeric[name] = self.all_numeric.get(name, True) and bool(numbers[present].notna().all())

    def kinds(self) -> dict[str, str]:
        """Column -> "number" or "text", as features.ingest.contract types the whole column."""
        out = {}
        for name, typed in self.typed_numeric.items():
            numeric = typed or (self.present.get(name, False) and self.all_numeric.get(name, True))
            out[name] = "number" if numeric else "text"
        return out


def conform_attributes(typed: pd.DataFrame, raw: pd.DataFrame, kept: np.ndarray,
                       kinds: dict[str, str]) -> pd.DataFrame:
    """The chunk's typed customers with every attribute in its whole-table kind.

    ``raw`` is the chunk's raw customers frame and ``kept`` the positions in it of the rows of
    ``typed`` (the rows the contract did not reject).
    """
    out = typed
    for name, kind in kinds.items():
        if name not in typed.columns:
            continue
        column = typed[name]
        is_category = isinstance(column.dtype, pd.CategoricalDtype)
        if kind == "text" and not is_category:
            text = PARSERS["text"](raw[name]).iloc[kept]
            out = out.assign(**{name: text.astype("category").array})
        elif kind == "number" and is_category:
            # Only a chunk whose values are all missing types a numeric column as text.
            out = out.assign(**{name: np.full(len(typed), np.nan)})
    return out
