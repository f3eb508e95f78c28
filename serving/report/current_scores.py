"""Today's scores for the report: tier economics, the top tier's first customers, lineage and the manifest.

The report's decision-maker section is built from the scores file ``clv score`` published (sorted
by value_rank) and its manifest beside it (serving.scoring.core.manifest_path). Manifests written
before issue 21 lack "currency", "tier_economics", "interval" and "drift"; the tier economics are
then computed from the file itself, two columns read batch by batch, and the rest is reported as
not recorded. Only the first rows are read for the top customers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from features.errors import UserError
from serving.contact_list import score_parts, top_scores
from serving.scoring.core import manifest_path
from serving.scoring.tiers import TIER_NAMES

TOP_CUSTOMERS = 20
LINEAGE = ("model_name", "model_version", "model_run_id", "as_of", "horizon_days", "scored_at")
TIER_LABELS = {"top_1pct": "Top 1%", "top_10pct": "Next 9% (top 10%)", "top_50pct": "Next 40% (top half)",
               "rest": "Bottom half"}
BATCH_ROWS = 1 << 20


@dataclass
class CurrentScores:
    """What the report shows of one scores file."""

    path: Path
    tiers: pd.DataFrame  # tier, customers, total_value, mean_value, share_of_value (tier order)
    top: pd.DataFrame  # the first TOP_CUSTOMERS rows of the top tier (top_scores columns)
    top_tier: str
    lineage: dict
    manifest: dict = field(default_factory=dict)
    tiers_from_manifest: bool = False

    @property
    def customers(self) -> int:
        return int(self.tiers["customers"].sum())

    @property
    def currency(self) -> str | None:
        return self.manifest.get("currency") or None

    @property
    def drift(self) -> dict | None:
        return self.manifest.get("drift")

    @property
    def interval(self) -> dict | None:
        return self.manifest.get("interval")


def tier_economics(path: Path) -> pd.DataFrame:
    """Customers, total and mean predicted value and share of value per tier, from the scores themselves."""
    totals: dict[str, list[float]] = {}
    batches = (batch for part in score_parts(path)
               for batch in pq.ParquetFile(part).iter_batches(batch_size=BATCH_ROWS,
                                                              columns=["value_tier", "predicted_value"]))
    for batch in batches:
        frame = batch.to_pandas()
        for tier, group in frame.groupby("value_tier", sort=False)["predicted_value"]:
            entry = totals.setdefault(str(tier), [0, 0.0])
            entry[0] += len(group)
            entry[1] += float(group.sum())
    grand = sum(total for _, total in totals.values())
    rows = [{"tier": tier, "customers": int(totals[tier][0]), "total_value": totals[tier][1],
             "mean_value": totals[tier][1] / totals[tier][0],
             "share_of_value": totals[tier][1] / grand if grand else float("nan")}
            for tier in TIER_NAMES if tier in totals]
    return pd.DataFrame(rows, columns=["tier", "customers", "total_value", "mean_value", "share_of_value"])


def _manifest(path: Path) -> dict:
    where = manifest_path(path)
    if not where.exists():
        return {}
    try:
        value = json.loads(where.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _lineage(path: Path) -> dict:
    handle = pq.ParquetFile(score_parts(path)[0])
    columns = [c for c in LINEAGE if c in handle.schema_arrow.names]
    for batch in handle.iter_batches(batch_size=1, columns=columns):
        if len(batch):
            return {k: (None if v is None else str(v)) for k, v in batch.to_pylist()[0].items()}
    return {}


def load_current_scores(path, *, top: int = TOP_CUSTOMERS) -> CurrentScores:
    """The scores at ``path`` (a file, or the Dask engine's folder of parts) and its manifest, as the report reads them."""
    path = Path(path)
    if path.suffix.lower() != ".parquet":
        raise UserError(f"--scores {path}: expected the .parquet file written by clv score --out")
    if not path.exists() or (path.is_dir() and not score_parts(path)):
        raise UserError(f"--scores {path}: no such scores file (write one with clv score --out FILE.parquet)")
    try:
        head = top_scores(path, top)
    except (OSError, ValueError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"--scores {path}: cannot read it as a Parquet scores file ({err})") from None
    if not len(head):
        raise UserError(f"--scores {path}: the file holds no scored customers")
    manifest = _manifest(path)
    recorded = manifest.get("tier_economics")
    tiers = pd.DataFrame(recorded) if recorded else tier_economics(path)
    top_tier = str(head["value_tier"].iloc[0])
    return CurrentScores(path=path, tiers=tiers, top=head[head["value_tier"] == top_tier].reset_index(drop=True),
                         top_tier=top_tier, lineage=_lineage(path), manifest=manifest,
                         tiers_from_manifest=bool(recorded))
