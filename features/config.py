"""Feature configuration: one frozen object, logged whole with every run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from features.ingest.export_checks import ExportRules


@dataclass(frozen=True)
class FeatureConfig:
    """What the feature pipeline needs to know about the business.

    market_topics: interaction topics that belong to the business's market; topical relevance
        and the topic-personalised PageRank are measured against them (empty: those features are NaN).
    label: ``revenue`` (net amount, refunds included) or ``margin`` (when transactions carry one).
    horizon_days: length of the value window a label covers.
    peak_months: calendar months of the seasonal peak (share-of-spend-in-peak feature).
    interaction_half_life_days: recency decay of interaction weights in the network graph.
    pagerank_damping: probability of following an edge rather than jumping.
    btyd_penalizer: L2 penalty of the BG/NBD and Gamma-Gamma fits (btyd family and baseline).
    reject_threshold: largest share of a table's rows the contract may reject before the run stops.
    decimal: decimal mark of numbers the exports write as text: ``.``, ``,`` or ``auto`` (per column).
    max_amount: transaction amounts and margins beyond it (absolute) are rejected as implausible.
    attributes: the customers columns that become ``attr_`` features (an allow-list); None: every
        attribute column except those that look like identifiers (features.identifiers). Training
        resolves None to the columns it used, so the model's manifest names them.
    """

    market_topics: tuple[str, ...] = ()
    label: Literal["revenue", "margin"] = "revenue"
    horizon_days: int = 365
    peak_months: tuple[int, ...] = (11, 12)
    interaction_half_life_days: float = 180.0
    pagerank_damping: float = 0.85
    btyd_penalizer: float = 0.001
    reject_threshold: float = 0.01
    decimal: Literal["auto", ".", ","] = "auto"
    max_amount: float = 1e9
    attributes: tuple[str, ...] | None = None
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    def export_rules(self) -> ExportRules:
        """The contract's rules for how this business's exports write values."""
        return ExportRules(decimal=self.decimal, max_amount=float(self.max_amount))

    def to_dict(self) -> dict:
        """Plain-JSON view (tuples become lists), for manifests and MLflow params."""
        d = asdict(self)
        d.pop("extra", None)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
