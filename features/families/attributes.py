"""Static customer attributes: the customers columns besides the key and signup_date, as features.

Which columns: the allow-list ``FeatureConfig.attributes`` when set, else every attribute column
except text columns that look like identifiers (features.identifiers: e-mail, phone, nearly unique),
so personal data does not become features nor travel with the model into MLflow.

Which columns exist depends on the source, so the names are dynamic (``attr_<column>``); the
feature manifest records the actual names and category levels. Caution for real CRMs: these columns
are a snapshot taken at export time, not at as_of. A column that is updated after the fact (a
"churned" flag, a loyalty tier earned by later purchases, a stored lifetime value) leaks the future
into training windows; keep such columns out of the source.
"""

from __future__ import annotations

import pandas as pd

from features.config import FeatureConfig
from features.encoding import customer_index, eligible_customers
from features.identifiers import identifier_columns
from features.tables import Tables

FAMILY = "attributes"
POPULATION_WIDE = False
PREFIX = "attr_"
KEY_COLUMNS = ("customer_id", "signup_date")

FEATURES = {
    f"{PREFIX}<column>": "one per static customers column (other than customer_id and "
    "signup_date) in the allow-list features.attributes, or not identifier-like when none is set: "
    "numbers and booleans as float64, text as category (levels as loaded, or the "
    "sorted values of eligible customers when the column is plain text); date columns are left "
    "out because they cannot be placed in time relative to as_of",
}
FILL: dict[str, float] = {}


def attribute_columns(customers: pd.DataFrame, config: FeatureConfig | None = None) -> list[str]:
    """The customers columns that become features, in table order.

    With ``config.attributes`` set, only those; else all but the identifier-like text columns of
    ``customers`` (pass the whole table: training resolves the list once, see features.identifiers).
    """
    candidates = [
        c
        for c in customers.columns
        if c not in KEY_COLUMNS
        and not pd.api.types.is_datetime64_any_dtype(customers[c])
        and not isinstance(customers[c].dtype, pd.PeriodDtype)
    ]
    if config is not None and config.attributes is not None:
        allowed = set(config.attributes)
        return [c for c in candidates if c in allowed]
    identifiers = identifier_columns(customers[candidates])
    return [c for c in candidates if c not in identifiers]


def attributes_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """One ``attr_`` column per static attribute, for customers who signed up before as_of."""
    columns = attribute_columns(tables.customers, config)  # judged on the whole table, not the eligible rows
    customers = eligible_customers(tables.customers, as_of)
    index = customer_index(customers["customer_id"])
    out = {}
    for column in columns:
        values = customers[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            # Levels come from the loader (the whole table): identical across windows and chunks.
            feature = values
        elif pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            feature = values.astype("float64")
        else:
            # Plain text: levels from eligible customers only, so later signups cannot change them.
            text = values.astype("str")
            feature = text.astype(pd.CategoricalDtype(sorted(text.dropna().unique())))
        out[PREFIX + str(column)] = feature.array  # positional: no alignment on the old index
    return pd.DataFrame(out, index=index)
