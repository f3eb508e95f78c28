"""export_checks' fast paths give exactly what the plain pandas rule gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.ingest.export_checks import export_notes, export_row_problems, repeated_rows

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


signups = st.lists(st.sampled_from(["2024-01-01", "2024-01-03", None]), min_size=1, max_size=4)
purchases = st.lists(st.tuples(st.sampled_from(["C0", "C1", "C2", "C3", "C9"]),
                               st.sampled_from(["2023-12-31", "2024-01-02", "2024-01-05", None]),
                               st.floats(0, 100)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(signups, purchases)
def test_notes_count_the_transactions_dated_before_their_customers_signup_as_a_plain_lookup_does(dates, values):
    customers = pd.DataFrame({"customer_id": pd.array([f"C{i}" for i in range(len(dates))], dtype="str"),
                              "signup_date": pd.to_datetime(pd.Series(dates, dtype=object))})
    transactions = pd.DataFrame(values, columns=["customer_id", "timestamp", "amount"]).astype(
        {"customer_id": "str", "amount": "float64"})
    transactions["timestamp"] = pd.to_datetime(transactions["timestamp"])
    signup = transactions["customer_id"].map(customers.set_index("customer_id")["signup_date"])
    early = (transactions["timestamp"] < signup).to_numpy()  # unknown customer or a missing date: not early
    notes = export_notes(customers, transactions)
    assert notes.before_signup == int(early.sum())
    assert notes.before_signup_customers == transactions.loc[early, "customer_id"].nunique()
