"""PostgreSQL as a source of the contract tables (loading one: features.ingest.database_load).

A database source is a URL ``postgresql://USER[:PASSWORD]@HOST:PORT/DB[?schema=NAME]``. Tables are read
by their contract names, or through a ``DatabaseMapping`` for other table and column names. Only the
rows a run may see are read (``< until`` pushed into SQL), through a server-side cursor in chunks, all
tables from one consistent snapshot; the raw frames then go through the same ``validate_tables`` as
files. Passwords never leave this module: every URL shown is ``mask_url``-ed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from features.ingest.contract import TABLE_SPECS, TIME_COLUMNS, ContractError
from features.ingest.mapping import SourceMapping, as_mapping, check_mapped_columns
from features.ingest.masking import MASK, mask_url
from features.tables import REQUIRED_TABLES, TABLE_NAMES

CHUNK_ROWS = 100_000  # rows per fetch from the server-side cursor, and per COPY block
CONNECT_TIMEOUT_S = 10  # an unreachable host fails after this, unless the URL sets connect_timeout

# Dated column recorded in the fingerprint (customers are never cut by `until`).
FINGERPRINT_TIME_COLUMNS = {"customers": "signup_date", **TIME_COLUMNS}
# Columns indexed after a bulk load: the keys and times the loader and feature queries filter on.
INDEXED_COLUMNS = ("customer_id", "profile_id", "timestamp", "snapshot_date")


class SourceUnavailableError(ContractError):
    """The database cannot be reached or refuses the login; the message names the masked URL and the cause."""


# ---------------------------------------------------------------- URLs and credentials

def _quote_userinfo(url: str) -> str:
    """A URL whose password holds unencoded ``@`` (``postgresql://u:p@ss@host/db``), with those quoted, as
    SQLAlchemy needs them: the host follows the last ``@``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if netloc.count("@") < 2:
        return url
    userinfo, host = netloc.rsplit("@", 1)
    return f"{scheme}://{userinfo.replace('@', '%40')}@{host}{slash}{tail}"


@dataclass(frozen=True)
class DatabaseTarget:
    """A parsed database URL: what SQLAlchemy connects to, the schema, and the URL safe to show."""

    url: URL
    schema: str | None
    masked: str

    @classmethod
    def parse(cls, url: str) -> DatabaseTarget:
        try:
            parsed = make_url(_quote_userinfo(str(url)))
        except ArgumentError:
            raise ContractError(f"not a database URL: {mask_url(url)!r}") from None
        if parsed.get_backend_name() not in ("postgresql", "postgres"):
            raise ContractError(f"unsupported database {parsed.drivername!r} in {mask_url(url)}: "
                                "only postgresql:// URLs are read")
        schema = parsed.query.get("schema")
        if isinstance(schema, tuple):
            schema = schema[-1]
        engine_url = parsed.set(drivername="postgresql+psycopg").difference_update_query(["schema"])
        if "connect_timeout" not in engine_url.query:
            engine_url = engine_url.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)})
        # No password in the URL: nothing is passed, so libpq reads PGPASSWORD or ~/.pgpass (PGPASSFILE).
        return cls(engine_url, schema or None, mask_url(url))

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url, poolclass=sa.pool.NullPool, hide_parameters=True)

    def cause(self, err: BaseException) -> str:
        """The driver's message on one line, with the password scrubbed should the server ever echo it."""
        text = " ".join(str(getattr(err, "orig", None) or err).split())
        for secret in (self.url.password, self.url.query.get("password"), self.url.query.get("sslpassword")):
            if secret:  # as a whole token only: a password "p" must not turn "port" into "***ort"
                text = re.sub(rf"(?<![\w]){re.escape(str(secret))}(?![\w])", MASK, text)
        return mask_url(text)

    def unavailable(self, err: BaseException) -> SourceUnavailableError:
        return SourceUnavailableError(f"cannot connect to {self.masked}: {self.cause(err)}")


# ---------------------------------------------------------------- mapping to other names

DatabaseMapping = SourceMapping  # its name from when only databases could be mapped


# ---------------------------------------------------------------- reading

@dataclass
class DatabaseRead:
    raw: dict[str, pd.DataFrame]  # contract table -> raw frame with contract column names
    fingerprint: dict  # contract table -> {source, relation, columns, rows, max_timestamp}


OnChunk = Callable[[str, pd.DataFrame], None]


def read_database(url: str, *, mapping: DatabaseMapping | dict | str | os.PathLike | None = None,
                  until: pd.Timestamp | None = None, chunk_rows: int = CHUNK_ROWS) -> DatabaseRead:
    """Raw contract tables from PostgreSQL: rows dated before ``until`` only, read in chunks, one snapshot."""
    chunks: dict[str, list[pd.DataFrame]] = {}
    prints = scan_database(url, lambda table, chunk: chunks.setdefault(table, []).append(chunk),
                           mapping=mapping, until=until, chunk_rows=chunk_rows)
    raw = {table: pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
           for table, parts in chunks.items()}
    return DatabaseRead(raw, prints)


