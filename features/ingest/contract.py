"""The data contract: which columns each table must have, how raw values are parsed, which rows are rejected.

Structural problems (a missing required table or column, a column that cannot be parsed at all, a
duplicate customer_id, too many rejected rows) raise ContractError before anything is written.
Row-level problems move the row to a rejects frame with a ``reason``; rows in = rows kept + rows
rejected, always. The column rules are declared once in ``TABLE_SPECS`` and checked with pandera.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

from features.errors import UserError
from features.ingest.export_checks import (
    DEFAULT_RULES,
    UNKNOWN_KEPT,
    ExportRules,
    export_row_problems,
    unknown_id_hint,
    unknown_ids,
    unusable_names,
)
from features.ingest.numbers import NumberStyleError
from features.ingest.parsing import PARSERS, TEXT_KINDS, parse_number_styled, present_values
from features.tables import OPTIONAL_TABLES, REQUIRED_TABLES, TABLE_NAMES, Tables


class ContractError(UserError):
    """A structural problem with the input: the run stops before any output is written."""


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str  # "id" | "date" | "number" | "text"
    required: bool = True  # the column must exist
    nullable: bool = False  # empty values are allowed
    description: str = ""


def _col(name, kind, required=True, nullable=False, description=""):
    return ColumnSpec(name, kind, required, nullable, description)


TABLE_SPECS: dict[str, tuple[ColumnSpec, ...]] = {
    "customers": (
        _col("customer_id", "id", description="unique, non-empty customer key"),
        _col("signup_date", "date", description="date the customer joined"),
    ),
    "transactions": (
        _col("customer_id", "id", description="a customer_id of the customers table"),
        _col("timestamp", "date", description="when the order or refund happened"),
        _col("amount", "number", description="net amount; negative = refund or return"),
        _col("order_id", "id", required=False, nullable=True, description="order key"),
        _col("quantity", "number", required=False, nullable=True, description="items"),
        _col("category", "text", required=False, nullable=True, description="product category"),
        _col("channel", "text", required=False, nullable=True, description="web, store, app..."),
        _col("margin", "number", required=False, nullable=True, description="gross margin"),
    ),
    "social_profiles": (
        _col("profile_id", "id", description="social account key"),
        _col("customer_id", "id", nullable=True, description="empty when not a customer"),
        _col("network", "text", description="instagram, x, tiktok..."),
        _col("snapshot_date", "date", description="date the metrics were read"),
        _col("followers", "number", description=">= 0"),
        _col("following", "number", description=">= 0"),
        _col("posts", "number", description=">= 0"),
        _col("engagements", "number", description="likes, comments, shares received, >= 0"),
        _col("influence_score", "number", required=False, nullable=True,
             description="vendor score, 0-100"),
    ),
    "social_interactions": (
        _col("source_profile_id", "id", description="profile that mentions, shares, replies, likes"),
        _col("target_profile_id", "id", description="profile that is mentioned, shared..."),
        _col("timestamp", "date", description="when it happened"),
        _col("kind", "text", description="mention, share, reply or like"),
        _col("topic", "text", required=False, nullable=True, description="topic of the content"),
    ),
    "referrals": (
        _col("referrer_id", "id", description="customer who referred"),
        _col("referred_id", "id", description="customer who was referred"),
        _col("timestamp", "date", description="when the referral happened"),
    ),
}

# Columns a source may lack; a model trained with one needs it at scoring (serving.scoring.core).
OPTIONAL_COLUMNS = {table: tuple(s.name for s in specs if not s.required) for table, specs in TABLE_SPECS.items()}


def optional_columns_present(columns: dict[str, Iterable[str]]) -> dict[str, list[str]]:
    """Per table of a source (table -> its column names), the optional contract columns it has."""
    return {table: [c for c in OPTIONAL_COLUMNS.get(table, ()) if c in set(names)]
            for table, names in columns.items()}


# The column that dates each row of a table: a run cut at `until` never sees rows dated on or after it.
TIME_COLUMNS = {"transactions": "timestamp", "social_profiles": "snapshot_date",
                "social_interactions": "timestamp", "referrals": "timestamp"}
NON_NEGATIVE = {"social_profiles": ("followers", "following", "posts", "engagements")}
# Columns that count things: "12,345" there can only hold a thousands separator (features.ingest.numbers).
COUNTS = {"followers", "following", "posts", "engagements", "quantity"}
EXAMPLES = 5  # offending values quoted in an error message
QUOTED = re.compile(r" '.*?'")  # the offending value quoted in a reject reason


def _examples(values, limit: int = EXAMPLES) -> str:
    shown = [repr(v) for v in list(values)[:limit]]
    return ", ".join(shown) + (", ..." if len(values) > limit else "")


def _rows(positions, limit: int = EXAMPLES) -> str:
    shown = [str(int(p)) for p in list(positions)[:limit]]
    return ", ".join(shown) + (", ..." if len(positions) > limit else "")


# ---------------------------------------------------------------- row reasons

class _Reasons:
    """Accumulates reject reasons per row position of one table."""

    def __init__(self, n: int):
        self.n = n
        self.parts: list[pd.Series] = []

    def add(self, mask, reason) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            if isinstance(reason, pd.Series):
                text = reason[mask]
            else:
                text = pd.Series(reason, index=np.flatnonzero(mask))
            self.parts.append(pd.Series(np.asarray(text, dtype=object), index=np.flatnonzero(mask)))

    def joined(self) -> pd.Series:
        if not self.parts:
            return pd.Series([], dtype=object)
        allr = pd.concat(self.parts)
        return allr.groupby(level=0, sort=True).agg(lambda r: "; ".join(dict.fromkeys(r)))


def _schema(table: str, known: dict[str, pd.Index]) -> pa.DataFrameSchema:
    """pandera schema of a parsed table: types, non-null rules and value checks, each named by its reason."""
    columns = {}
    for spec in TABLE_SPECS[table]:
        checks = []
        if spec.kind == "number":
            checks.append(pa.Check(lambda s: np.isfinite(s) | s.isna(), name="is not a finite number"))
        if spec.name in NON_NEGATIVE.get(table, ()):
            checks.append(pa.Check(lambda s: ~(s < 0), name="is negative"))
        if spec.name == "influence_score":
            checks.append(pa.Check(lambda s: ~((s < 0) | (s > 100)), name="is outside 0-100"))
        dtype = {"id": "str", "text": "str", "number": "float64", "date": "datetime64[ns]"}[spec.kind]
        columns[spec.name] = pa.Column(dtype, checks=checks, nullable=spec.nullable, required=False)
    refs = {
        "transactions": {"customer_id": "customers"},
        "social_profiles": {"customer_id": "customers"},
        "social_interactions": {"source_profile_id": "profiles", "target_profile_id": "profiles"},
        "referrals": {"referrer_id": "customers", "referred_id": "customers"},
    }.get(table, {})
    for column, target in refs.items():
        if target in known:
            noun = "customer" if target == "customers" else "profile"
            columns[column].checks.append(pa.Check(_known_test(known[target]), name=f"refers to an unknown {noun}"))
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def _known_test(keys) -> Callable[[pd.Series], pd.Series]:
    """The reference check's test of a column: its ids found in ``keys``, a pd.Index of the known
    ids, or an object whose ``known_rows(ids)`` answers for the rows being checked (the population
    step's features.population.EndCodes, which looks every id of a batch up once for the check and
    the sums). Missing ids pass either way: the non-null rule reports them."""
    if hasattr(keys, "known_rows"):
        return lambda s: pd.Series(keys.known_rows(s), index=s.index)
    arrow = _arrow_strings(keys)
    return lambda s: _known(s, arrow)


def _known(ids: pd.Series, keys: pyarrow.Array) -> pd.Series:
    """ids found in keys (missing ids pass: the non-null rule reports them); Arrow's hash set is
    far faster than Series.isin on string columns with millions of rows."""
    found = pc.is_in(_arrow_strings(ids), value_set=keys)
    return pd.Series(found.fill_null(True).to_numpy(zero_copy_only=False), index=ids.index)


def _arrow_strings(values) -> pyarrow.Array:
    """Zero-copy Arrow view of a pandas str Series or Index."""
    return pyarrow.array(values).cast(pyarrow.large_string())


def _failures_to_reasons(reasons: _Reasons, failure_cases: pd.DataFrame, skip: set) -> None:
    rows = failure_cases.dropna(subset=["index"])
    if len(rows) < len(failure_cases):  # a whole-column failure, e.g. a dtype: cannot happen after parsing
        bad = failure_cases[failure_cases["index"].isna()]
        raise ContractError(f"column check failed: {bad[['column', 'check']].to_dict('records')}")
    for (column, check), group in rows.groupby(["column", "check"], sort=False):
        idx = group["index"].astype(int).to_numpy()
        if check == "not_nullable":
            idx = np.array([i for i in idx if (column, i) not in skip], dtype=int)
            text = f"missing {column}"
        elif check.startswith("refers to an unknown"):  # name the id: it is what the user must look for
            text = pd.Series("", index=range(reasons.n), dtype=object)
            text.iloc[idx] = [f"{column} {check} {v!r}" for v in group["failure_case"].astype("str")]
        else:
            text = f"{column} {check}"
        mask = np.zeros(reasons.n, dtype=bool)
        mask[idx] = True
        reasons.add(mask, text)


# ---------------------------------------------------------------- tables

@dataclass
class ColumnParse:
    """How many present values of a column a part of a table had, and how many failed to parse."""

    kind: str
    present: int
    failed: int
    rows: list[int] = field(default_factory=list)  # a few failed rows (positions in the part)
    examples: list = field(default_factory=list)  # their raw values
    decimal: str | None = None  # the decimal mark text numbers were read with (features.ingest.numbers)
    decimal_example: tuple | None = None  # (row, raw value) of a value that needed that mark


@dataclass
class TableResult:
    typed: pd.DataFrame
    rejects: pd.DataFrame
    rows_in: int
    parsing: dict[str, ColumnParse] = field(default_factory=dict)
    unknown: dict[str, list[str]] = field(default_factory=dict)  # a part's unknown ids per reference column


def check_table(table: str, raw: pd.DataFrame, known: dict[str, pd.Index | object],
                reject_threshold: float, *, part: bool = False, rules: ExportRules = DEFAULT_RULES) -> TableResult:
    """Parse one raw table, reject bad rows with a reason, and stop on structural problems.

    ``part=True`` checks one part of a table (a bucket or batch of a chunked run): a column none of
    whose values parse is then not an error here, since other parts may parse; its rows are
    rejected and ``parsing`` carries the counts to judge the whole table (unparsable_column_error).
    ``rules``: the decimal mark of text numbers and the largest plausible amount. ``known``: per
    referenced table (``customers``, ``profiles``), its ids (a pd.Index), or an object answering for
    the rows being checked (_known_test).
    """
    raw = raw.reset_index(drop=True)
    n = len(raw)
    specs = TABLE_SPECS[table]
    missing = [s.name for s in specs if s.required and s.name not in raw.columns]
    if missing:
        raise ContractError(
            f"{table}: missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} (columns present: {', '.join(map(str, raw.columns))})"
        )
    typed = pd.DataFrame(index=raw.index)
    reasons = _Reasons(n)
    unparsable: set = set()
    parsing: dict[str, ColumnParse] = {}
    for spec in specs:
        if spec.name not in raw.columns:
            continue
        column = raw[spec.name]
        decimal = None
        if spec.kind == "number":
            try:
                parsed, decimal, example = parse_number_styled(column, rules.decimal, spec.name,
                                                               whole=spec.name in COUNTS)
            except NumberStyleError as err:
                raise ContractError(f"{table}: {err}") from None
        else:
            parsed, example = PARSERS[spec.kind](column), None
        present = parsed.notna() if spec.kind in TEXT_KINDS else present_values(column)  # trimmed once
        failed = (present & parsed.isna()).to_numpy()
        pos = np.flatnonzero(failed)
        parsing[spec.name] = ColumnParse(spec.kind, int(present.sum()), len(pos), pos[: EXAMPLES + 1].tolist(),
                                         column.iloc[pos[: EXAMPLES + 1]].tolist(), decimal, example)
        if failed.any():
            if not part and failed.sum() == present.sum():
                raise unparsable_column_error(table, spec.name, parsing[spec.name])
            reasons.add(failed, "unparsable " + spec.name + " " + column.astype("str").map(repr))
            unparsable.update((spec.name, int(i)) for i in np.flatnonzero(failed))
        typed[spec.name] = parsed
    extra = [c for c in raw.columns if c not in {s.name for s in specs}]
    if table == "customers":
        _check_attribute_names(extra)
        for name in extra:
            typed[name] = _attribute(raw[name])
        _check_unique_ids(typed["customer_id"])
    if table == "referrals":
        reasons.add((typed["referrer_id"] == typed["referred_id"]).fillna(False).to_numpy(),
                    "self-referral")
    for mask, reason in export_row_problems(table, raw, typed,
                                            TIME_COLUMNS.get(table, "signup_date" if table == "customers" else None),
                                            rules.max_amount):
        reasons.add(mask, reason)

    try:
        _schema(table, known).validate(typed, lazy=True, inplace=True)  # no coercion: a copy would only cost time
    except pa.errors.SchemaErrors as err:
        _failures_to_reasons(reasons, err.failure_cases, unparsable)

    why = reasons.joined()
    bad = np.zeros(n, dtype=bool)
    bad[why.index.to_numpy(dtype=int)] = True
    check_reject_share(table, int(bad.sum()), n, reject_threshold, lambda: reason_counts(why),
                       rows=np.flatnonzero(bad), hint=lambda: unknown_id_hint(table, typed, known))
    rejects = raw.loc[bad].astype("str").assign(reason=why.to_numpy())
    rejects.insert(0, "row", np.flatnonzero(bad))
    kept = typed.loc[~bad].reset_index(drop=True)
    unknown = part and why.str.contains("refers to an unknown", regex=False).any()
    return TableResult(kept, rejects.reset_index(drop=True), n, parsing,
                       unknown_ids(table, typed, known, UNKNOWN_KEPT) if unknown else {})


def unparsable_column_error(table: str, column: str, parse: ColumnParse) -> ContractError:
    """The structural error for a column of which no present value parses."""
    return ContractError(
        f"{table}: column '{column}' cannot be parsed as {parse.kind} at all "
        f"(rows {_rows(np.asarray(parse.rows))}; e.g. {_examples(parse.examples[:EXAMPLES])})"
    )


def part_parsing(result: TableResult, source_rows: np.ndarray | None) -> dict[str, ColumnParse]:
    """A part's parse counts with its failed rows numbered as in the source table."""
    if source_rows is None:
        return dict(result.parsing)
    return {
        column: ColumnParse(p.kind, p.present, p.failed, [int(source_rows[r]) for r in p.rows], p.examples,
                            p.decimal, None if p.decimal_example is None
                            else (int(source_rows[p.decimal_example[0]]), p.decimal_example[1]))
        for column, p in result.parsing.items()
    }


