"""Hash partitioning of customer-keyed tables into buckets, so a chunk holds whole customers.

Rows are streamed from the source files (Parquet batches or Arrow's CSV reader) and written to one
temporary Arrow IPC file per bucket, so no table is ever held in memory whole. (IPC rather than
Parquet: these files live for one run, and encoding Parquet cost 15 s per 10M transactions against
under 1 s for IPC; see docs/performance.md.) A row's bucket is a
stable hash of its customer_id *as the contract parses it* (trimmed; 1001.0 -> "1001"), so a
customer, its transactions and its profiles always meet in the same bucket, on every run and
machine. Each row carries its position in the source table (ROW), so rejects name the source row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pyarrow import ipc

from features.ingest.contract import PARSERS, ContractError
from features.ingest.id_sets import hash_ids
from features.ingest.mapping import ColumnRenaming

ROW = "__clv_row__"  # position of the row in its source table (0-based, file order)
BATCH_ROWS = 1 << 19
CSV_BLOCK_BYTES = 32 << 20


def n_buckets(n_customers: int, chunk_size: int) -> int:
    """Buckets needed for chunks of about chunk_size customers (at least one)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return max(1, math.ceil(n_customers / chunk_size))


def bucket_of(ids, buckets: int) -> np.ndarray:
    """Bucket (int64, 0..buckets-1) of each parsed customer id; a missing id goes to bucket 0.

    pandas.util.hash_array (SipHash with a fixed key) depends only on the id's UTF-8 bytes, so the
    assignment is identical across runs, processes and platforms.
    """
    values = pd.Series(ids, dtype="str")
    codes, uniques = pd.factorize(values)
    hashed = hash_ids(pa.array(uniques, type=pa.string()))  # the same values, without Python strings
    per_unique = (hashed % np.uint64(buckets)).astype("int64")
    return np.where(codes >= 0, np.append(per_unique, 0)[codes], 0)


def raw_id_buckets(raw: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """Buckets of raw id values, parsed exactly as the contract will parse them (distinct values once)."""
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    encoded = raw.dictionary_encode()
    parsed = PARSERS["id"](encoded.dictionary.to_pandas())
    per_value = bucket_of(parsed, buckets)
    indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype("int64")
    return np.append(per_value, 0)[indices]


def count_rows(path: Path) -> int:
    """Rows of a table file: Parquet from its footer, CSV by streaming it once."""
    if path.is_dir() or path.name.endswith(".parquet"):
        return sum(pq.ParquetFile(p).metadata.num_rows for p in _parquet_parts(path))
    return sum(len(batch) for batch in iter_batches(path, columns=None, table=path.name))


def _parquet_parts(path: Path) -> list[Path]:
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]


def iter_batches(path: Path, *, columns=None, table: str = "", batch_rows: int = BATCH_ROWS,
                 renaming: ColumnRenaming | None = None) -> Iterator[pa.RecordBatch]:
    """Raw batches of one table file, as features.ingest.source.read_table would see them.

    Parquet keeps its types (pandas index columns are dropped); CSV is read as text, an empty
    field meaning missing. ``columns`` restricts what is read (None: everything); ``renaming`` (from
    a mapping) gives the columns their contract names, in which ``columns`` is then written.
    """
    if renaming is None:
        yield from _file_batches(path, columns=columns, table=table, batch_rows=batch_rows)
        return
    for batch in _file_batches(path, columns=None, table=table, batch_rows=batch_rows):
        batch = renaming.batch(batch, path.name)
        yield batch if columns is None else batch.select([c for c in batch.schema.names if c in columns])


def _file_batches(path: Path, *, columns, table: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    if path.is_dir() or path.name.endswith(".parquet"):
        for part in _parquet_parts(path):
            handle = pq.ParquetFile(part)
            schema = handle.schema_arrow
            index_columns = [c for c in (schema.pandas_metadata or {}).get("index_columns", [])
                             if isinstance(c, str)]
            wanted = [c for c in schema.names if c not in index_columns
                      and (columns is None or c in columns)]
            for batch in handle.iter_batches(batch_size=batch_rows, columns=wanted):
                yield batch.replace_schema_metadata(None)
        return
    try:
        names = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
        convert = pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            include_columns=[n for n in names if columns is None or n in columns],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            null_values=[""],
        )
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                                convert_options=convert)
        for batch in reader:
            yield batch
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ContractError(f"{table}: cannot read {path.name}: {err}") from None