def export_database(url: str, out_dir: str | os.PathLike, *,
                    mapping: DatabaseMapping | dict | str | os.PathLike | None = None,
                    until: pd.Timestamp | None = None, chunk_rows: int = CHUNK_ROWS) -> dict:
    """Spill the raw tables to ``out_dir/<table>/part-NNNNN.parquet`` (a source directory) one chunk at a
    time, so memory holds one chunk whatever the table's size; returns the fingerprint."""
    out = Path(out_dir)
    parts: dict[str, int] = {}

    def write(table: str, chunk: pd.DataFrame) -> None:
        folder = out / table
        folder.mkdir(parents=True, exist_ok=True)
        parts[table] = parts.get(table, -1) + 1
        chunk.to_parquet(folder / f"part-{parts[table]:05d}.parquet", index=False)

    return scan_database(url, write, mapping=mapping, until=until, chunk_rows=chunk_rows)


def scan_database(url: str, on_chunk: OnChunk, *,
                  mapping: DatabaseMapping | dict | str | os.PathLike | None = None,
                  until: pd.Timestamp | None = None, chunk_rows: int = CHUNK_ROWS) -> dict:
    """Call ``on_chunk(table, frame)`` for every chunk of every contract table present (at least once per
    table, empty if it has no rows); returns the fingerprint. All tables come from one snapshot."""
    target = DatabaseTarget.parse(url)
    mapping = as_mapping(mapping)
    engine = target.engine()
    prints: dict[str, dict] = {}
    try:
        connection = engine.connect()
    except sa.exc.DBAPIError as err:
        raise target.unavailable(err) from None
    relation = None
    try:
        # One read-only REPEATABLE READ transaction: every table comes from the same snapshot.
        with connection.execution_options(isolation_level="REPEATABLE READ",
                                          postgresql_readonly=True) as conn, conn.begin():
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
            inspector = sa.inspect(conn)
            for table in TABLE_NAMES:
                relation = mapping.table(table)
                shown = f"{target.schema}.{relation}" if target.schema else relation
                if not inspector.has_table(relation, schema=target.schema):
                    if table in REQUIRED_TABLES:
                        raise ContractError(f"{table}: required table is missing (no table {shown!r} "
                                            f"in {target.masked})")
                    continue
                reflected = sa.Table(relation, sa.MetaData(), schema=target.schema, autoload_with=conn)
                prints[table] = {"source": target.masked, "relation": shown,
                                 "columns": [c.name for c in reflected.columns], "rows": 0,
                                 "max_timestamp": None}

                def counted(name: str, chunk: pd.DataFrame, entry=prints[table]) -> None:
                    entry["rows"] += len(chunk)
                    entry["max_timestamp"] = _latest(entry["max_timestamp"], chunk,
                                                     FINGERPRINT_TIME_COLUMNS.get(name))
                    on_chunk(name, chunk)

                _read_table(conn, table, reflected, shown, mapping, until, chunk_rows, counted)
    # Errors come wrapped by SQLAlchemy (reflection) or straight from psycopg (the server-side cursor).
    except (sa.exc.OperationalError, psycopg.OperationalError) as err:
        raise target.unavailable(err) from None
    except (sa.exc.DBAPIError, psycopg.Error) as err:
        raise ContractError(f"cannot read {relation!r} from {target.masked}: {target.cause(err)}") from None
    finally:
        connection.close()
    return prints


def _latest(current: str | None, chunk: pd.DataFrame, column: str | None) -> str | None:
    """The later of an ISO timestamp and the latest date in a chunk's column (unparsable values ignored)."""
    if column not in chunk.columns:
        return current
    values = chunk[column]
    if not pd.api.types.is_datetime64_any_dtype(values):
        values = pd.to_datetime(values.astype("str"), errors="coerce", utc=True, format="ISO8601")
    if values.dt.tz is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    if values.notna().any():
        latest = pd.Timestamp(values.max())
        if current is None or latest > pd.Timestamp(current):
            return latest.isoformat()
    return current


def _selected_columns(table: str, reflected: sa.Table, shown: str,
                      mapping: DatabaseMapping) -> list[tuple[str, sa.Column]]:
    """(contract name, database column) pairs to read: the contract columns, and every column of customers."""
    present = {c.name: c for c in reflected.columns}
    wanted = mapping.columns.get(table, {})
    check_mapped_columns(table, wanted, present, shown)
    required = [s.name for s in TABLE_SPECS[table] if s.required
                and mapping.column(table, s.name) not in present]
    if required:
        raise ContractError(
            f"{table}: missing required column{'s' if len(required) > 1 else ''} "
            f"{', '.join(map(repr, required))} in {shown} (columns present: {', '.join(present)}); "
            "map other column names with --mapping")
    if table == "customers":
        renamed = {db: contract for contract, db in wanted.items()}
        # An unmapped column named like a mapped contract column would shadow it: the mapping wins.
        return [(renamed.get(name, name), col) for name, col in present.items()
                if name in renamed or name not in wanted]
    return [(s.name, present[mapping.column(table, s.name)]) for s in TABLE_SPECS[table]
            if mapping.column(table, s.name) in present]


