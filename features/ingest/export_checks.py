"""What real CRM exports get wrong, checked by the contract: repeated rows, implausible amounts,
rows from the future, column names the pipeline cannot carry, ids written differently per table.

Row problems come back as (mask, reason) pairs for features.ingest.contract.check_table, so every
engine (whole table, chunked scorer, Dask) rejects the same rows for the same reasons.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# Amounts (and margins) beyond this in absolute value are rejected as implausible: far above any real
# order, low enough that one stray 1e30 cannot put its customer at the top of every ranking.
MAX_AMOUNT = 1e9
# Characters an attribute column name may not hold: LightGBM's feature names are JSON-quoted (no
# [ ] { } " , :), MLflow params and charts read $ and backslashes as markup; control characters.
BAD_NAME_CHARACTERS = re.compile(r'[\[\]{}",:$\\\x00-\x1f]')
EXAMPLES = 5


def today() -> pd.Timestamp:
    """The run's wall-clock date: a row dated after it has not happened yet."""
    return pd.Timestamp.now().normalize()


def export_row_problems(table: str, raw: pd.DataFrame, typed: pd.DataFrame,
                        dated: str | None) -> list[tuple[np.ndarray, object]]:
    """(rows mask, reason) for exact duplicate transactions (the first kept), implausible amounts and
    margins, and rows whose ``dated`` column is after today."""
    out: list[tuple[np.ndarray, object]] = []
    if table == "transactions":
        # Every column equal: an export that repeated rows. Repeated order lines that are real
        # differ in an order line id or quantity (docs/data-contract.md).
        out.append((raw.duplicated(keep="first").to_numpy(), "duplicate row"))
        for name in ("amount", "margin"):
            if name in typed:
                out.append(((typed[name].abs() > MAX_AMOUNT).to_numpy(),
                            f"implausible {name} " + raw[name].astype("str").map(repr)))
    if dated is not None and dated in typed:
        tomorrow = today() + pd.Timedelta(days=1)
        out.append(((typed[dated] >= tomorrow).to_numpy(),
                    f"{dated} in the future " + raw[dated].astype("str").map(repr)))
    return out


def unusable_names(names) -> list[str]:
    """The column names that cannot become feature names (see BAD_NAME_CHARACTERS), or are blank."""
    return [str(n) for n in names if BAD_NAME_CHARACTERS.search(str(n)) or not str(n).strip()]


def normalised_id(ids: pd.Series) -> pd.Series:
    """Ids as a spreadsheet may have rewritten them, undone: blanks trimmed, a trailing ``.0``
    dropped, leading zeros dropped (``0000001``, ``1.0`` and `` 1 `` all become ``1``)."""
    out = ids.astype("str").str.strip().str.replace(r"\.0+$", "", regex=True).str.lstrip("0")
    return out.mask(out.eq(""), "0")


def unknown_id_hint(table: str, typed: pd.DataFrame, known: dict[str, pd.Index]) -> str:
    """Unknown ids of a reference column with examples, and whether they match after normalisation."""
    refs = {"transactions": {"customer_id": "customers"}, "social_profiles": {"customer_id": "customers"},
            "referrals": {"referrer_id": "customers", "referred_id": "customers"}}.get(table, {})
    for column, target in refs.items():
        if target not in known or column not in typed:
            continue
        ids = typed[column].dropna()
        unknown = ids[~ids.isin(known[target])].drop_duplicates()
        if not len(unknown):
            continue
        text = f"{column} values not in {target}: {_quoted(unknown)}"
        matching = normalised_id(unknown).isin(set(normalised_id(pd.Series(known[target])))).mean()
        if matching > 0.5:
            text += (f"; {matching:.0%} of them match a {target[:-1]} id once leading zeros, a trailing .0 and "
                     f"blanks are removed (the {target} table writes ids like {_quoted(known[target])}): "
                     "export the ids the same way in every table")
        return text
    return ""


def _quoted(values) -> str:
    shown = [repr(v) for v in list(values)[:EXAMPLES]]
    return ", ".join(shown) + (", ..." if len(values) > EXAMPLES else "")