@dataclass
class BucketFiles:
    """The bucket files of one table, the source rows each holds, and their shared schema."""

    table: str
    directory: Path
    buckets: int
    rows: np.ndarray = field(default=None)  # rows per bucket
    schema: pa.Schema | None = None

    def path(self, bucket: int) -> Path:
        return self.directory / f"{self.table}-{bucket:05d}.arrow"

    @property
    def rows_in(self) -> int:
        return int(self.rows.sum())

    def read(self, bucket: int) -> tuple[pd.DataFrame, np.ndarray]:
        """(raw frame, source row of each row) of one bucket; empty with the table's columns if none."""
        data = read_arrow(self.path(bucket), self.schema)
        frame = data.drop_columns([ROW]).to_pandas()
        return frame, data.column(ROW).to_numpy()

    def take(self, bucket: int) -> tuple[pd.DataFrame, np.ndarray]:
        """read(bucket), and the bucket's file removed: a step that reads its bucket once frees the
        file's pages at once, so the page cache does not hold every bucket of the run until it ends
        (at millions of customers, more than the machine's free memory; docs/performance.md)."""
        out = self.read(bucket)
        self.path(bucket).unlink(missing_ok=True)
        return out


def read_arrow(path: Path, schema: pa.Schema | None = None) -> pa.Table:
    """A bucket file, memory-mapped (empty with ``schema`` when the bucket got no rows)."""
    if not path.exists():
        return schema.empty_table()
    with pa.memory_map(str(path)) as source:
        return ipc.open_file(source).read_all()


class BucketWriter:
    """One IPC file per bucket, opened on its first rows; ``write`` routes a table's rows by bucket."""

    def __init__(self, path_of, schema: pa.Schema):
        self.path_of = path_of
        self.schema = schema
        self.writers: dict[int, ipc.RecordBatchFileWriter] = {}

    def write(self, table: pa.Table, where: np.ndarray, buckets: int) -> np.ndarray:
        """Append each row to its bucket's file; returns the rows written per bucket."""
        order = np.argsort(where, kind="stable")
        table = table.take(pa.array(order))
        bounds = np.searchsorted(where[order], np.arange(buckets + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            if b not in self.writers:
                self.writers[b] = ipc.new_file(str(self.path_of(int(b))), self.schema)
            self.writers[b].write_table(table.slice(bounds[b], bounds[b + 1] - bounds[b]))
        return np.diff(bounds)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


def partition_table(path: Path, table: str, key: str, buckets: int, directory: Path, *,
                    on_rows=None, keep=None, renaming: ColumnRenaming | None = None) -> BucketFiles:
    """Stream one table into ``buckets`` Arrow IPC files by the hash of its ``key`` column.

    ``keep(batch, bucket_of_rows)`` is called on every raw batch (for side statistics);
    ``on_rows(n)`` after each batch (progress); ``renaming`` gives the columns their contract names.
    """
    files = BucketFiles(table, Path(directory), buckets, np.zeros(buckets, dtype="int64"))
    writer = None
    offset = 0
    try:
        for batch in iter_batches(path, table=table, renaming=renaming):
            if writer is None:
                if key not in batch.schema.names:
                    raise ContractError(f"{table}: missing required column '{key}' "
                                        f"(columns present: {', '.join(batch.schema.names)})")
                source_schema = batch.schema
                files.schema = source_schema.append(pa.field(ROW, pa.int64()))
                writer = BucketWriter(files.path, files.schema)
            elif batch.schema != source_schema:
                try:
                    batch = batch.cast(source_schema)
                except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as err:
                    raise ContractError(f"{table}: the parts of {path.name} disagree on columns "
                                        f"or types: {err}") from None
            n = len(batch)
            where = raw_id_buckets(batch.column(key), buckets)
            if keep is not None:
                keep(batch, where)
            rows = pa.array(np.arange(offset, offset + n, dtype="int64"))
            offset += n
            data = pa.Table.from_batches([batch.append_column(ROW, rows)])
            files.rows += writer.write(data, where, buckets)
            if on_rows is not None:
                on_rows(n)
    finally:
        if writer is not None:
            writer.close()
    if files.schema is None:  # a file without rows: read its columns for the empty buckets
        names = table_columns(path, renaming)
        files.schema = pa.schema([pa.field(name, pa.string()) for name in names]
                                 + [pa.field(ROW, pa.int64())])
    return files


def table_columns(path: Path, renaming: ColumnRenaming | None = None) -> list[str]:
    """The column names of a table's file (or folder of Parquet parts), under their contract names."""
    names = _column_names(path)
    return [name for _, name in renaming.pairs(names, path.name)] if renaming is not None else names


def _column_names(path: Path) -> list[str]:
    if path.is_dir() or path.name.endswith(".parquet"):
        parts = _parquet_parts(path)
        return pq.read_schema(parts[0]).names if parts else []
    return pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names

