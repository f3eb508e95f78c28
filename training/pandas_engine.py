"""The in-memory training engine: windows as pandas frames, boosters fitted with LightGBM.

``PandasEngine.load`` reads and validates the source whole (features.ingest.source.load_source);
``PandasSource`` builds each set of windows with features.windows.build_training_set on the
validated tables; ``PandasFitter`` fits training.model.ValueModel (early stopping on the
validation windows, or the evaluation model's rounds for the refit).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd

from features.config import FeatureConfig
from features.identifiers import attribute_names, identifier_columns
from features.ingest.source import describe_source, load_source
from features.manifest import FeatureManifest, manifest_for
from features.tables import TABLE_NAMES, Tables
from features.windows import build_training_set
from training.attribution import shap_sample
from training.config import TrainConfig
from training.model import CustomerValueModel, FeatureEncoder, make_model
from training.pipeline import Loaded, frame_digest
from training.progress import Steps


class PandasEngine:
    """Everything in this process: the source validated whole, windows and boosters in memory."""

    name = "pandas"

    @contextmanager
    def load(self, data, config: TrainConfig, *, until: pd.Timestamp | None, steps: Steps,
             mapping=None) -> Iterator[Loaded]:
        with steps.step("Loading source"):
            tables, fingerprint, rejected = load_tables(data, config, until=until, mapping=mapping)
        latest = tables.transactions["timestamp"].max()
        yield Loaded(PandasSource(tables), PandasFitter(), None if pd.isna(latest) else pd.Timestamp(latest),
                     fingerprint, rejected, source_description(data),
                     columns={name: list(getattr(tables, name).columns) for name in TABLE_NAMES
                              if getattr(tables, name) is not None},
                     attribute_columns=attribute_names(tables.customers),
                     identifiers=identifier_columns(tables.customers))


def load_tables(data, config: TrainConfig, *, until: pd.Timestamp | None = None, mapping=None):
    """(tables, fingerprint, rejected row count) from a source directory or URL, a LoadResult or Tables.

    ``until`` (the training as_of, when given): rows dated on or after it are not read; a database
    source filters them in SQL. Training never uses them: the latest label window ends at as_of.
    ``mapping``: table and column names of the source that differ from the contract.
    """
    if isinstance(data, Tables):
        return data, {"source": "in-memory tables"}, 0
    if hasattr(data, "tables") and hasattr(data, "fingerprint"):
        return data.tables, data.fingerprint, _rejected(data)
    result = load_source(data, reject_threshold=config.features.reject_threshold, until=until,
                         rules=config.features.export_rules(), mapping=mapping)
    return result.tables, {"source": describe_source(data), **result.fingerprint}, _rejected(result)


def source_description(data) -> str | None:
    """Where the data came from, safe to log: a resolved directory or a database URL without its
    password; None for tables already in memory."""
    if isinstance(data, Tables) or hasattr(data, "tables"):
        return None
    return describe_source(data)


def _rejected(result) -> int:
    return int(sum(len(frame) for frame in result.rejects.values())) if result.rejects else 0


class PandasWindows:
    """Stacked windows held as one frame indexed by customer_id, with ``cutoff`` and ``label``."""

    def __init__(self, frame: pd.DataFrame):
        self.frame_ = frame

    def cutoffs(self) -> list[pd.Timestamp]:
        return sorted(self.frame_["cutoff"].unique())

    def select(self, cutoffs) -> PandasWindows:
        return PandasWindows(self.frame_[self.frame_["cutoff"].isin(list(cutoffs))])

    def without(self, columns: list[str]) -> PandasWindows:
        return PandasWindows(self.frame_.drop(columns=columns))

    def manifest(self, config: FeatureConfig, families) -> FeatureManifest:
        return manifest_for(self.frame_, config, families)

    def rows(self) -> int:
        return len(self.frame_)

    def positives(self) -> int:
        return int((self.frame_["label"] > 0).sum())

    def frame(self) -> pd.DataFrame:
        return self.frame_

    def sample(self, n: int, seed: int) -> pd.DataFrame:
        return shap_sample(self.frame_, n, seed=seed)

    def digest(self) -> str:
        return frame_digest(self.frame_)


class PandasSource:
    """Windows and baseline inputs from validated tables held in memory."""

    def __init__(self, tables: Tables):
        self.tables = tables

    def windows(self, eval_cutoff: pd.Timestamp, n_windows: int, step_days: int, config: TrainConfig,
                steps: Steps) -> PandasWindows:
        def on_window(cutoff, rows, seconds):
            steps.update(f"window {pd.Timestamp(cutoff).date()}: {rows:,} customers ({seconds:.1f} s)")

        return PandasWindows(build_training_set(self.tables, eval_cutoff, config.features,
                                                n_windows=n_windows, step_days=step_days,
                                                on_window=on_window))

    def first_transaction(self) -> pd.Timestamp | None:
        first = self.tables.transactions["timestamp"].min()
        return None if pd.isna(first) else pd.Timestamp(first)

    def baseline_transactions(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        return self.tables.transactions

    def has_social_data(self) -> bool:
        profiles = self.tables.social_profiles
        return profiles is not None and len(profiles) > 0

    def customers(self, ids: pd.Index) -> pd.DataFrame:
        return self.tables.customers.set_index("customer_id").loc[ids, ["signup_date"]].reset_index()


class PandasFitter:
    """ValueModel boosters fitted in this process."""

    def fit(self, train: PandasWindows, validation: PandasWindows, manifest: FeatureManifest,
            config: TrainConfig) -> CustomerValueModel:
        """Booster(s) fitted on the training windows, early-stopped on the validation window(s)."""
        valid = validation.frame()
        return _fitted(train.frame(), manifest, config, lambda encoder: {
            "X_valid": encoder.encode(valid), "y_valid": valid["label"].to_numpy()})

    def refit(self, windows: PandasWindows, manifest: FeatureManifest, config: TrainConfig,
              rounds: dict[str, int]) -> CustomerValueModel:
        """The registered model: same settings, every refit window, the evaluation model's rounds."""
        return _fitted(windows.frame(), manifest, config, lambda encoder: {"rounds": rounds})


def _fitted(frame: pd.DataFrame, manifest: FeatureManifest, config: TrainConfig, how) -> CustomerValueModel:
    encoder = FeatureEncoder.from_manifest(manifest)
    model = make_model(config.model, encoder.categorical, seed=config.seed)
    model.fit(encoder.encode(frame), frame["label"].to_numpy(), **how(encoder))
    return CustomerValueModel.from_fitted(model, encoder, manifest_json=manifest.to_json(),
                                          families=dict(manifest.families))
