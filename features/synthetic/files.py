"""The world's files: each table's Arrow schema, and Parquet files that appear only whole.

Row groups are written under a hidden temporary name and published by ``features.atomic``.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from features import atomic

STR, TS, F64 = pa.string(), pa.timestamp("ns"), pa.float64()
SCHEMAS = {
    "customers": pa.schema(
        [
            ("customer_id", STR),
            ("signup_date", TS),
            ("region", pa.dictionary(pa.int8(), STR)),
            ("acquisition_channel", pa.dictionary(pa.int8(), STR)),
            ("age", F64),
        ]
    ),
    "transactions": pa.schema(
        [
            ("customer_id", STR),
            ("timestamp", TS),
            ("amount", F64),
            ("order_id", STR),
            ("quantity", F64),
            ("category", STR),
            ("channel", STR),
            ("margin", F64),
        ]
    ),
    "social_profiles": pa.schema(
        [
            ("profile_id", STR),
            ("customer_id", STR),
            ("network", STR),
            ("snapshot_date", TS),
            ("followers", F64),
            ("following", F64),
            ("posts", F64),
            ("engagements", F64),
            ("influence_score", F64),
        ]
    ),
    "social_interactions": pa.schema(
        [
            ("source_profile_id", STR),
            ("target_profile_id", STR),
            ("timestamp", TS),
            ("kind", STR),
            ("topic", STR),
        ]
    ),
    "referrals": pa.schema([("referrer_id", STR), ("referred_id", STR), ("timestamp", TS)]),
    "ground_truth": pa.schema(
        [
            ("customer_id", STR),
            ("expected_value_next_year", F64),
            ("realised_value_next_year", F64),
            ("expected_value_last_year", F64),
            ("realised_value_last_year", F64),
            ("alive_at_end", pa.bool_()),
            ("purchase_rate", F64),
            ("base_purchase_rate", F64),
            ("dropout_rate", F64),
            ("churn_date", TS),
            ("mean_order_value", F64),
            ("topical_engagement", F64),
            ("has_social_profile", pa.bool_()),
            ("is_celebrity", pa.bool_()),
            ("is_offline_influencer", pa.bool_()),
            ("was_referred", pa.bool_()),
            ("referral_propensity", F64),
            ("referrals_made", pa.int64()),
        ]
    ),
    "ground_truth_profiles": pa.schema(
        [
            ("profile_id", STR),
            ("customer_id", STR),
            ("network", STR),
            ("is_celebrity", pa.bool_()),
            ("topical_share", F64),
            ("engagement_rate", F64),
            ("created_date", TS),
        ]
    ),
}

WORLD_JSON = "world.json"

# Statistics only where readers filter (time ranges, customer ranges); zstd-1 is as fast as snappy here
# and a third smaller.
_STATISTICS = ["customer_id", "timestamp", "signup_date", "snapshot_date"]


class ParquetRowGroups:
    """Row groups appended to the Parquet file ``path``, a temporary that the caller publishes.

    Encoding runs on ``encoder`` (one background thread shared by all writers) so that it overlaps
    with generating the next chunk; one thread keeps each file's row groups in submission order.
    """

    def __init__(self, path: Path, schema: pa.Schema, encoder: ThreadPoolExecutor):
        self.schema, self.encoder, self.rows = schema, encoder, 0
        self.writer = pq.ParquetWriter(
            path,
            schema,
            compression="zstd",
            compression_level=1,
            write_statistics=[c for c in _STATISTICS if c in schema.names],
        )
        self.pending: Future | None = None
        self.closed = False

    def write(self, columns: dict) -> None:
        table = pa.Table.from_arrays([columns[f.name] for f in self.schema], schema=self.schema)
        self._wait()  # at most one table in flight per file keeps memory bounded
        self.pending = self.encoder.submit(
            self.writer.write_table, table, row_group_size=max(len(table), 1)
        )
        self.rows += len(table)

    def _wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def close(self) -> None:
        """Wait for the last row group and finish the file; closing again does nothing."""
        if not self.closed:
            self._wait()
            self.writer.close()
            self.closed = True

    def abort(self) -> None:
        """Stop writing; an encoder error is not raised (the error that stopped us already is)."""
        if not self.closed:
            self.closed = True
            if self.pending is not None:
                self.pending.exception()
            self.writer.close()


@contextmanager
def publishing_parquet(
    path: Path, schema: pa.Schema, encoder: ThreadPoolExecutor
) -> Iterator[ParquetRowGroups]:
    """A writer of row groups for the Parquet file ``path``, which appears only whole.

    The rows go to a hidden temporary beside ``path``; when the block ends without error the file is
    closed (if the block has not closed it already) and published: synced and renamed onto ``path``.
    On error the temporary is removed and ``path`` keeps what it held.
    """
    with atomic.publishing(path) as tmp:
        writer = ParquetRowGroups(tmp, schema, encoder)
        try:
            yield writer
            writer.close()
        except BaseException:
            writer.abort()
            raise


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Delete the hidden temporaries of the world's files left in ``out_dir`` by killed runs."""
    removed = atomic.remove_stale(out_dir / WORLD_JSON)
    for name in SCHEMAS:
        removed += atomic.remove_stale(out_dir / f"{name}.parquet")
    return removed
