"""Reading a source on Dask: tables as lazy frames numbered in file order, shuffled into customer buckets.

Each row carries its position in its table (ROW), so rejects name source rows and ties break as in
the whole table; customers, transactions and profile snapshots move to B buckets by a stable hash of
customer_id as the contract parses it (a snapshot without a customer goes by its profile_id).
Attribute kinds and category levels are decided over the whole raw customers table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.ingest.attribute_kinds import AttributeKinds
from features.ingest.contract import PARSERS, ContractError, check_table
from features.ingest.mapping import ColumnRenaming, SourceMapping
from features.ingest.partition import ROW, bucket_of
from features.ingest.source import is_database_url, table_files

BUCKET = "__clv_bucket__"  # customer bucket of a row (its partition)
TARGET = "__clv_target__"  # customer bucket a profile snapshot is routed to
CSV_BLOCK_BYTES = "64MB"
# Parquet row groups are joined into partitions of at most this much storage (a row group is never
# split). Dask's default, 256 MiB, made a partition of all 5M customers and partitions of 12.7M
# snapshots: dictionary-encoded ids are far smaller on disk than in memory, so one such task
# needed gigabytes and two workers of 11.8 GB were restarted for memory (docs/performance.md, Dask).
PARQUET_BLOCK_BYTES = "32MiB"


def source_files(source, mapping: SourceMapping | None = None) -> dict[str, Path]:
    """The file (or directory of Parquet parts) of each table of a source directory (named as
    ``mapping`` names it, if given)."""
    if is_database_url(source):
        raise ContractError(
            "the Dask engine reads source directories (Parquet or CSV files, or "
            "directories of Parquet parts); export the database first or use "
            "the pandas engine"
        )
    return {table: paths[0] for table, paths in table_files(source, mapping).items()}


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Dask's strings (pd.NA for missing) as pandas' default ``str`` (NaN): what read_table gives."""
    frame = frame.reset_index(drop=True)
    strings = {
        c: "str"
        for c, t in frame.dtypes.items()
        if isinstance(t, pd.StringDtype) and t.na_value is pd.NA
    }
    return frame.astype(strings) if strings else frame


def _numbered(frame: pd.DataFrame, offsets, partition_info=None) -> pd.DataFrame:
    start = int(offsets[partition_info["number"]]) if partition_info else 0
    frame = plain(frame)
    return frame.assign(**{ROW: np.arange(start, start + len(frame), dtype="int64")})


def read_raw(path: Path, parquet_block_bytes: str | int | None = None, renaming: ColumnRenaming | None = None):
    """(one table as a lazy dask DataFrame of raw values as read_table gives them plus ROW, rows).

    Parquet parts are read in file-name order like read_table, row groups joined up to
    ``parquet_block_bytes`` (default PARQUET_BLOCK_BYTES) a partition; CSV as text, empty meaning
    missing. ``renaming`` (from a mapping) gives the columns their contract names.
    The rows of every partition are counted first (a pass over the table) to number them in source
    order. (Counting one column only is cheaper but lets Dask fuse partitions differently.)
    """
    import dask.dataframe as dd

    path = Path(path)
    if path.is_dir() or path.name.endswith(".parquet"):
        parts = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        frame = dd.read_parquet(
            [str(p) for p in parts],
            split_row_groups="adaptive",
            blocksize=parquet_block_bytes or PARQUET_BLOCK_BYTES,
        )
    else:
        compressed = path.name.endswith(".gz")
        frame = dd.read_csv(
            str(path),
            dtype="str",
            keep_default_na=False,
            na_values=[""],
            blocksize=None if compressed else CSV_BLOCK_BYTES,
        )
    if renaming is not None:
        frame = frame.map_partitions(renaming.frame, path.name, meta=renaming.frame(frame._meta, path.name))
    lengths = frame.map_partitions(len).compute().to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype("int64")
    meta = _numbered(frame._meta, offsets)
    return frame.map_partitions(_numbered, offsets, meta=meta), int(lengths.sum())


def check_columns(table: str, frame) -> None:
    """The contract's structural column check (missing required columns) on a lazy table's schema."""
    empty = frame._meta.drop(columns=[c for c in (ROW, BUCKET) if c in frame.columns])
    check_table(table, empty, {}, reject_threshold=1.0)


def id_buckets(raw: pd.Series, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket, has id) of raw id values parsed as the contract parses them (distinct values once)."""
    codes, uniques = pd.factorize(raw)
    parsed = PARSERS["id"](pd.Series(uniques))
    where = np.append(bucket_of(parsed, buckets), 0)[codes]
    present = np.append(parsed.notna().to_numpy(), False)[codes]
    return where, present


def with_bucket(
    frame: pd.DataFrame, key: str, buckets: int, fallback: str | None = None
) -> pd.DataFrame:
    """The frame with BUCKET: the hash bucket of ``key``; rows without one go by ``fallback``."""
    if key not in frame.columns:
        raise ContractError(
            f"missing required column '{key}' (columns present: "
            f"{', '.join(c for c in frame.columns if c != ROW)})"
        )
    where, present = id_buckets(frame[key], buckets)
    if fallback is not None and fallback in frame.columns and not present.all():
        other, _ = id_buckets(frame[fallback], buckets)
        where = np.where(present, where, other)
    return frame.assign(**{BUCKET: where.astype("int64")})


def shuffle_to_buckets(frame, column: str, buckets: int):
    """The dask frame repartitioned so that partition b holds exactly the rows whose ``column`` is b."""
    divisions = list(range(buckets)) + [buckets - 1]
    return frame.set_index(column, divisions=divisions)


def sorted_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """(raw frame in source order without helper columns, its ROW values)."""
    frame = frame.sort_values(ROW, kind="stable").reset_index(drop=True)
    rows = frame[ROW].to_numpy(dtype="int64")
    return frame.drop(columns=[c for c in (ROW, BUCKET, TARGET) if c in frame.columns]), rows


def attribute_profile(frame: pd.DataFrame) -> tuple[AttributeKinds, dict[str, set]]:
    """One raw customers partition: AttributeKinds statistics and the text values of each attribute."""
    raw = plain(frame).drop(columns=[c for c in (ROW, BUCKET) if c in frame.columns])
    kinds = AttributeKinds()
    kinds.add(pa.RecordBatch.from_pandas(raw, preserve_index=False))
    levels = {}
    for name in kinds.typed_numeric:
        if not kinds.typed_numeric[name]:
            levels[name] = set(PARSERS["text"](raw[name]).dropna().unique().tolist())
    return kinds, levels


def merged_attributes(parts) -> tuple[dict[str, str], dict[str, pd.CategoricalDtype]]:
    """(kind of each attribute, categorical dtype of each text attribute) for the whole table.

    Levels are what the whole-table loader would give: the sorted distinct values of the column.
    """
    merged = AttributeKinds()
    levels: dict[str, set] = {}
    for kinds, values in parts:
        for name, typed in kinds.typed_numeric.items():
            merged.typed_numeric[name] = merged.typed_numeric.get(name, True) and typed
        for name, present in kinds.present.items():
            merged.present[name] = merged.present.get(name, False) or present
        for name, numeric in kinds.all_numeric.items():
            merged.all_numeric[name] = merged.all_numeric.get(name, True) and numeric
        for name, found in values.items():
            levels.setdefault(name, set()).update(found)
    kinds = merged.kinds()
    dtypes = {}
    for name, kind in kinds.items():
        if kind == "text":
            values = pd.Series(sorted(levels.get(name, ())), dtype="str")
            dtypes[name] = values.astype("category").dtype
    return kinds, dtypes
