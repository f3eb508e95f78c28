"""The names a source uses for the contract's tables and columns where they differ (``--mapping FILE``).

One mapping serves both kinds of source: a database reads the mapped relation and selects the mapped
columns under their contract names (features.ingest.database); a directory reads the mapped file
(``orders.csv`` holding the transactions) and renames its columns right after each raw read
(``ColumnRenaming``), so every engine validates the same frames a contract-named copy would give.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features.ingest.contract import TABLE_SPECS, ContractError
from features.tables import TABLE_NAMES


@dataclass(frozen=True)
class SourceMapping:
    """Source names of the contract tables and columns where they differ.

    tables: contract table -> source table, a database relation or a file stem
        (``{"transactions": "orders"}``: ``orders.csv``, ``orders.parquet`` or ``orders/``);
    columns: contract table -> {contract column -> source column}
        (``{"transactions": {"amount": "total"}}``).
    """

    tables: dict[str, str] = field(default_factory=dict)
    columns: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted((set(self.tables) | set(self.columns)) - set(TABLE_NAMES))
        if unknown:
            raise ContractError(f"mapping: unknown contract table(s) {', '.join(map(repr, unknown))} "
                                f"(tables are {', '.join(TABLE_NAMES)})")
        names = [*self.tables.values(), *(v for c in self.columns.values() for v in c.values())]
        if not all(isinstance(name, str) and name.strip() for name in names):
            raise ContractError(f"mapping: every source name must be non-empty text, not "
                                f"{next(n for n in names if not isinstance(n, str) or not n.strip())!r}")
        for table, columns in self.columns.items():
            if table == "customers":  # any customer column may be mapped: extra ones are attributes
                continue
            known = {s.name for s in TABLE_SPECS[table]}
            bad = sorted(set(columns) - known)
            if bad:
                raise ContractError(f"mapping: {table} has no contract column {', '.join(map(repr, bad))} "
                                    f"(columns are {', '.join(sorted(known))})")
        # Two contract tables read from one source table would each validate the other's rows.
        readers: dict[str, list[str]] = {}
        for table in TABLE_NAMES:
            readers.setdefault(self.table(table), []).append(table)
        shared = {name: tables for name, tables in readers.items() if len(tables) > 1}
        if shared:
            name, tables = next(iter(shared.items()))
            raise ContractError(f"mapping: {' and '.join(tables)} would both be read from {name!r}; "
                                "map each contract table to its own source table")

    @classmethod
    def from_dict(cls, data: dict) -> SourceMapping:
        if not isinstance(data, dict):
            raise ContractError("mapping: expected an object with the keys 'tables' and 'columns'")
        extra = sorted(set(data) - {"tables", "columns"})
        if extra:
            raise ContractError(f"mapping: unknown key(s) {', '.join(map(repr, extra))}; "
                                "expected 'tables' and 'columns'")
        tables, columns = data.get("tables", {}), data.get("columns", {})
        if not isinstance(tables, dict) or not isinstance(columns, dict) \
                or not all(isinstance(c, dict) for c in columns.values()):
            raise ContractError("mapping: 'tables' maps contract tables to names, and 'columns' each "
                                "contract table to a table of contract column = source column")
        return cls(tables=dict(tables), columns={t: dict(c) for t, c in columns.items()})

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SourceMapping:
        """Read a ``.json`` or ``.toml`` mapping file with the keys ``tables`` and ``columns``."""
        path = Path(path)
        try:
            text = path.read_text()
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (OSError, ValueError) as err:
            raise ContractError(f"mapping: cannot read {path}: {err}") from None
        return cls.from_dict(data)

    def table(self, name: str) -> str:
        return self.tables.get(name, name)

    def column(self, table: str, name: str) -> str:
        return self.columns.get(table, {}).get(name, name)

    def renaming(self, table: str) -> ColumnRenaming | None:
        """How ``table``'s columns are renamed after a raw read from a file (None: kept as they are)."""
        columns = self.columns.get(table)
        return ColumnRenaming(table, dict(columns)) if columns else None


def as_mapping(mapping: SourceMapping | dict | str | os.PathLike | None) -> SourceMapping:
    """A mapping from an object, a dict or a file path (None: contract names everywhere)."""
    if mapping is None:
        return SourceMapping()
    if isinstance(mapping, SourceMapping):
        return mapping
    if isinstance(mapping, dict):
        return SourceMapping.from_dict(mapping)
    return SourceMapping.from_file(mapping)


def check_mapped_columns(table: str, wanted: dict[str, str], present: Iterable[str], shown: str) -> None:
    """Every source column the mapping names exists in ``shown`` (a relation or a file)."""
    present = list(present)
    missing = {k: v for k, v in wanted.items() if v not in present}
    if missing:
        raise ContractError(
            f"{table}: mapped column{'s' if len(missing) > 1 else ''} "
            + ", ".join(f"{k!r} -> {v!r}" for k, v in missing.items())
            + f" not found in {shown} (columns present: {', '.join(present)})")


@dataclass(frozen=True)
class ColumnRenaming:
    """One table's column mapping applied to raw frames read from a file: source names become contract names.

    columns: contract column -> source column, as in the mapping. A source column named like a mapped
    contract column (and not itself mapped) is dropped: the mapping wins, as for a database.
    """

    table: str
    columns: dict[str, str]

    def pairs(self, present: Iterable[str], shown: str) -> list[tuple[str, str]]:
        """(source column, contract name) for the columns kept, in the file's order."""
        present = list(present)
        check_mapped_columns(self.table, self.columns, present, shown)
        contract_names: dict[str, list[str]] = {}
        for contract, source in self.columns.items():
            contract_names.setdefault(source, []).append(contract)
        return [(name, contract) for name in present
                for contract in contract_names.get(name, [] if name in self.columns else [name])]

    def frame(self, raw: pd.DataFrame, shown: str) -> pd.DataFrame:
        """A raw pandas frame under contract names (also applied to each partition of a dask frame)."""
        pairs = self.pairs(raw.columns, shown)
        return raw[[source for source, _ in pairs]].set_axis([name for _, name in pairs], axis=1)

    def batch(self, raw: pa.RecordBatch, shown: str) -> pa.RecordBatch:
        """A raw Arrow batch under contract names."""
        pairs = self.pairs(raw.schema.names, shown)
        return pa.RecordBatch.from_arrays([raw.column(source) for source, _ in pairs],
                                          names=[name for _, name in pairs])
