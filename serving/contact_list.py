"""The contact list: the top N customers of a scores file as a CSV a campaign team can load as it is.

Columns: customer_id (always quoted text, so "000123" stays "000123" in a spreadsheet),
predicted_value, value_p10 and value_p90 (the 80% range, when the scores have it), p_alive and
expected_orders (when they have them), value_tier, value_rank, reason_1..3 in plain words
(serving.plain_words), then the customer attributes the user asks for, joined from the source's
customers table. Only the first N rows of the scores are read (the scorer writes them sorted by
value_rank), and only customer_id and the asked-for columns of the customers table; ids are matched
as the contract parses them (features.ingest.parsing), exactly as the scorer did. The file is
published whole (features.atomic).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from features import atomic
from features.errors import UserError
from features.ingest.contract import ContractError
from features.ingest.database import DatabaseTarget
from features.ingest.mapping import SourceMapping, as_mapping
from features.ingest.parsing import PARSERS
from features.ingest.partition import iter_batches, table_columns
from features.ingest.source import is_database_url, table_files
from serving.plain_words import plain_reason

REASONS = 3
OPTIONAL_SCORE_COLUMNS = ("value_p10", "value_p90", "p_alive", "expected_orders")
MONEY_COLUMNS = ("predicted_value", "value_p10", "value_p90")
BATCH_ROWS = 65_536


def check_export_options(top: int | None, out: Path | None, attributes) -> None:
    """--export-top and --export come together, the file is a .csv, attributes need an export."""
    if (top is None) != (out is None):
        raise UserError("--export-top N and --export FILE.csv go together: give both, or neither")
    if out is None:
        if attributes:
            raise UserError("--export-attributes needs --export-top N and --export FILE.csv")
        return
    if top < 1:
        raise UserError(f"--export-top must be at least 1, not {top}")
    if Path(out).suffix.lower() != ".csv":
        raise UserError(f"--export {out}: the contact list is written as CSV; name the file with a .csv suffix")


def score_parts(scores: Path) -> list[Path]:
    """The Parquet files of a scores output: the file itself, or the parts of the Dask engine's folder."""
    scores = Path(scores)
    return sorted(scores.glob("*.parquet")) if scores.is_dir() else [scores]


def top_scores(scores: Path, n: int) -> pd.DataFrame:
    """The ``n`` best-ranked rows of a scores output, read batch by batch: never the whole file.

    ``clv score`` writes the rows sorted by value_rank (the Dask engine: each part sorted), so the
    first ``n`` rows of each part hold the top ``n``.
    """
    frames = [_first_rows(part, n) for part in score_parts(scores)]
    if not frames:
        raise UserError(f"{scores}: no Parquet scores in this folder")
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame = frame.sort_values("value_rank", kind="stable").head(n).reset_index(drop=True)
    frame["customer_id"] = frame["customer_id"].astype("str")
    return frame


def _first_rows(path: Path, n: int) -> pd.DataFrame:
    handle = pq.ParquetFile(path)
    names = handle.schema_arrow.names
    missing = [c for c in ("customer_id", "predicted_value", "value_rank", "value_tier") if c not in names]
    if missing:
        raise UserError(f"{path}: not a clv scores file (no column {', '.join(missing)})")
    reasons = [f"reason_{i}" for i in range(1, REASONS + 1) if f"reason_{i}" in names]
    wanted = ["customer_id", "predicted_value", *[c for c in OPTIONAL_SCORE_COLUMNS if c in names],
              "value_tier", "value_rank", *reasons]
    batches, rows = [], 0
    for batch in handle.iter_batches(batch_size=min(n, BATCH_ROWS), columns=wanted):
        batches.append(batch)
        rows += len(batch)
        if rows >= n:
            break
    schema = pa.schema([handle.schema_arrow.field(c) for c in wanted])
    table = pa.Table.from_batches(batches).select(wanted) if batches else schema.empty_table()
    frame = table.slice(0, n).to_pandas()
    if not frame["value_rank"].is_monotonic_increasing:
        raise UserError(f"{path}: rows are not sorted by value_rank, as clv score writes them")
    return frame


# ---------------------------------------------------------------------------------------------
# The customers table, read for a few columns and a few ids


def _customers_file(data, mapping: SourceMapping):
    files = table_files(data, mapping)
    if "customers" not in files:
        raise ContractError(f"customers: required table is missing in {data}")
    return files["customers"][0], mapping.renaming("customers")


def customer_columns(data: str | os.PathLike, mapping=None) -> list[str]:
    """The customers table's columns, under their contract names (a mapping's renames applied)."""
    mapping = as_mapping(mapping)
    if is_database_url(data):
        return [name for name, _ in _database_columns(data, mapping)[1]]
    path, renaming = _customers_file(data, mapping)
    return table_columns(path, renaming)


def check_attributes(names, available: list[str]) -> list[str]:
    """The asked-for attribute columns, each once; unknown names are refused with the available ones."""
    wanted = list(dict.fromkeys(n for n in names if n != "customer_id"))
    unknown = [n for n in wanted if n not in available]
    if unknown:
        choices = [c for c in available if c != "customer_id"]
        raise UserError(f"--export-attributes: no column {', '.join(map(repr, unknown))} in the customers table "
                        f"(available: {', '.join(choices) or 'none'})")
    return wanted


