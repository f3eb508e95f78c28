"""Numbers as exports write them: currency marks, thousands separators, a decimal point or comma.

A CRM export writes ``$1,380.19``, ``1 380,19 EUR``, ``1.380,19 €`` or ``(12.50)``. Each text column is
read in one style, its decimal mark either given (``.`` or ``,``) or detected from the column: a value
such as ``1,380.19`` or ``12,5`` can only be one style. A column whose values need both marks, or
whose values never tell them apart (every separated value is like ``1,380`` or ``1.380``), is a
structural error naming examples, never a silent partial rejection of one magnitude. A column
mixing currencies (``$`` and ``EUR``) is refused too: its amounts are not comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DECIMAL_MARKS = ("auto", ".", ",")
EXAMPLES = 3

# One value: a sign or accounting parentheses, a currency mark before or after, then the digits.
_CURRENCY = r"(?:[A-Z]{3}|[A-Z]{0,2}[$€£¥₹₩₽¢]|kr)"
_SPACES = "' \u00a0\u202f"  # thousands separators that are never a decimal mark
_VALUE = (
    rf"^(?P<open>\()?\s*(?P<sign>[-+−])?\s*(?P<cur1>{_CURRENCY})?\s*(?P<sign2>[-+−])?\s*"
    rf"(?P<num>\d(?:[\d.,{_SPACES}]*\d)?)\s*(?P<cur2>{_CURRENCY})?\s*(?P<trail>-)?\s*(?P<close>\))?$"
)
_GROUP_HEAD = r"[1-9]\d{0,2}"  # the digits before the first thousands separator
_ONE_COMMA_GROUP = rf"{_GROUP_HEAD},\d{{3}}"  # "1,380": thousands, or a decimal comma?
_ONE_DOT_GROUP = rf"{_GROUP_HEAD}\.\d{{3}}"  # "1.380": thousands, or a decimal point?
# (pattern of the digits, the decimal mark it proves: "." or ",", "-" none needed, "?" either fits)
_EVIDENCE = (
    (r"\d+", "-"),
    (rf"{_GROUP_HEAD}(?:[{_SPACES}]\d{{3}})+\.\d+", "."),
    (rf"{_GROUP_HEAD}(?:[{_SPACES}]\d{{3}})+,\d+", ","),
    (rf"{_GROUP_HEAD}(?:[{_SPACES}]\d{{3}})+", "-"),
    (rf"{_GROUP_HEAD}(?:,\d{{3}})+\.\d+", "."),
    (rf"{_GROUP_HEAD}(?:\.\d{{3}})+,\d+", ","),
    (_ONE_COMMA_GROUP, "?"),
    (rf"{_GROUP_HEAD}(?:,\d{{3}}){{2,}}", "."),
    (_ONE_DOT_GROUP, "?"),
    (rf"{_GROUP_HEAD}(?:\.\d{{3}}){{2,}}", ","),
    (r"\d+\.\d+", "."),
    (r"\d+,\d+", ","),
)


class NumberStyleError(ValueError):
    """A column's numbers cannot be read in one style; the message names examples and their rows."""


@dataclass
class NumberStyle:
    """The decimal mark a column was read with (None: no value needed one) and its currency marks."""

    decimal: str | None = None
    currencies: set[str] = field(default_factory=set)


