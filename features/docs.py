"""docs/features.md, rendered from the family registry so the documentation cannot drift.

Run ``python -m features.docs`` after changing a family; tests/features/test_features_doc.py fails
while the committed file differs from what the registry renders.
"""

from __future__ import annotations

import sys
from pathlib import Path

from features import atomic
from features.build import FAMILIES
from features.catalog import FeatureFamily

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "features.md"

INTRO = """\
# Features

Generated from the family registry (`features/build.py`) by `python -m features.docs`; do not edit
by hand.

`build_features(tables, as_of, config)` returns one row per customer who signed up strictly before
`as_of`, indexed by `customer_id`, with the columns below in this order. Every family reads only rows
dated strictly before `as_of` (tests/features/test_point_in_time.py proves that rows dated on or
after it never change a value). Numbers are float64 (counts too, so NaN fits and the model signature
stays stable); text attributes are categorical.

**Missing values.** When a family has no row for a customer, the features listed with a fill value
get it (a count of nothing is 0); every other feature stays NaN, because unknown is never silently
zero. Features documented as NaN under some condition are NaN for customers the family does cover.

**Population-wide** families depend on other customers' rows (graph centrality, revenue of referred
customers). Engines that never hold a whole table (the batch scorer, the Dask engine) compute them
once over everyone from batches (`features.population.PopulationFeatures`) and pass them to
`build_features(..., precomputed=...)` for each chunk of customers. A family whose source table is
absent (no referrals table, say) gives every customer NaN: unknown, not its fill value.

**Social** families exist only because the business sees customers on social media; the training
ablation drops exactly these to measure what social data adds.
"""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fill_rule(family: FeatureFamily, feature: str) -> str:
    if feature in family.fill:
        value = family.fill[feature]
        return f"{value:g}" if isinstance(value, (int, float)) else _cell(repr(value))
    return "NaN"


def render_family(family: FeatureFamily) -> str:
    flags = [
        f"population-wide: {'yes' if family.population_wide else 'no'}",
        f"social: {'yes' if family.is_social else 'no'}",
        f"computed by `{family.compute.__module__}.{family.compute.__name__}`",
    ]
    lines = [f"## {family.name}", "", "; ".join(flags) + ".", ""]
    doc = (sys.modules[family.compute.__module__].__doc__ or "").strip().split("\n\n")[0]
    if doc:
        lines += [" ".join(doc.split()), ""]
    if family.dynamic_prefix is not None:
        pattern = (
            f"Columns depend on the source: one per source column, each named "
            f"`{family.dynamic_prefix}<column>`. The feature manifest saved with a model records "
            "the actual names and category levels."
        )
        lines += [pattern, ""]
    lines += ["| feature | description | fill when absent |", "| --- | --- | --- |"]
    for feature, description in family.features.items():
        lines.append(f"| `{feature}` | {_cell(description)} | {_fill_rule(family, feature)} |")
    return "\n".join(lines) + "\n"


def render_features_markdown() -> str:
    """The full text of docs/features.md."""
    summary = ["| family | features | population-wide | social |", "| --- | --- | --- | --- |"]
    for family in FAMILIES:
        count = "dynamic" if family.dynamic_prefix is not None else str(len(family.features))
        wide = "yes" if family.population_wide else "no"
        social = "yes" if family.is_social else "no"
        summary.append(f"| [{family.name}](#{family.name}) | {count} | {wide} | {social} |")
    parts = [INTRO, "\n".join(summary) + "\n"] + [render_family(f) for f in FAMILIES]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write docs/features.md (or the path given as the only argument)."""
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DOC_PATH
    atomic.write_text(path, render_features_markdown())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
