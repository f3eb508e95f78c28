"""The family registry and the one function that turns contract tables into a feature table.

``build_features`` is the only way features are made, for training windows and for scoring alike,
so both see the same columns, order, fills and dtypes (training/serving skew is checked against the
feature manifest). Every family reads only rows dated strictly before as_of.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import ModuleType

import numpy as np
import pandas as pd

from features.allocator import reused_memory
from features.catalog import UNKNOWN, FeatureFamily
from features.config import FeatureConfig
from features.encoding import customer_index, eligible_customers, index_positions
from features.families import (
    attributes,
    btyd,
    coverage,
    history,
    network,
    referral,
    season,
    social,
    topical,
)
from features.run_request import check_cutoff
from features.tables import Tables


def _family(module: ModuleType, **extra) -> FeatureFamily:
    name = module.FAMILY
    return FeatureFamily(
        name=name,
        features=dict(module.FEATURES),
        compute=getattr(module, f"{name}_features"),
        fill=dict(module.FILL),
        population_wide=bool(getattr(module, "POPULATION_WIDE", False)),
        **extra,
    )


# Output column order. CRM families first, then the social ones (SOCIAL_FAMILIES), which the
# training ablation drops as a block.
FAMILIES: tuple[FeatureFamily, ...] = (
    _family(history),
    _family(btyd),
    _family(season),
    _family(attributes, dynamic_prefix=attributes.PREFIX),
    _family(referral),
    _family(coverage),
    _family(social),
    _family(network),
    _family(topical),
)

FAMILY_NAMES = tuple(f.name for f in FAMILIES)

OnFamily = Callable[[str, float], None]


def select_families(families=None) -> tuple[FeatureFamily, ...]:
    """Registry families by name (or FeatureFamily objects), in registry order; None means all."""
    if families is None:
        return FAMILIES
    if isinstance(families, (str, FeatureFamily)):
        families = [families]
    chosen: dict[str, FeatureFamily] = {}
    by_name = {f.name: f for f in FAMILIES}
    for item in families:
        if isinstance(item, FeatureFamily):
            chosen[item.name] = item
        elif item in by_name:
            chosen[item] = by_name[item]
        else:
            raise ValueError(f"unknown feature family {item!r}; known: {', '.join(FAMILY_NAMES)}")
    rank = {name: i for i, name in enumerate(FAMILY_NAMES)}
    return tuple(sorted(chosen.values(), key=lambda f: rank.get(f.name, len(rank))))


def population_features(
    tables: Tables,
    as_of,
    config: FeatureConfig,
    *,
    families=None,
    on_family: OnFamily | None = None,
) -> dict[str, pd.DataFrame]:
    """The population-wide families computed once over all of ``tables``, for chunked scoring.

    Pass the result as ``precomputed`` to build_features on each chunk (same as_of): values that
    depend on other customers (graph centrality, referred customers' revenue) then stay correct
    when a chunk's tables hold only its own customers.
    """
    check_cutoff(as_of)
    out = {}
    for family in select_families(families):
        if family.population_wide:
            out[family.name] = _compute(family, tables, as_of, config, on_family)
    return out


def build_features(
    tables: Tables,
    as_of,
    config: FeatureConfig,
    *,
    families=None,
    precomputed: Mapping[str, pd.DataFrame] | None = None,
    on_family: OnFamily | None = None,
) -> pd.DataFrame:
    """One row per customer who signed up before as_of (sorted customer_id index), every feature.

    Columns: the selected families' features in registry order; numbers float64, text category.
    A customer absent from a family's output gets the family's FILL values; anything else is NaN.
    ``precomputed`` maps a family name to its frame over the whole population (population_features).
    ``on_family(name, seconds)`` is called after each family, e.g. to report progress or timing.
    """
    check_cutoff(as_of)
    rows = customer_index(eligible_customers(tables.customers, as_of)["customer_id"])
    precomputed = precomputed or {}
    blocks = []
    # freed arrays reused while the families run, returned at the end (features.allocator)
    with reused_memory():
        for family in select_families(families):
            if family.name in precomputed:
                start = time.perf_counter()
                frame = precomputed[family.name]
                stamped = frame.attrs.get("as_of")
                if stamped is not None and pd.Timestamp(stamped) != as_of:
                    raise ValueError(
                        f"precomputed {family.name!r} features are as of {stamped}, not {as_of}"
                    )
                if on_family is not None:
                    on_family(family.name, time.perf_counter() - start)
            else:
                frame = _compute(family, tables, as_of, config, on_family)
            blocks.append(_conform(family, frame, rows))
    if not blocks:
        return pd.DataFrame(index=rows)
    out = pd.concat(blocks, axis=1)
    duplicated = out.columns[out.columns.duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"feature names produced by more than one family: {list(duplicated)}")
    return out


def feature_family_of(name: str, families=None) -> str:
    """The family that produces feature ``name`` (dynamic families match by prefix)."""
    for family in select_families(families):
        if name in family.features or (
            family.dynamic_prefix is not None and name.startswith(family.dynamic_prefix)
        ):
            return family.name
    raise KeyError(f"no feature family produces {name!r}")


def _compute(family: FeatureFamily, tables, as_of, config, on_family) -> pd.DataFrame:
    start = time.perf_counter()
    frame = family.compute(tables, as_of, config)
    frame.attrs = {**frame.attrs, "as_of": str(as_of), "family": family.name}
    if on_family is not None:
        on_family(family.name, time.perf_counter() - start)
    return frame


def _conform(family: FeatureFamily, frame: pd.DataFrame, rows: pd.Index) -> pd.DataFrame:
    """The family's frame on exactly ``rows``, in declared column order, filled and typed.

    Customers without a row get the family's FILL, or NaN when the frame says nothing is known
    (catalog.unknown_features: the source lacks the family's table).
    """
    fill = {} if frame.attrs.get(UNKNOWN) else family.fill
    if frame.index.name != "customer_id":
        raise ValueError(f"{family.name} features must be indexed by customer_id")
    # Families usually return exactly the output rows in order: then nothing needs realigning, and
    # the rows' own uniqueness (computed once per call, on ``rows``) answers for the frame's.
    aligned = frame.index.equals(rows)
    positions, duplicated = (None, rows.has_duplicates) if aligned else index_positions(frame.index, rows)
    if duplicated:
        raise ValueError(f"{family.name} features have duplicated customer_ids")
    if family.dynamic_prefix is not None:
        stray = [c for c in frame.columns if not str(c).startswith(family.dynamic_prefix)]
        if stray:
            raise ValueError(f"{family.name} columns must start with "
                             f"{family.dynamic_prefix!r}: {stray}")
        columns = list(frame.columns)
    else:
        columns = list(family.features)
        missing = [c for c in columns if c not in frame.columns]
        extra = [c for c in frame.columns if c not in family.features]
        if missing or extra:
            raise ValueError(
                f"{family.name} features differ from its FEATURES: missing {missing}, extra {extra}"
            )
    absent = None if aligned else positions < 0
    out = {}
    for column in columns:
        values = _typed(family.name, column, frame[column])
        if isinstance(values.dtype, pd.CategoricalDtype):
            taken = values.array if aligned else values.array.take(positions, allow_fill=True)
        else:
            source = values.to_numpy(dtype="float64", na_value=np.nan)
            if aligned:
                taken = source
            else:
                taken = np.where(absent, np.nan, source[positions] if len(source) else np.nan)
                if column in fill:
                    taken[absent] = fill[column]
        out[column] = taken
    return pd.DataFrame(out, index=rows, columns=columns)


def _typed(family: str, column: str, values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    if pd.api.types.is_string_dtype(values) or values.dtype == object:
        text = values.astype("str")
        return text.astype(pd.CategoricalDtype(sorted(text.dropna().unique())))
    raise TypeError(f"{family}.{column}: features must be numbers or text, not {values.dtype}")