def add_parsing(total: dict[str, ColumnParse], part: dict[str, ColumnParse], table: str = "") -> None:
    """Add a part's parse counts to its table's totals (keeping the first few failed rows); stop when
    two parts' text numbers needed different decimal marks (the column mixes styles)."""
    for column, parse in part.items():
        seen = total.setdefault(column, ColumnParse(parse.kind, 0, 0))
        if parse.decimal is not None:
            if seen.decimal is not None and seen.decimal != parse.decimal:
                (r1, v1), (r2, v2) = sorted([seen.decimal_example or (0, "?"), parse.decimal_example or (0, "?")])
                raise ContractError(f"{table + ': ' if table else ''}column '{column}' mixes number styles: "
                                    f"decimal {seen.decimal!r} and {parse.decimal!r} (rows {r1}, {r2}; e.g. "
                                    f"{v1!r}, {v2!r}): export one style")
            seen.decimal, seen.decimal_example = parse.decimal, seen.decimal_example or parse.decimal_example
        seen.present += parse.present
        seen.failed += parse.failed
        # Each part keeps its first failed rows in source order; the smallest of all parts are the
        # table's first, so the error names the rows the whole-table check would name.
        first = sorted(zip(seen.rows + parse.rows, seen.examples + parse.examples, strict=True),
                       key=lambda pair: pair[0])[: EXAMPLES + 1]
        seen.rows, seen.examples = [r for r, _ in first], [e for _, e in first]


