"""Reading a source (a directory of contract tables, or a PostgreSQL database) into validated, typed tables.

A source directory holds one file per table: ``<table>.parquet``, ``<table>.csv`` or
``<table>.csv.gz``, or a directory ``<table>/`` of Parquet parts. Other files are ignored.
A database source is a URL ``postgresql://USER[:PASSWORD]@HOST:PORT/DB[?schema=NAME]``
(see features/ingest/database.py); its tables go through the same validation.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from features import atomic
from features.ingest.contract import TIME_COLUMNS, ContractError, validate_tables
from features.ingest.database import mask_url, read_database
from features.tables import TABLE_NAMES, Tables

SUFFIXES = (".parquet", ".csv", ".csv.gz")
DATABASE_URL_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg://")


@dataclass
class LoadResult:
    tables: Tables
    rejects: dict[str, pd.DataFrame]
    summary: pd.DataFrame  # table, rows_in, rows_kept, rows_rejected, top_reason
    fingerprint: dict  # table -> {"files": [...], "bytes": n, "sha256": ...}; database: see read_database
    seconds: float


def is_database_url(source: str | os.PathLike) -> bool:
    """True for a ``postgresql://`` URL, False for a directory path."""
    return isinstance(source, str) and source.lower().startswith(DATABASE_URL_PREFIXES)


def describe_source(source: str | os.PathLike) -> str:
    """How a source is shown in logs, manifests and MLflow: the masked URL of a database, the absolute
    path of a directory. Never the password."""
    if is_database_url(source):
        return mask_url(source)
    return str(Path(source).resolve())


def table_files(source: str | os.PathLike) -> dict[str, list[Path]]:
    """The files that hold each table of a source directory (none for an absent table)."""
    root = Path(source)
    if not root.is_dir():
        raise ContractError(f"source {str(root)!r} is not a directory")
    found: dict[str, list[Path]] = {}
    for table in TABLE_NAMES:
        candidates = [root / f"{table}{suffix}" for suffix in SUFFIXES]
        files = [p for p in candidates if p.is_file()]
        part_dir = root / table
        if part_dir.is_dir():
            parts = sorted(part_dir.glob("*.parquet"))
            if parts:
                files.append(part_dir)
        if len(files) > 1:
            raise ContractError(
                f"{table}: more than one file holds this table ({', '.join(p.name for p in files)}); keep one"
            )
        if files:
            found[table] = files
    return found


def read_table(path: Path) -> pd.DataFrame:
    """Raw values of one table file: Parquet keeps its types, CSV is read as text to be parsed later."""
    if path.is_dir():
        return pd.read_parquet(sorted(path.glob("*.parquet")))
    if path.name.endswith(".parquet"):
        return pd.read_parquet(path)
    try:
        return pd.read_csv(path, dtype="str", keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as err:
        raise ContractError(f"{path.stem.removesuffix('.csv')}: cannot read {path.name}: {err}") from None


def fingerprint(files: dict[str, list[Path]]) -> dict:
    """Content hash and size of each table's files: a run records exactly what it read."""
    out = {}
    for table, paths in files.items():
        digest = hashlib.sha256()
        size = 0
        names = []
        for path in paths:
            members = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
            for member in members:
                with open(member, "rb") as fh:
                    digest.update(hashlib.file_digest(fh, "sha256").digest())
                size += member.stat().st_size
                names.append(str(member.relative_to(path.parent)))
        out[table] = {"files": names, "bytes": size, "sha256": digest.hexdigest()}
    return out


def load_source(source: str | os.PathLike, *, reject_threshold: float = 0.01,
                until: pd.Timestamp | str | None = None, mapping=None) -> LoadResult:
    """Read, parse and validate every contract table of a source directory or database.

    until: rows dated on or after it (transactions.timestamp, social_profiles.snapshot_date,
        social_interactions.timestamp, referrals.timestamp) are not read: files are cut after
        validation, a database in SQL. Customers are never cut.
    mapping: for a database, a ``features.ingest.database.DatabaseMapping`` (or dict, or JSON/TOML file) of
        table and column names that differ from the contract.
    """
    start = time.perf_counter()
    until = _utc_naive(until)
    if is_database_url(source):
        read = read_database(source, mapping=mapping, until=until)
        raw, prints = read.raw, read.fingerprint
    else:
        if mapping is not None:
            raise ContractError(f"a table/column mapping applies to database sources only; {str(source)!r} "
                                "is a directory: name its files and columns as the contract does")
        files = table_files(source)
        raw = {table: read_table(paths[0]) for table, paths in files.items()}
        prints = fingerprint(files)
    checked = validate_tables(raw, reject_threshold=reject_threshold)
    return LoadResult(
        tables=checked.tables if until is None else rows_before(checked.tables, until),
        rejects=checked.rejects,
        summary=checked.summary,
        fingerprint=prints,
        seconds=time.perf_counter() - start,
    )


def _utc_naive(until: pd.Timestamp | str | None) -> pd.Timestamp | None:
    """The cut as a naive UTC timestamp, like every contract time column."""
    if until is None:
        return None
    until = pd.Timestamp(until)
    return until.tz_convert("UTC").tz_localize(None) if until.tzinfo is not None else until


def rows_before(tables: Tables, until: pd.Timestamp) -> Tables:
    """The tables without rows dated on or after ``until`` (see TIME_COLUMNS); customers are kept whole."""
    cut = {}
    for table, column in TIME_COLUMNS.items():
        frame = getattr(tables, table)
        if frame is not None:
            cut[table] = frame.loc[frame[column] < until].reset_index(drop=True)
    return replace(tables, **cut)


def write_rejects(rejects: dict[str, pd.DataFrame], directory: str | os.PathLike) -> list[Path]:
    """One ``<table>.csv`` per table with rejected rows: the raw values, the row number and the reason."""
    return [atomic.write_frame(Path(directory) / f"{table}.csv", frame) for table, frame in rejects.items()]
