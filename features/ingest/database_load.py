"""Loading a source directory into PostgreSQL: validated rows into typed, indexed tables by COPY."""

from __future__ import annotations

import io
import os
import time

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from psycopg import sql

from features.ingest.contract import TABLE_SPECS, ContractError
from features.ingest.database import CHUNK_ROWS, INDEXED_COLUMNS, DatabaseTarget
from features.ingest.source import load_source
from features.tables import TABLE_NAMES


def load_source_to_database(source_dir: str | os.PathLike, url: str, *, schema: str | None = None,
                            if_exists: str = "fail") -> dict:
    """Validate a source, then create its contract tables in PostgreSQL with COPY; returns a summary.

    The whole load is one transaction: a failure leaves the database as it was. ``if_exists="replace"``
    drops every contract table of the schema first (a stale optional table would mix two sources).
    Only valid rows are loaded; rejected rows are counted in the summary.
    """
    if if_exists not in ("fail", "replace"):
        raise ValueError(f"if_exists must be 'fail' or 'replace', not {if_exists!r}")
    start = time.perf_counter()
    target = DatabaseTarget.parse(url)
    loaded = load_source(source_dir)  # nothing is written for a source that breaks the contract
    engine = target.engine()
    try:
        raw = engine.raw_connection()
    except (sa.exc.DBAPIError, psycopg.OperationalError) as err:
        raise target.unavailable(err) from None
    try:
        pg: psycopg.Connection = raw.driver_connection
        pg.autocommit = True
        with pg.transaction():
            schema = schema or target.schema or pg.execute("SELECT current_schema()").fetchone()[0]
            if schema is None:
                raise ContractError(f"no schema to load into in {target.masked}: pass a schema")
            existing = [t for t in TABLE_NAMES if _relation_exists(pg, schema, t)]
            if existing and if_exists == "fail":
                names = ", ".join(f"{schema}.{t}" for t in existing)
                raise ContractError(
                    f"{names} already exist{'s' if len(existing) == 1 else ''} in {target.masked}; "
                    "replace them (--replace) or load into another schema")
            pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            for table in existing:
                pg.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(schema, table)))
            rows = {}
            for table, frame in loaded.tables.items():
                rows[table] = _copy_table(pg, schema, table, frame)
    except psycopg.OperationalError as err:
        raise target.unavailable(err) from None
    except psycopg.Error as err:
        raise ContractError(f"cannot load into {target.masked}: {target.cause(err)}") from None
    finally:
        raw.close()
    return {
        "url": target.masked,
        "schema": schema,
        "rows": rows,
        "rows_rejected": dict(zip(loaded.summary["table"], loaded.summary["rows_rejected"].astype(int))),
        "seconds": round(time.perf_counter() - start, 3),
    }


def _relation_exists(pg: psycopg.Connection, schema: str, table: str) -> bool:
    found = pg.execute("SELECT to_regclass(%s)", [sql.Identifier(schema, table).as_string(pg)]).fetchone()
    return found[0] is not None


def _sql_type(name: str, values: pd.Series) -> str:
    """PostgreSQL type of a typed contract column: TEXT ids and text, DOUBLE PRECISION numbers, DATE for
    ``*_date`` columns holding only whole days, TIMESTAMP otherwise (naive UTC, as in the contract)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        present = values.dropna()
        whole_days = bool((present == present.dt.normalize()).all())
        return "DATE" if name.endswith("_date") and whole_days else "TIMESTAMP"
    if pd.api.types.is_bool_dtype(values):
        return "BOOLEAN"
    if pd.api.types.is_integer_dtype(values):
        return "BIGINT"
    if pd.api.types.is_float_dtype(values):
        return "DOUBLE PRECISION"
    return "TEXT"


def _copy_table(pg: psycopg.Connection, schema: str, table: str, frame: pd.DataFrame) -> int:
    """CREATE TABLE with contract types, COPY the rows in CSV blocks, then index keys and times."""
    specs = {s.name: s for s in TABLE_SPECS[table]}
    types = {name: _sql_type(name, frame[name]) for name in frame.columns}
    definitions = []
    for name, kind in types.items():
        spec = specs.get(name)
        not_null = " NOT NULL" if spec is not None and not spec.nullable else ""
        definitions.append(sql.SQL("{} {}{}").format(sql.Identifier(name), sql.SQL(kind), sql.SQL(not_null)))
    if table == "customers":
        definitions.append(sql.SQL("PRIMARY KEY ({})").format(sql.Identifier("customer_id")))
    relation = sql.Identifier(schema, table)
    pg.execute(sql.SQL("CREATE TABLE {} ({})").format(relation, sql.SQL(", ").join(definitions)))

    # CSV written by Arrow (C++; pandas' to_csv is several times slower): missing values are unquoted
    # empty fields = NULL, text is always quoted (an empty string stays one), doubles use the shortest
    # representation that reads back to the same value, timestamps keep their fraction (PostgreSQL rounds
    # nanoseconds to microseconds) and a DATE column accepts the midnight timestamp.
    out = frame.assign(**{name: frame[name].astype("str") for name in frame.columns
                          if isinstance(frame[name].dtype, pd.CategoricalDtype)})
    arrow = pa.Table.from_pandas(out, preserve_index=False)
    copy_stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        relation, sql.SQL(", ").join(map(sql.Identifier, out.columns)))
    with pg.cursor() as cur, cur.copy(copy_stmt) as copy:
        for batch in arrow.to_batches(max_chunksize=CHUNK_ROWS):
            block = io.BytesIO()
            pacsv.write_csv(batch, block, pacsv.WriteOptions(include_header=False))
            copy.write(block.getvalue())

    for name in INDEXED_COLUMNS:
        if name in frame.columns and not (table == "customers" and name == "customer_id"):
            pg.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
                sql.Identifier(f"{table}_{name}_idx"), relation, sql.Identifier(name)))
    pg.execute(sql.SQL("ANALYZE {}").format(relation))
    return len(frame)