def check_parsing(table: str, total: dict[str, ColumnParse]) -> None:
    """Stop, as check_table on the whole table does, on a column none of whose values parse."""
    for column, parse in total.items():
        if parse.present and parse.failed == parse.present:
            raise unparsable_column_error(table, column, parse)


def _attribute(raw: pd.Series) -> pd.Series:
    """Static customer attribute: numbers stay numeric, text becomes categorical."""
    if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw):
        return raw.astype("float64")
    distinct = PARSERS["text"](pd.Series(raw.dropna().unique())).dropna()
    if len(distinct) and pd.to_numeric(distinct, errors="coerce").notna().all():  # numbers read as text (CSV)
        return pd.to_numeric(PARSERS["text"](raw), errors="coerce").astype("float64")
    return PARSERS["text"](raw).astype("category")


def _check_attribute_names(names: list) -> None:
    """Stop at validation on a customers column whose name cannot be a feature name downstream."""
    bad = unusable_names(names)
    if bad:
        raise ContractError(
            f"customers: column name{'s' if len(bad) > 1 else ''} {', '.join(repr(b) for b in bad[:EXAMPLES])} "
            "cannot become a feature name (no [ ] { } \" , : $ \\ or control characters, not blank): rename it")


def _check_unique_ids(ids: pd.Series) -> None:
    dup = ids.duplicated(keep=False) & ids.notna()
    if dup.any():
        pos = np.flatnonzero(dup.to_numpy())
        raise ContractError(
            f"customers: column 'customer_id' has {int(ids[dup].nunique())} duplicated values "
            f"(rows {_rows(pos)}; e.g. {_examples(ids[dup].unique().tolist())})"
        )