def customer_attributes(data: str | os.PathLike, ids, columns: list[str], mapping=None) -> pd.DataFrame:
    """customer_id (as the contract parses it) and ``columns`` of the customers whose id is in ``ids``,
    values as the source holds them; a source id seen twice keeps its first row."""
    mapping = as_mapping(mapping)
    columns = check_attributes(columns, customer_columns(data, mapping))
    wanted = pd.Index(pd.Series(ids, dtype="str").unique())
    if is_database_url(data):
        chunks = _database_chunks(data, columns, mapping)
    else:
        path, renaming = _customers_file(data, mapping)
        chunks = (batch.to_pandas() for batch in
                  iter_batches(path, columns=["customer_id", *columns], table="customers", renaming=renaming))
    found = []
    for chunk in chunks:
        chunk = chunk.assign(customer_id=PARSERS["id"](chunk["customer_id"]))
        found.append(chunk.loc[chunk["customer_id"].isin(wanted), ["customer_id", *columns]])
    frame = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=["customer_id", *columns])
    return frame.drop_duplicates("customer_id", keep="first").reset_index(drop=True)


def _database_columns(url: str, mapping: SourceMapping):
    """(target, [(contract name, column)]) of the customers relation of a database."""
    target = DatabaseTarget.parse(url)
    relation = mapping.table("customers")
    try:
        with target.engine().connect() as conn:
            reflected = sa.Table(relation, sa.MetaData(), schema=target.schema, autoload_with=conn)
    except sa.exc.NoSuchTableError:
        raise ContractError(f"customers: required table is missing (no table {relation!r} in {target.masked})") \
            from None
    except sa.exc.DBAPIError as err:
        raise target.unavailable(err) from None
    renamed = {db: contract for contract, db in mapping.columns.get("customers", {}).items()}
    wanted = mapping.columns.get("customers", {})
    return target, [(renamed.get(c.name, c.name), c) for c in reflected.columns
                    if c.name in renamed or c.name not in wanted]


def _database_chunks(url: str, columns: list[str], mapping: SourceMapping, chunk_rows: int = 100_000):
    """Chunks of customer_id and ``columns`` from the customers relation, streamed."""
    target, present = _database_columns(url, mapping)
    by_name = dict(present)
    statement = sa.select(*[by_name[name].label(name) for name in ["customer_id", *columns]])
    try:
        with target.engine().connect() as conn:
            result = conn.execution_options(stream_results=True).execute(statement)
            while rows := result.fetchmany(chunk_rows):
                yield pd.DataFrame([tuple(r) for r in rows], columns=["customer_id", *columns], dtype=object)
    except sa.exc.DBAPIError as err:
        raise target.unavailable(err) from None


# ---------------------------------------------------------------------------------------------
# The list itself


def contact_frame(top: pd.DataFrame, attributes: pd.DataFrame | None, currency: str | None) -> pd.DataFrame:
    """The contact list's columns from the top scores (top_scores) and the customers' attributes."""
    out = pd.DataFrame({"customer_id": top["customer_id"].astype("str")})
    for column in ("predicted_value", *OPTIONAL_SCORE_COLUMNS):
        if column in top.columns and top[column].notna().any():
            digits = 2 if column in MONEY_COLUMNS else 4
            out[column] = top[column].astype("float64").round(digits)
    out["value_tier"] = top["value_tier"].astype("str")
    out["value_rank"] = top["value_rank"].astype("int64")
    for i in range(1, REASONS + 1):
        column = f"reason_{i}"
        values = top[column] if column in top.columns else pd.Series(None, index=top.index, dtype="str")
        out[column] = pd.array([plain_reason(None if pd.isna(v) else v, currency) for v in values], dtype="str")
    if attributes is not None:
        clash = [c for c in attributes.columns if c != "customer_id" and c in out.columns]
        if clash:
            raise UserError(f"--export-attributes: {', '.join(clash)} would clash with a column of the contact list")
        out = out.merge(attributes, on="customer_id", how="left", validate="1:1")
    return out


def check_export_request(top: int | None, out: Path | None, attributes, data, mapping=None) -> None:
    """The export options, and the attributes against the customers table, checked before any scoring."""
    check_export_options(top, out, attributes)
    if attributes:
        check_attributes(attributes, customer_columns(data, mapping))


def export_contacts(summary: dict, out: Path, *, top: int, data, attributes=(), mapping=None) -> str:
    """Write the contact list of a finished scoring run (its output and manifest ``summary``); the summary line.

    Money is labelled with the scores' currency when the manifest has one (else plain amounts).
    """
    written = write_contact_list(summary["output"], out, top=top, data=data, attributes=attributes,
                                 mapping=mapping, currency=summary.get("currency"))
    return f"  contact list: {written['customers']:,} customers -> {written['output']}"


def write_contact_list(scores: str | os.PathLike, out: str | os.PathLike, *, top: int,
                       data: str | os.PathLike | None = None, attributes=(), mapping=None,
                       currency: str | None = None) -> dict:
    """Write the top ``top`` customers of ``scores`` to ``out`` (CSV, published whole).

    ``attributes``: columns of the customers table of ``data`` (a source directory or database URL,
    read with ``mapping``) to add. Returns {"customers": rows written, "output": out}.
    """
    out = Path(out)
    check_export_options(top, out, attributes)
    attributes = list(attributes)
    if attributes and data is None:
        raise UserError("--export-attributes needs the source (--data) to read the customers table from")
    head = top_scores(Path(scores), top)
    joined = customer_attributes(data, head["customer_id"], attributes, mapping) if attributes else None
    frame = contact_frame(head, joined, currency)
    with atomic.publishing(out) as tmp:
        frame.to_csv(tmp, index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    return {"customers": len(frame), "output": str(out)}
