"""Raw values to typed columns, as the contract reads them: ids as text, dates as naive UTC, numbers
as exports write them (features.ingest.numbers), text trimmed. Missing or blank stays missing."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from features.ingest.numbers import parse_numbers


def _parse_id(raw: pd.Series) -> pd.Series:
    """Ids become trimmed strings; numbers stored as ids (1001, 1001.0) keep their digits."""
    if pd.api.types.is_float_dtype(raw) and raw.dropna().mod(1).eq(0).all():
        raw = raw.astype("Int64")
    out = raw.astype("str").str.strip()
    out = out.where(raw.notna() & out.ne(""))
    return out.astype("str")


def _parse_date(raw: pd.Series) -> pd.Series:
    """Dates and datetimes, ISO strings accepted; timezone-aware values are converted to UTC."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    if pd.api.types.is_datetime64_dtype(raw):
        return raw.astype("datetime64[ns]")
    if pd.api.types.is_string_dtype(raw) and not _holds_objects(raw):
        text = raw.astype("str").str.strip()
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    else:  # datetime.date objects from Parquet date32, or mixed Python objects
        parsed = pd.to_datetime(raw, errors="coerce", utc=True)
    return parsed.dt.tz_localize(None).astype("datetime64[ns]")


def _holds_objects(raw: pd.Series) -> bool:
    if raw.dtype != object:
        return False
    sample = raw.dropna().head(100)
    return not all(isinstance(v, str) for v in sample)


def _parse_number(raw: pd.Series, decimal: str = "auto") -> pd.Series:
    """Typed numbers as they are; text as exports write it (features.ingest.numbers), in one style."""
    return parse_number_styled(raw, decimal, "value")[0]


def parse_number_styled(raw: pd.Series, decimal: str, column: str,
                        whole: bool = False) -> tuple[pd.Series, str | None, tuple | None]:
    """The values, the decimal mark text was read with (None: typed, or no mark needed) and the
    (row, raw value) of a value that needed that mark, for a message naming a style mixed across parts.
    Raises features.ingest.numbers.NumberStyleError."""
    if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw):
        return raw.astype("float64"), None, None
    values, style = parse_numbers(raw, decimal, column=column, whole=whole)
    return values, style.decimal, _needing(raw, style.decimal)


def _parse_text(raw: pd.Series) -> pd.Series:
    out = raw.astype("str").str.strip()
    return out.where(raw.notna() & out.ne("")).astype("str")


PARSERS = {"id": _parse_id, "date": _parse_date, "number": _parse_number, "text": _parse_text}
# Kinds whose parser keeps every present value (present_values) and only those: none can fail to parse.
TEXT_KINDS = ("id", "text")


def present_values(raw: pd.Series) -> pd.Series:
    """Raw values that carry something (not missing, not blank)."""
    present = raw.notna()
    if pd.api.types.is_string_dtype(raw) or raw.dtype == object:
        present &= raw.astype("str").str.strip().ne("")
    return present


def _needing(column: pd.Series, decimal: str | None) -> tuple | None:
    """(row, raw value) of the first value written with ``decimal`` as its mark, for a message."""
    if decimal is None:
        return None
    text = column.astype("str")
    hit = np.flatnonzero(text.str.contains(re.escape(decimal) + r"\d+\s*\D*$", regex=True).fillna(False).to_numpy())
    return (int(hit[0]), str(column.iloc[hit[0]])) if len(hit) else None
