"""Customer attributes that look like identifiers (e-mail, phone, unique text), kept out of the features.

A column that names a person instead of describing a segment teaches a model nothing that
generalises, and its values would travel into the feature manifest (category levels), the logged
model, input examples and SHAP samples in MLflow. So, unless an allow-list
(``FeatureConfig.attributes``) says otherwise, a text attribute is left out when its distinct values
look like e-mail addresses or phone numbers, or are nearly one per customer. Numeric columns are
never judged (a continuous measure such as age is distinct per customer too): keep a numeric
identifier out with the allow-list. docs/privacy.md gives the rules and the ways to override them.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pandas as pd

from features.config import FeatureConfig
from features.errors import UserError

# A text column is an identifier when more than this share of its non-empty values are distinct
# and it has more than UNIQUE_MIN distinct values (a handful of distinct values on a tiny table is
# a segment, not an id).
UNIQUE_SHARE = 0.5
UNIQUE_MIN = 100
# Share of the distinct values (at most PATTERN_SAMPLE of them, seeded) that must match a pattern.
PATTERN_SHARE = 0.8
PATTERN_SAMPLE = 1000
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^\+?[\d\s().\-/]+$")
PHONE_DIGITS = 7  # fewer digits is a code (postcode, year), not a phone number
DATE_LIKE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$|^\d{1,2}[-/.]\d{1,2}[-/.]\d{4}$")  # not a phone number
KEY_COLUMNS = ("customer_id", "signup_date")


def identifier_reason(distinct: pd.Series, rows: int) -> str | None:
    """Why a text column with these distinct non-empty values over ``rows`` values is an identifier, or None."""
    distinct = distinct.dropna().astype("str")
    if len(distinct) == 0:
        return None
    sample = distinct if len(distinct) <= PATTERN_SAMPLE else distinct.sample(PATTERN_SAMPLE, random_state=0)
    if sample.str.match(EMAIL).mean() >= PATTERN_SHARE:
        return "e-mail addresses"
    digits = sample.str.count(r"\d")
    phone = sample.str.match(PHONE) & (digits >= PHONE_DIGITS) & ~sample.str.match(DATE_LIKE)
    if phone.mean() >= PATTERN_SHARE:
        return "phone numbers"
    if len(distinct) > UNIQUE_MIN and len(distinct) > UNIQUE_SHARE * rows:
        return f"nearly unique text ({len(distinct):,} distinct values in {rows:,} rows)"
    return None


def attribute_names(customers: pd.DataFrame) -> list[str]:
    """The customers columns besides the key and signup_date, in table order."""
    return [str(c) for c in customers.columns if c not in KEY_COLUMNS]


def identifier_columns(customers: pd.DataFrame) -> dict[str, str]:
    """Text attribute columns of a whole customers table that look like identifiers -> why."""
    out = {}
    for column in customers.columns:
        if column in KEY_COLUMNS:
            continue
        values = customers[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            present = values.dropna()
            distinct = pd.Series(present.cat.remove_unused_categories().cat.categories)
            rows = len(present)
        elif pd.api.types.is_string_dtype(values) or values.dtype == object:
            present = values.dropna()
            distinct = pd.Series(present.unique())
            rows = len(present)
        else:
            continue
        reason = identifier_reason(distinct, rows)
        if reason is not None:
            out[str(column)] = reason
    return out


def resolve_attributes(config: FeatureConfig, columns: list[str],
                       identifiers: dict[str, str]) -> tuple[FeatureConfig, dict[str, str]]:
    """(config with its attribute allow-list filled in, the columns left out as identifiers -> why).

    ``columns``: the customers table's attribute columns; ``identifiers``: identifier_columns of the
    whole table. An allow-list already set is kept as it is (the user decided), after checking that
    every column it names exists. Resolved once per run, so every window, bucket and the scorer
    (which reads the config from the model's manifest) use the same columns.
    """
    columns = [c for c in columns if c not in KEY_COLUMNS]
    if config.attributes is not None:
        missing = [c for c in config.attributes if c not in columns]
        if missing:
            raise UserError(f"features.attributes names customers column{'s' if len(missing) > 1 else ''} "
                            f"the source lacks: {', '.join(missing)} (it has: {', '.join(columns) or 'none'})")
        return config, {}
    excluded = {c: identifiers[c] for c in columns if c in identifiers}
    kept = tuple(c for c in columns if c not in excluded)
    return replace(config, attributes=kept), excluded


def exclusion_warning(excluded: dict[str, str]) -> str:
    """One line naming the columns left out (names and reasons only, never values)."""
    named = "; ".join(f"{name} ({why})" for name, why in excluded.items())
    return (f"warning: customers columns left out of the features because they look like identifiers: "
            f"{named}. List the attributes to use in [features] attributes of --config to decide yourself "
            "(docs/privacy.md).")
