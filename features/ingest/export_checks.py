"""What real CRM exports get wrong, checked by the contract: repeated rows, implausible amounts,
rows from the future, column names the pipeline cannot carry, ids written differently per table.

Row problems come back as (mask, reason) pairs for features.ingest.contract.check_table, so every
engine (whole table, chunked scorer, Dask) rejects the same rows for the same reasons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.encoding import customer_codes
from features.errors import UserError
from features.ingest.numbers import DECIMAL_MARKS

# Amounts (and margins) beyond this in absolute value are rejected as implausible: far above any real
# order, low enough that one stray 1e30 cannot put its customer at the top of every ranking.
MAX_AMOUNT = 1e9
# Characters an attribute column name may not hold: LightGBM's feature names are JSON-quoted (no
# [ ] { } " , :), MLflow params and charts read $ and backslashes as markup; control characters.
BAD_NAME_CHARACTERS = re.compile(r'[\[\]{}",:$\\\x00-\x1f]')
EXAMPLES = 5
LARGEST_SHOWN = 3  # largest kept amounts named in a summary (ExportNotes)


@dataclass(frozen=True)
class ExportRules:
    """How a business's exports write values, set once per source (FeatureConfig, --decimal, --max-amount).

    decimal: the decimal mark of text numbers, ``.`` or ``,``; ``auto`` detects it per column.
    max_amount: amounts and margins beyond it in absolute value are rejected as implausible.
    """

    decimal: str = "auto"
    max_amount: float = MAX_AMOUNT

    def __post_init__(self):
        if self.decimal not in DECIMAL_MARKS:
            raise UserError(f"decimal mark must be one of {', '.join(repr(m) for m in DECIMAL_MARKS)}, "
                            f"not {self.decimal!r}")
        if not (isinstance(self.max_amount, int | float) and self.max_amount > 0):
            raise UserError(f"max_amount must be a positive number, not {self.max_amount!r}")


DEFAULT_RULES = ExportRules()


def today() -> pd.Timestamp:
    """The run's wall-clock date: a row dated after it has not happened yet."""
    return pd.Timestamp.now().normalize()


def export_row_problems(table: str, raw: pd.DataFrame, typed: pd.DataFrame, dated: str | None,
                        max_amount: float = MAX_AMOUNT) -> list[tuple[np.ndarray, object]]:
    """(rows mask, reason) for exact duplicate transactions (the first kept), amounts and margins
    beyond ``max_amount``, and rows whose ``dated`` column is after today."""
    out: list[tuple[np.ndarray, object]] = []
    if table == "transactions":
        # Every column equal: an export that repeated rows. Repeated order lines that are real
        # differ in an order line id or quantity (docs/data-contract.md).
        out.append((repeated_rows(raw), "duplicate row"))
        for name in ("amount", "margin"):
            if name in typed:
                bad = (typed[name].abs() > max_amount).to_numpy()
                out.append((bad, _naming(bad, f"implausible {name} ", raw[name])))
    if dated is not None and dated in typed:
        tomorrow = today() + pd.Timedelta(days=1)
        bad = (typed[dated] >= tomorrow).to_numpy()
        out.append((bad, _naming(bad, f"{dated} in the future ", raw[dated])))
    return out


def _naming(bad: np.ndarray, prefix: str, raw: pd.Series) -> pd.Series | str:
    """The reason of each bad row, naming its raw value (text is built for those rows only: turning a
    million amounts into text took most of a clean part's check)."""
    if not bad.any():
        return prefix
    out = pd.Series(None, index=raw.index, dtype=object)
    out[bad] = prefix + raw[bad].astype("str").map(repr)
    return out


def repeated_rows(raw: pd.DataFrame) -> np.ndarray:
    """raw.duplicated(keep="first"), computed on the rows that share customer and timestamp only:
    every column of a repeated row equals its first's, so no other row can be one (comparing all
    columns of every row took most of a clean part's check)."""
    keys = [c for c in ("customer_id", "timestamp") if c in raw.columns]
    if not keys or len(keys) == len(raw.columns):
        return raw.duplicated(keep="first").to_numpy()
    candidates = np.flatnonzero(raw.duplicated(subset=keys, keep=False).to_numpy())
    out = np.zeros(len(raw), dtype=bool)
    if len(candidates):
        out[candidates] = raw.iloc[candidates].duplicated(keep="first").to_numpy()
    return out


def unusable_names(names) -> list[str]:
    """The column names that cannot become feature names (see BAD_NAME_CHARACTERS), or are blank."""
    return [str(n) for n in names if BAD_NAME_CHARACTERS.search(str(n)) or not str(n).strip()]


def normalised_id(ids: pd.Series) -> pd.Series:
    """Ids as a spreadsheet may have rewritten them, undone: blanks trimmed, a trailing ``.0``
    dropped, leading zeros dropped (``0000001``, ``1.0`` and `` 1 `` all become ``1``)."""
    out = ids.astype("str").str.strip().str.replace(r"\.0+$", "", regex=True).str.lstrip("0")
    return out.mask(out.eq(""), "0")