# ---------------------------------------------------------------- the whole source

@dataclass
class ValidatedTables:
    tables: Tables
    rejects: dict[str, pd.DataFrame]
    summary: pd.DataFrame  # table, rows_in, rows_kept, rows_rejected, top_reason


def validate_tables(raw: dict[str, pd.DataFrame | None], *,
                    reject_threshold: float = 0.01, rules: ExportRules = DEFAULT_RULES) -> ValidatedTables:
    """Check every table of a source in dependency order (customers before the tables that refer to them)."""
    unknown = sorted(set(raw) - set(TABLE_NAMES))
    if unknown:
        raise ContractError(f"unknown table name(s): {', '.join(unknown)}")
    check_table_set({name for name, frame in raw.items() if frame is not None})
    known: dict[str, pd.Index] = {}
    results: dict[str, TableResult] = {}
    for name in TABLE_NAMES:
        frame = raw.get(name)
        if frame is None:
            continue
        results[name] = check_table(name, frame, known, reject_threshold, rules=rules)
        if name == "customers":
            check_has_customers(len(results[name].typed))
            known["customers"] = pd.Index(results[name].typed["customer_id"])
        if name == "social_profiles":
            known["profiles"] = pd.Index(results[name].typed["profile_id"].unique())
    tables = Tables(**{name: res.typed for name, res in results.items()},
                    **{name: None for name in OPTIONAL_TABLES if name not in results})
    return ValidatedTables(
        tables=tables,
        rejects={name: res.rejects for name, res in results.items() if len(res.rejects)},
        summary=table_summary({name: (res.rows_in, res.rejects) for name, res in results.items()}),
    )


