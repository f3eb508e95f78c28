"""Rejected rows of a chunked run: written part by part, counted per table, published sorted by source row.

A rejected row keeps its raw values, its row number in the source table and the contract's reason,
exactly as ``clv validate`` writes them (features.ingest.source.write_rejects). The chunked scorer
and the Dask engine check tables in parts (buckets, batches); the whole-table rules (the reject
threshold, a column that parses nowhere) are judged here on the totals.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features import atomic
from features.ingest.contract import (
    QUOTED,
    ColumnParse,
    ContractError,
    add_parsing,
    check_parsing,
    check_reject_share,
    check_table,
    part_parsing,
)
from features.ingest.export_checks import DEFAULT_RULES, UNKNOWN_KEPT, ExportRules, id_hint
from features.tables import TABLE_NAMES

_ROWS_IN_MESSAGE = re.compile(r"\(rows ([\d, ]+)(, \.\.\.)?;")


@dataclass
class RejectPart:
    """What the contract said about one part (bucket or batch) of a table."""

    table: str
    rows_in: int
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)  # reason without quoted values -> rows
    parsing: dict[str, ColumnParse] = field(default_factory=dict)  # rows are the source's
    unknown: dict[str, list[str]] = field(default_factory=dict)  # reference column -> some unknown ids


def checked_part(table: str, raw: pd.DataFrame, known: dict, source_rows: np.ndarray | None,
                 directory: Path, part: str, rules: ExportRules = DEFAULT_RULES):
    """check_table on a part of a table; its rejects go to ``rejects-<table>-<part>.csv`` in directory.

    The share of rejected rows and whether a column parses at all are never judged here: only the
    whole table can be (RejectLog.check_table). Returns (TableResult, RejectPart). Row numbers, in
    the rejects and in any error, are the source's.
    """
    try:
        result = check_table(table, raw, known, reject_threshold=1.0, part=True, rules=rules)
    except ContractError as err:
        raise source_rows_error(err, source_rows) if source_rows is not None else err from None
    out = write_part(directory, table, part, result.rows_in, result.rejects, source_rows)
    out.parsing = part_parsing(result, source_rows)
    out.unknown = result.unknown
    return result, out


def write_part(directory: Path, table: str, part: str, rows_in: int, rejects: pd.DataFrame,
               source_rows: np.ndarray | None) -> RejectPart:
    """Write a part's rejected rows (row numbers mapped to the source table's); return their counts."""
    out = RejectPart(table, int(rows_in))
    if not len(rejects):
        return out
    rejects = rejects.copy()
    if source_rows is not None:
        rejects["row"] = source_rows[rejects["row"].to_numpy(dtype="int64")]
    rejects.to_csv(directory / f"rejects-{table}-{part}.csv", index=False)
    out.rejected = len(rejects)
    out.reasons.update(rejects["reason"].str.replace(QUOTED, "", regex=True).tolist())
    return out


def source_rows_error(err: ContractError, source_rows: np.ndarray) -> ContractError:
    """A structural error raised on a part of a table, with its row numbers mapped to the source's."""
    def mapped(match):
        rows = [str(int(source_rows[int(p)])) for p in match.group(1).split(", ")]
        return f"(rows {', '.join(rows)}{match.group(2) or ''};"

    return ContractError(_ROWS_IN_MESSAGE.sub(mapped, str(err)))


def remove_stale_rejects(directory: Path, keep: set[str]) -> list[Path]:
    """Delete a previous run's ``<table>.csv`` rejects for every contract table not in ``keep``.

    Only files that are rejects files (first column ``row``, last ``reason``) are removed, so a
    rejects folder pointed at a folder of real exports loses nothing.
    """
    removed = []
    for table in TABLE_NAMES:
        path = Path(directory) / f"{table}.csv"
        if table in keep or not path.is_file():
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            header = fh.readline().rstrip("\r\n").split(",")
        if header[0] == "row" and header[-1] == "reason":
            path.unlink()
            removed.append(path)
    return removed


class RejectLog:
    """Counts per table over every part, the reject threshold, and the published files."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.rows_in: Counter = Counter()
        self.rejected: Counter = Counter()
        self.reasons: dict[str, Counter] = {}
        self.parsing: dict[str, dict[str, ColumnParse]] = {}
        self.unknown: dict[str, dict[str, list[str]]] = {}  # table -> column -> some unknown ids
        self.known_ids = None  # target table -> its ids so far (for id_hint), set by the run

    def record(self, part: RejectPart) -> None:
        self.rows_in[part.table] += part.rows_in
        self.rejected[part.table] += part.rejected
        self.reasons.setdefault(part.table, Counter()).update(part.reasons)
        add_parsing(self.parsing.setdefault(part.table, {}), part.parsing, part.table)
        for column, ids in part.unknown.items():
            kept = self.unknown.setdefault(part.table, {}).setdefault(column, [])
            kept.extend(ids[: max(0, UNKNOWN_KEPT - len(kept))])

    def check_table(self, table: str, total_rows: int, threshold: float, *, final: bool) -> None:
        """Stop as the whole-table loader does: on a column none of whose values parse (known only
        once every part is in, ``final=True``), or when too many rows of the table are invalid."""
        if final:
            check_parsing(table, self.parsing.get(table, {}))
        self.check_threshold(table, total_rows, threshold, final=final)

    def check_threshold(self, table: str, total_rows: int, threshold: float, *, final: bool) -> None:
        """Stop, as the whole-table loader does, when too many rows of a table are invalid.

        Checked after every part (``final=False``) so that a hopeless source stops early; the count
        is then a lower bound.
        """
        def counts() -> Counter:
            pieces: Counter = Counter()
            for reason, n in self.reasons.get(table, Counter()).items():
                for piece in reason.split("; "):
                    pieces[piece] += n
            return pieces

        check_reject_share(table, self.rejected[table], total_rows, threshold, counts, at_least=not final,
                           hint=lambda: id_hint(table, self.unknown.get(table, {}), self.known_ids))

    def summary(self) -> dict:
        """Per table: rows_in, rows_kept, rows_rejected and the most frequent reason."""
        out = {}
        for table in self.rows_in:
            top = self.reasons.get(table, Counter()).most_common(1)
            out[table] = {"rows_in": int(self.rows_in[table]),
                          "rows_kept": int(self.rows_in[table] - self.rejected[table]),
                          "rows_rejected": int(self.rejected[table]),
                          "top_reason": top[0][0] if top else ""}
        return out

    def publish(self, directory: Path) -> list[Path]:
        """One ``<table>.csv`` per table with rejects, sorted by source row; stale ones removed."""
        written = []
        remove_stale_rejects(directory, keep={t for t in self.rows_in
                                              if any(self.directory.glob(f"rejects-{t}-*.csv"))})
        for table in self.rows_in:
            target = directory / f"{table}.csv"
            parts = sorted(self.directory.glob(f"rejects-{table}-*.csv"))
            if not parts:
                continue
            frame = pd.concat([pd.read_csv(p, dtype="str", keep_default_na=False, na_values=[""])
                               for p in parts], ignore_index=True)
            frame = frame.iloc[np.argsort(frame["row"].astype("int64").to_numpy(), kind="stable")]
            atomic.write_frame(target, frame)
            written.append(target)
        return written