# Columns that name a row of another table: table -> column -> the table it refers to.
ID_REFERENCES = {"transactions": {"customer_id": "customers"}, "social_profiles": {"customer_id": "customers"},
                 "referrals": {"referrer_id": "customers", "referred_id": "customers"}}
UNKNOWN_KEPT = 100  # unknown ids a part of a table keeps for the whole table's message


def unknown_ids(table: str, typed: pd.DataFrame, known: dict[str, pd.Index],
                limit: int | None = None) -> dict[str, list[str]]:
    """Per reference column, its distinct ids that the referenced table lacks (the first ``limit``)."""
    out = {}
    for column, target in ID_REFERENCES.get(table, {}).items():
        if target in known and column in typed:
            ids = typed[column].dropna()
            unknown = ids[~ids.isin(known[target])].drop_duplicates()
            if len(unknown):
                out[column] = unknown.head(limit).tolist() if limit else unknown.tolist()
    return out


def unknown_id_hint(table: str, typed: pd.DataFrame, known: dict[str, pd.Index]) -> str:
    """Unknown ids of a reference column with examples, and whether they match after normalisation."""
    return id_hint(table, unknown_ids(table, typed, known), known.get)


def id_hint(table: str, unknown: dict[str, list[str]], known_ids) -> str:
    """The sentence naming a table's unknown ids; ``known_ids(target)`` gives the referenced table's
    ids (None: unknown), to say whether the ids would match once normalised (normalised_id)."""
    for column, target in ID_REFERENCES.get(table, {}).items():
        if not unknown.get(column):
            continue
        values = pd.Series(unknown[column], dtype="str")
        text = f"{column} values not in {target}: {_quoted(values)}"
        keys = known_ids(target) if known_ids is not None else None
        if keys is None or not len(keys):
            return text
        keys = pd.Series(keys, dtype="str")
        matching = normalised_id(values).isin(set(normalised_id(keys))).mean()
        # Only part of the referenced ids may be known yet (a chunked run stopping early): then the
        # ids' forms tell, when the referenced ids change under normalisation and these do not.
        rewritten = (normalised_id(keys) != keys).mean() > 0.5 and (normalised_id(values) == values).mean() > 0.5
        if matching > 0.5:
            text += (f"; {matching:.0%} of them match a {target[:-1]} id once leading zeros, a trailing .0 and "
                     f"blanks are removed (the {target} table writes ids like {_quoted(keys)}): "
                     "export the ids the same way in every table")
        elif rewritten:
            text += (f"; they look like {target[:-1]} ids rewritten by a spreadsheet: the {target} table writes "
                     f"ids like {_quoted(keys)}, which change once leading zeros, a trailing .0 and blanks are "
                     "removed: export the ids the same way in every table")
        return text
    return ""


def _quoted(values) -> str:
    shown = [repr(v) for v in list(values)[:EXAMPLES]]
    return ", ".join(shown) + (", ..." if len(values) > EXAMPLES else "")


@dataclass
class ExportNotes:
    """Facts about kept rows that a user should see in the summary, though no rule rejects them.

    before_signup: transactions dated before their customer's signup_date (kept: real CRMs create
        the account after a guest or in-store first purchase); customers: how many customers have one.
    largest: the largest kept amounts, so that a misplaced decimal mark or a test order stands out.
    """

    before_signup: int = 0
    before_signup_customers: int = 0
    largest: tuple[float, ...] = ()

    def __add__(self, other: ExportNotes) -> ExportNotes:
        return ExportNotes(self.before_signup + other.before_signup,
                           self.before_signup_customers + other.before_signup_customers,
                           tuple(sorted(self.largest + other.largest, reverse=True)[:LARGEST_SHOWN]))

    def lines(self) -> list[str]:
        out = []
        if self.largest:
            out.append("largest amounts kept: " + ", ".join(f"{a:,.2f}" for a in self.largest))
        if self.before_signup:
            out.append(f"{self.before_signup:,} transactions of {self.before_signup_customers:,} customers are dated "
                       "before the customer's signup_date (kept: accounts are often opened after a first purchase)")
        return out



def export_notes(customers: pd.DataFrame, transactions: pd.DataFrame) -> ExportNotes:
    """ExportNotes of valid (typed) customers and transactions: the same customers' rows in both."""
    if transactions is None or not len(transactions):
        return ExportNotes()
    # Each transaction's customer by position (Arrow's encoding): Series.map hashed every id as a
    # Python string, 0.4 s per million transactions.
    owner = customer_codes(pd.Index(customers["customer_id"]), transactions["customer_id"])
    found = owner >= 0
    signup = customers["signup_date"].to_numpy("datetime64[ns]")
    early = np.zeros(len(transactions), dtype=bool)
    early[found] = transactions["timestamp"].to_numpy("datetime64[ns]")[found] < signup[owner[found]]  # NaT: False
    largest = transactions["amount"].nlargest(LARGEST_SHOWN)
    return ExportNotes(int(early.sum()), int(transactions.loc[early, "customer_id"].nunique()),
                       tuple(float(a) for a in largest))