def parse_numbers(raw: pd.Series, decimal: str = "auto", *, column: str = "value",
                  whole: bool = False) -> tuple[pd.Series, NumberStyle]:
    """Float values of a text column read in one style, and the style; values fitting no style are NaN.

    decimal: ``.`` or ``,`` imposes the decimal mark; ``auto`` detects it from the column's values.
    whole: the column counts things (followers, quantity), so ``12,345`` and ``12.345`` can only
        hold a thousands separator: they tell the style rather than leave it open.
    Raises NumberStyleError when the column needs both marks, when ``auto`` cannot tell them
    apart, or when it mixes currencies. Row numbers in messages are the Series' positions.
    """
    if decimal not in DECIMAL_MARKS:
        raise NumberStyleError(f"decimal mark must be one of {', '.join(DECIMAL_MARKS)}, not {decimal!r}")
    text = pd.Series(raw.astype("str").str.strip().where(raw.notna()).to_numpy(), dtype="str")
    has_comma = text.str.contains(",", regex=False).fillna(False).astype(bool)
    plain = pd.to_numeric(text.where(~has_comma), errors="coerce")
    # Plain numbers need no style, except a dot before exactly three digits ("1.380"), which a
    # decimal-comma export writes for one thousand three hundred and eighty.
    grouped_dot = text.str.fullmatch(rf"[-+]?{_ONE_DOT_GROUP}").fillna(False).astype(bool)
    dotted = plain.notna() & text.str.contains(".", regex=False).fillna(False).astype(bool) & ~grouped_dot
    styled = text.notna() & (plain.isna() | grouped_dot)
    if not styled.any():
        return plain.astype("float64"), NumberStyle()
    rest = text[styled]
    parts = rest.str.extract(_VALUE)
    evidence = _evidence(parts["num"], whole)
    currency = parts["cur1"].fillna(parts["cur2"])
    style = NumberStyle(currencies=set(currency.dropna()))
    if len(style.currencies) > 1:
        firsts = rest[currency.notna()].groupby(currency.dropna()).head(1).sort_index()
        raise NumberStyleError(f"column '{column}' mixes currencies ({', '.join(sorted(style.currencies))}) "
                               f"{_where(firsts)}: convert them to one currency")

    def written_with(mark: str) -> pd.Series:
        found = rest[evidence.eq(mark)]
        return pd.concat([found, text[dotted]]).sort_index() if mark == "." else found

    marks = set(evidence[evidence.isin([".", ","])]) | ({"."} if dotted.any() else set())
    if decimal != "auto":
        other = "," if decimal == "." else "."
        if other in marks:
            raise NumberStyleError(f"column '{column}' is read with decimal mark {decimal!r} but holds values "
                                   f"written with {other!r} {_where(written_with(other))}: export one style")
        style.decimal = decimal
    elif len(marks) > 1:
        raise NumberStyleError(f"column '{column}' mixes number styles: decimal point {_where(written_with('.'))} "
                               f"and decimal comma {_where(written_with(','))}: export one style")
    elif marks:
        style.decimal = marks.pop()
    elif evidence.eq("?").any():
        raise NumberStyleError(f"column '{column}' does not show whether ',' or '.' separates thousands or "
                               f"decimals {_where(rest[evidence.eq('?')])}: pass the decimal mark "
                               "(--decimal . or --decimal ,)")
    out = plain.copy()
    out[rest.index] = _read(parts, evidence, style.decimal or ".").to_numpy()
    return pd.Series(out.to_numpy(dtype="float64"), index=raw.index), style


def _evidence(digits: pd.Series, whole: bool = False) -> pd.Series:
    """The decimal mark each value's digits can only have been written with ("." or ","), "-" when
    none is needed, "?" when either fits, None when the digits are no number in any style. In a
    count (``whole``) one separator before three digits is a thousands separator."""
    masks = [digits.str.fullmatch(pattern).fillna(False).astype(bool).to_numpy() for pattern, _ in _EVIDENCE]
    marks = [mark for _, mark in _EVIDENCE]
    if whole:
        marks = [{_ONE_COMMA_GROUP: ".", _ONE_DOT_GROUP: ","}.get(pattern, mark) for pattern, mark in _EVIDENCE]
    found = np.select(masks, marks, default="")
    return pd.Series(found, index=digits.index, dtype=object).replace("", None)


def _read(parts: pd.DataFrame, evidence: pd.Series, mark: str) -> pd.Series:
    """Values read with ``mark`` as the decimal mark; NaN where the digits or signs do not fit it."""
    thousands = "," if mark == "." else "."
    number = (parts["num"].str.replace(f"[{_SPACES}]", "", regex=True)
              .str.replace(thousands, "", regex=False).str.replace(mark, ".", regex=False))
    values = pd.to_numeric(number.where(evidence.isin([mark, "-", "?"])), errors="coerce").astype("float64")
    parenthesised = parts["open"].notna() & parts["close"].notna()
    negative = (parts["sign"].isin(["-", "−"]) | parts["sign2"].isin(["-", "−"]) | parts["trail"].eq("-")
                | parenthesised).fillna(False).astype(bool)
    malformed = ((parts["open"].notna() != parts["close"].notna())
                 | (parts["sign"].notna() & parts["sign2"].notna())
                 | (parenthesised & (parts["sign"].notna() | parts["sign2"].notna()))).astype(bool)
    values = values.where(~malformed)
    return values.where(~negative, -values)


def _where(values: pd.Series) -> str:
    """``(rows 3, 9; e.g. '1,380', '2,500')``: positions counted from 0, as in the rejects files."""
    shown = values.head(EXAMPLES)
    rows = ", ".join(str(int(i)) for i in shown.index) + (", ..." if len(values) > EXAMPLES else "")
    return f"(rows {rows}; e.g. {', '.join(repr(v) for v in shown)})"
