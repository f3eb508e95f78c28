"""export_checks' fast paths give exactly what the plain pandas rule gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.ingest.export_checks import export_row_problems, repeated_rows

rows = st.lists(st.tuples(st.sampled_from(["C1", "C2", "C3", None]),
                          st.sampled_from(["2024-01-01", "2024-01-02", None]),
                          st.sampled_from(["5.00", "7.5", "7.50", None]),
                          st.sampled_from(["web", "store", None])), max_size=40)


@settings(max_examples=200, deadline=None)
@given(rows)
def test_repeated_rows_are_exactly_pandas_duplicated_keep_first(values):
    raw = pd.DataFrame(values, columns=["customer_id", "timestamp", "amount", "channel"], dtype="str")
    assert repeated_rows(raw).tolist() == raw.duplicated(keep="first").tolist()


def test_repeated_rows_without_the_key_columns_compares_every_column():
    raw = pd.DataFrame({"amount": ["1", "1", "2"], "channel": ["web", "web", "web"]})
    assert repeated_rows(raw).tolist() == [False, True, False]


def test_a_bad_row_is_named_by_its_raw_value_and_clean_rows_get_no_text():
    raw = pd.DataFrame({"customer_id": ["C1", "C2", "C3"], "timestamp": ["2024-01-01"] * 3,
                        "amount": ["5", "2e10", "7"]})
    typed = pd.DataFrame({"customer_id": raw["customer_id"], "timestamp": pd.to_datetime(raw["timestamp"]),
                          "amount": raw["amount"].astype("float64")})
    problems = {reason if isinstance(reason, str) else reason.dropna().iloc[0]: mask
                for mask, reason in export_row_problems("transactions", raw, typed, "timestamp")}
    assert problems["implausible amount '2e10'"].tolist() == [False, True, False]
    assert not problems["timestamp in the future "].any()
    assert np.asarray(problems["duplicate row"]).sum() == 0
