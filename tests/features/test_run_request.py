"""The run's cutoff and horizon: ISO dates only, one rule for the default as_of, one error type."""

import pandas as pd
import pytest

from features.errors import UserError
from features.run_request import RunRequest, check_cutoff, default_as_of, parse_date, parse_horizon


def test_an_iso_date_is_a_naive_midnight_timestamp():
    stamp = parse_date("2025-06-01")
    assert stamp == pd.Timestamp("2025-06-01") and stamp.tzinfo is None and stamp.unit == "ns"


@pytest.mark.parametrize("text", ["yesterday", "June 1", "01/06/2025", "2025-6-1", "2025-06-01T00:00",
                                  "20250601", ""])
def test_anything_but_yyyy_mm_dd_is_refused_in_one_line_naming_the_option(text):
    with pytest.raises(UserError, match=r"^--as-of .* is not a date in the form YYYY-MM-DD"):
        parse_date(text)


def test_an_impossible_calendar_date_is_refused():
    with pytest.raises(UserError, match="not a calendar date"):
        parse_date("2025-02-30")


def test_the_default_as_of_is_the_day_after_the_latest_transaction():
    assert default_as_of(pd.Timestamp("2025-12-31 23:59")) == pd.Timestamp("2026-01-01")
    assert default_as_of(pd.Timestamp("2025-12-31")) == pd.Timestamp("2026-01-01")
    with pytest.raises(UserError, match="no valid transaction"):
        default_as_of(None)
    with pytest.raises(UserError, match="no valid transaction"):
        default_as_of(pd.NaT)


def test_a_future_dated_transaction_stops_a_run_without_as_of_instead_of_dating_it_in_the_future():
    with pytest.raises(UserError, match=r"latest transaction is dated 2052-03-01, after today \(2026-12-03\)"):
        default_as_of(pd.Timestamp("2052-03-01"), today=pd.Timestamp("2026-12-03"))
    assert default_as_of(pd.Timestamp("2026-12-03 18:00"), today=pd.Timestamp("2026-12-03")) == pd.Timestamp("2026-12-04")


def test_a_request_resolves_its_cutoff_once():
    asked = RunRequest.from_text("2025-03-01", 91)
    assert asked.resolve_as_of(pd.Timestamp("2030-01-01")) == pd.Timestamp("2025-03-01")
    assert asked.horizon_days == 91
    default = RunRequest.from_text(None)
    assert default.resolve_as_of(pd.Timestamp("2025-12-31 10:00")) == pd.Timestamp("2026-01-01")


def test_a_horizon_is_a_positive_whole_number_of_days():
    assert parse_horizon(365) == 365
    for bad in (0, -5, 1.5, True):
        with pytest.raises(UserError, match="positive number of days"):
            parse_horizon(bad)


def test_python_callers_pass_timestamps():
    assert check_cutoff(pd.Timestamp("2025-01-01")) == pd.Timestamp("2025-01-01")
    with pytest.raises(TypeError):
        check_cutoff("2025-01-01")
