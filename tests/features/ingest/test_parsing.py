"""Ids and text parse every value that carries something, and nothing else: check_table counts their
present values from the parsed column rather than trimming every value a second time."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.ingest.parsing import PARSERS, TEXT_KINDS, present_values

texts = st.one_of(st.none(), st.just(np.nan), st.sampled_from(["", " ", "\t\n", "\u00a0", "nan", "None"]),
                  st.text(alphabet=" \tab1.\u3000", max_size=4))
anything = st.one_of(texts, st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=False), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(texts, max_size=12).map(lambda v: pd.Series(v, dtype="str")),
                 st.lists(texts, max_size=12).map(lambda v: pd.Series(v, dtype=object)),
                 st.lists(anything, max_size=12).map(lambda v: pd.Series(v, dtype=object)),
                 st.lists(st.one_of(st.none(), st.floats(-5, 5)), max_size=12).map(
                     lambda v: pd.Series(v, dtype="float64")),
                 st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=12).map(
                     lambda v: pd.Series(v, dtype="Int64"))),
       st.sampled_from(TEXT_KINDS))
def test_an_id_or_text_value_parses_exactly_when_it_is_present(raw, kind):
    parsed = PARSERS[kind](raw)
    assert parsed.notna().tolist() == present_values(raw).tolist()
