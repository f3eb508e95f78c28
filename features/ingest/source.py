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
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from features import atomic
from features.ingest.contract import TIME_COLUMNS, ContractError, validate_tables
from features.ingest.database import read_database
from features.ingest.export_checks import DEFAULT_RULES, ExportRules, export_notes
from features.ingest.mapping import ColumnRenaming, SourceMapping, as_mapping
from features.ingest.masking import mask_url
from features.ingest.rejects import remove_stale_rejects
from features.tables import TABLE_NAMES, Tables

SUFFIXES = (".parquet", ".csv", ".csv.gz")
DATABASE_URL_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://")


@dataclass
class LoadResult:
    tables: Tables
    rejects: dict[str, pd.DataFrame]
    summary: pd.DataFrame  # table, rows_in, rows_kept, rows_rejected, top_reason
    fingerprint: dict  # table -> {"files": [...], "bytes": n, "sha256": ...}; database: see read_database
    seconds: float
    notes: list[str] = field(default_factory=list)  # facts about kept rows for the summary (ExportNotes)


def is_database_url(source: str | os.PathLike) -> bool:
    """True for a ``postgresql://`` URL, False for a directory path."""
    return isinstance(source, str) and source.lower().startswith(DATABASE_URL_PREFIXES)


def describe_source(source: str | os.PathLike) -> str:
    """How a source is shown in logs, manifests and MLflow: the masked URL of a database, the absolute
    path of a directory. Never the password."""
    if is_database_url(source):
        return mask_url(source)
    return mask_url(str(Path(source).resolve()))  # a DSN given where a folder was expected stays masked


def table_files(source: str | os.PathLike, mapping: SourceMapping | None = None) -> dict[str, list[Path]]:
    """The files that hold each table of a source directory (none for an absent table), named as the
    contract names the table or as ``mapping`` does (``orders.csv`` for ``transactions = "orders"``)."""
    root = Path(source)
    if not root.is_dir():
        raise ContractError(f"source {mask_url(str(root))!r} is not a directory")
    found: dict[str, list[Path]] = {}
    for table in TABLE_NAMES:
        name = mapping.table(table) if mapping is not None else table
        candidates = [root / f"{name}{suffix}" for suffix in SUFFIXES]
        files = [p for p in candidates if p.is_file()]
        part_dir = root / name
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


def read_table(path: Path, renaming: ColumnRenaming | None = None) -> pd.DataFrame:
    """Raw values of one table file, its columns under their contract names (``renaming``, from a
    mapping): Parquet keeps its types, CSV is read as text to be parsed later."""
    raw = _read_file(path)
    return raw if renaming is None else renaming.frame(raw, path.name)


def _read_file(path: Path) -> pd.DataFrame:
    if path.is_dir():
        return pd.read_parquet(sorted(path.glob("*.parquet")))
    if path.name.endswith(".parquet"):
        return pd.read_parquet(path)
    try:
        return pd.read_csv(path, dtype="str", keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as err:
        raise ContractError(f"{path.stem.removesuffix('.csv')}: cannot read {path.name}: {err}") from None


def fingerprint(files: dict[str, list[Path]], mapping: SourceMapping | None = None) -> dict:
    """Content hash and size of each table's files: a run records exactly what it read (and, for a
    table whose columns a mapping renames, the renaming: contract column -> file column)."""
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
        if mapping is not None and mapping.columns.get(table):
            out[table]["columns"] = dict(mapping.columns[table])
    return out


def load_source(source: str | os.PathLike, *, reject_threshold: float = 0.01,
                until: pd.Timestamp | str | None = None, mapping=None,
                rules: ExportRules = DEFAULT_RULES) -> LoadResult:
    """Read, parse and validate every contract table of a source directory or database.

    until: rows dated on or after it (transactions.timestamp, social_profiles.snapshot_date,
        social_interactions.timestamp, referrals.timestamp) are not read: files are cut after
        validation, a database in SQL. Customers are never cut.
    mapping: a ``features.ingest.mapping.SourceMapping`` (or dict, or JSON/TOML file) of the table and
        column names that differ from the contract, in a database or in the files of a directory.
    rules: how the exports write values (decimal mark of text numbers, largest plausible amount).
    """
    start = time.perf_counter()
    until = _utc_naive(until)
    if is_database_url(source):
        read = read_database(source, mapping=mapping, until=until)
        raw, prints = read.raw, read.fingerprint
    else:
        mapping = as_mapping(mapping)
        files = table_files(source, mapping)
        raw = {table: read_table(paths[0], mapping.renaming(table)) for table, paths in files.items()}
        prints = fingerprint(files, mapping)
    checked = validate_tables(raw, reject_threshold=reject_threshold, rules=rules)
    return LoadResult(
        tables=checked.tables if until is None else rows_before(checked.tables, until),
        rejects=checked.rejects,
        summary=checked.summary,
        fingerprint=prints,
        seconds=time.perf_counter() - start,
        notes=export_notes(checked.tables.customers, checked.tables.transactions).lines(),
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
    """One ``<table>.csv`` per table with rejected rows: the raw values, the row number and the reason.
    A previous run's rejects file for a table without rejected rows now is removed."""
    remove_stale_rejects(Path(directory), keep=set(rejects))
    return [atomic.write_frame(Path(directory) / f"{table}.csv", frame) for table, frame in rejects.items()]