# ---------------------------------------------------------------- rules on whole tables, for every engine

def check_table_set(present: set[str]) -> None:
    """The required tables are there, and interactions come with the profiles they refer to."""
    for name in REQUIRED_TABLES:
        if name not in present:
            raise ContractError(f"{name}: required table is missing")
    if "social_interactions" in present and "social_profiles" not in present:
        raise ContractError("social_interactions: needs the social_profiles table to resolve profile ids")


def check_has_customers(valid_customers: int) -> None:
    if valid_customers == 0:
        raise ContractError("customers: the table has no valid rows")


def reason_counts(reasons: Iterable[str]) -> Counter:
    """Rows per reject reason (quoted values removed; a row with several reasons counts for each)."""
    counts: Counter = Counter()
    for reason in reasons:
        for piece in str(reason).split("; "):
            counts[QUOTED.sub("", piece)] += 1
    return counts


def check_reject_share(table: str, rejected: int, rows_in: int, threshold: float,
                       counts: Callable[[], Counter], *, rows=None, at_least: bool = False,
                       hint: Callable[[], str] | None = None) -> None:
    """Stop when more than ``threshold`` of a table's rows are invalid, naming the top reasons.

    ``counts`` gives rows per reason (only asked when the threshold is crossed); ``rows``: some of
    the invalid rows' numbers; ``at_least``: the count is a lower bound (a part of the table so far);
    ``hint``: a sentence to add (e.g. ids that match after normalisation).
    """
    if not rows_in or rejected / rows_in <= threshold:
        return
    detail = "; ".join(f"{n} x {r}" for r, n in counts().most_common(6))
    where = "" if rows is None else f" (rows {_rows(np.sort(np.asarray(rows)))})"
    raise ContractError(
        f"{table}: {'at least ' if at_least else ''}{rejected} of {rows_in} rows ({rejected / rows_in:.1%}) "
        f"are invalid, more than the reject threshold of {threshold:.1%}; {detail}{where}"
        + (f". {extra}" if hint is not None and (extra := hint()) else "")
    )


def parsed_ids(raw: pd.Series) -> pd.Series:
    """The distinct ids of a raw column, parsed as the contract parses ids (missing dropped)."""
    distinct = pd.Series(raw.dropna().unique(), dtype=raw.dtype)
    return PARSERS["id"](distinct).dropna()


def table_summary(counts: dict[str, tuple[int, pd.DataFrame | None]]) -> pd.DataFrame:
    """Per table (in contract order): rows_in, rows_kept, rows_rejected and the most frequent reason,
    from each table's rows in and rejected rows (None: none)."""
    rows = []
    for table in TABLE_NAMES:
        if table not in counts:
            continue
        rows_in, rejects = counts[table]
        bad = 0 if rejects is None else len(rejects)
        top = rejects["reason"].str.replace(QUOTED, "", regex=True).value_counts().index[0] if bad else ""
        rows.append({"table": table, "rows_in": int(rows_in), "rows_kept": int(rows_in) - bad,
                     "rows_rejected": bad, "top_reason": top})
    return pd.DataFrame(rows, columns=["table", "rows_in", "rows_kept", "rows_rejected", "top_reason"])