def _is_datetime(column: sa.Column) -> bool:
    return isinstance(column.type, (sa.DateTime, sa.Date))


def _until_param(column: sa.Column, until: pd.Timestamp):
    """``until`` as a bound value of the column's kind: UTC-aware for timestamptz, naive otherwise."""
    aware = isinstance(column.type, sa.DateTime) and column.type.timezone
    value = until.tz_localize("UTC") if aware else until
    return sa.literal(value.to_pydatetime(), sa.DateTime(timezone=bool(aware)))


def _read_statement(table: str, reflected: sa.Table, columns: list[tuple[str, sa.Column]],
                    until: pd.Timestamp | None):
    """SELECT of the contract columns, cut at ``until`` when the time column is a SQL date or timestamp."""
    labelled = [col.label(name) for name, col in columns]
    by_name = dict(columns)
    time_column = by_name.get(TIME_COLUMNS.get(table))
    stmt = sa.select(*labelled)
    if until is not None and time_column is not None and _is_datetime(time_column):
        cut = _until_param(time_column, until)
        # Undated rows are read so that validation rejects them exactly as it does for files.
        stmt = stmt.where(sa.or_(time_column < cut, time_column.is_(None)))
        if table == "social_profiles":
            # A profile first seen on or after `until` may still be the target of an earlier interaction:
            # its first snapshot is read so that the profile id is known, then cut after validation.
            profile = by_name["profile_id"]
            first = (sa.select(profile.label("profile_id"), sa.func.min(time_column).label("first_seen"))
                     .group_by(profile).having(sa.func.min(time_column) >= cut).cte("late_profiles"))
            late = (sa.select(*labelled)
                    .join_from(reflected, first, sa.and_(profile == first.c.profile_id,
                                                         time_column == first.c.first_seen)))
            stmt = sa.union_all(stmt, late)
    # A stable row order (byte order for text, whatever the database's collation): same data, same frame.
    sub = stmt.subquery("rows")
    keys = ["customer_id"] if table == "customers" else [name for name, _ in columns]
    order = [sub.c[k].collate("C") if isinstance(by_name[k].type, sa.String) else sub.c[k] for k in keys]
    return sa.select(*[sub.c[name] for name, _ in columns]).order_by(*[o.asc().nulls_last() for o in order])


def _read_table(conn: sa.Connection, table: str, reflected: sa.Table, shown: str,
                mapping: DatabaseMapping, until: pd.Timestamp | None, chunk_rows: int,
                on_chunk: OnChunk) -> None:
    columns = _selected_columns(table, reflected, shown, mapping)
    compiled = _read_statement(table, reflected, columns, until).compile(dialect=conn.dialect)
    names = [name for name, _ in columns]
    types = [col.type for _, col in columns]
    # A server-side (named) cursor fetching chunk_rows at a time, straight from psycopg (SQLAlchemy's
    # row objects cost a third of the time); each chunk becomes typed columns at once, so memory holds
    # one chunk of Python rows, never the whole table.
    chunks = 0
    with conn.connection.driver_connection.cursor(name=f"clv_read_{table}", binary=True) as cursor:
        cursor.itersize = chunk_rows
        cursor.execute(str(compiled), compiled.params)
        while rows := cursor.fetchmany(chunk_rows):
            on_chunk(table, _typed_chunk(rows, names, types))
            chunks += 1
    if not chunks:
        on_chunk(table, _typed_chunk([], names, types))


def _typed_chunk(rows, names: list[str], types: list) -> pd.DataFrame:
    """A chunk of rows as a frame whose dtypes follow the SQL types (not pandas' guess on this chunk)."""
    values = list(zip(*rows)) if rows else [[] for _ in names]
    return pd.DataFrame({name: _typed_values(list(v), t) for name, v, t in zip(names, values, types)})


def _typed_values(values: list, sqltype) -> pd.api.extensions.ExtensionArray | np.ndarray | pd.Index:
    if isinstance(sqltype, sa.String):
        return pd.array(values, dtype="str")
    if isinstance(sqltype, sa.Boolean):
        return pd.array(values, dtype="boolean")
    if isinstance(sqltype, sa.Integer):
        return pd.array(values, dtype="Int64")
    if isinstance(sqltype, (sa.Numeric, sa.Float)):  # NUMERIC (Decimal -> float), REAL, DOUBLE PRECISION
        return np.array(values, dtype="float64")  # None -> NaN
    if isinstance(sqltype, sa.DateTime) and sqltype.timezone:
        return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns")
    if isinstance(sqltype, (sa.DateTime, sa.Date)):
        return pd.DatetimeIndex(pd.to_datetime(values)).as_unit("ns")
    return np.array(values, dtype=object)  # uuid, json, ...: the contract parsers decide
