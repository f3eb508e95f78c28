"""The Dask training engine: windows built on the cluster, boosters fitted with lightgbm.dask.

Same pipeline as the in-memory engine (training.pipeline); what moves to the cluster:

- Feature windows: every (cutoff, bucket) is a build_features + label task
  (features.dask_engine), never gathered whole; ``DaskWindows`` holds their futures.
- Fitting: each booster of the objective (tweedie: one; two_part: buy and spend) is a
  DaskLGBMRegressor fit on encoded partitions. X and y are cut from ONE persisted frame, so their
  partitions cannot disagree (a known pitfall of frames straight from read_parquet).
- Early stopping: distributed LightGBM reports each worker's own validation metric, so the rounds
  are chosen from the validation metric of the whole validation window, computed on the workers
  for every round, with lightgbm.early_stopping's rule (best round, stop after
  early_stopping_rounds without improvement). The evaluation model trains all max_rounds rounds.

The test window (one row per customer), the baselines' transactions and the MLflow logging stay on
the client.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.dask_engine.cluster import cluster
from features.dask_engine.features import (
    check_label_window,
    features_dask,
    latest_transaction_before,
)
from features.dask_engine.read import source_files
from features.dask_engine.source import ClusterSource, load_source_dask
from features.ingest.mapping import as_mapping
from features.ingest.partition import table_columns
from features.manifest import FeatureManifest, manifest_for
from features.windows import training_cutoffs
from training.attribution import shap_sample
from training.config import TrainConfig
from training.model import CustomerValueModel, FeatureEncoder, lgb_params, make_model
from training.pandas_engine import source_description
from training.pipeline import Loaded, frame_digest
from training.progress import Steps

LABEL = "__clv_label__"
# lgb_params names -> the scikit-learn names DaskLGBMRegressor takes (the rest pass through).
SKLEARN_NAMES = {
    "feature_fraction": "colsample_bytree",
    "bagging_fraction": "subsample",
    "bagging_freq": "subsample_freq",
    "lambda_l2": "reg_lambda",
    "seed": "random_state",
}


class DaskEngine:
    """A Dask cluster: the source validated and partitioned there, windows and boosters there too.

    scheduler: ``tcp://host:8786``, a distributed.Client, or None for a local cluster sized to the
    machine; buckets: partitions of customers (default: features.dask_engine.source.default_buckets).
    """

    name = "dask"

    def __init__(self, scheduler=None, buckets: int | None = None):
        self.scheduler, self.buckets = scheduler, buckets

    @contextmanager
    def load(self, data, config: TrainConfig, *, until: pd.Timestamp | None, steps: Steps,
             mapping=None) -> Iterator[Loaded]:
        with cluster(self.scheduler) as client:
            with steps.step("Loading, validating and partitioning the source on the cluster"):
                cs = load_source_dask(data, client, buckets=self.buckets,
                                      reject_threshold=config.features.reject_threshold,
                                      rules=config.features.export_rules(), mapping=mapping)
            if until is not None:
                # As in the pandas engine, rows dated on or after the training as_of do not exist for
                # the run: nothing reads them but the label coverage check, which is told so here.
                cs.last_tx = latest_transaction_before(cs, until)
            rejected = int(sum(len(frame) for frame in cs.rejects.values()))
            described = source_description(data)
            tags = {"dask_workers": str(len(client.scheduler_info()["workers"])), "dask_partitions": str(cs.buckets)}
            renames = as_mapping(mapping)
            columns = {t: table_columns(p, renames.renaming(t)) for t, p in source_files(data, renames).items()}
            yield Loaded(DaskSource(cs), DaskFitter(client), cs.last_tx, {"source": described, **cs.fingerprint},
                         rejected, described, tags, columns, list(cs.attribute_kinds), dict(cs.identifiers))


class DaskWindows:
    """Windows on the cluster: cutoff -> one future per bucket (features, cutoff, label)."""

    def __init__(self, client, parts: dict[pd.Timestamp, list]):
        self.client, self.parts = client, dict(sorted(parts.items()))

    def futures(self) -> list:
        return [f for parts in self.parts.values() for f in parts]

    def cutoffs(self) -> list[pd.Timestamp]:
        return list(self.parts)

    def select(self, cutoffs) -> DaskWindows:
        wanted = set(cutoffs)
        return DaskWindows(self.client, {c: p for c, p in self.parts.items() if c in wanted})

    def without(self, columns: list[str]) -> DaskWindows:
        return DaskWindows(self.client, {c: [self.client.submit(_without, f, columns) for f in parts]
                                         for c, parts in self.parts.items()})

    def manifest(self, config: FeatureConfig, families) -> FeatureManifest:
        meta = self.client.submit(_empty, self.futures()[0]).result()
        return manifest_for(meta, config, families)

    def rows(self) -> int:
        return int(sum(self.client.gather([self.client.submit(len, f) for f in self.futures()])))

    def positives(self) -> int:
        return int(sum(self.client.gather([self.client.submit(_positives, f) for f in self.futures()])))

    def frame(self) -> pd.DataFrame:
        return pd.concat(self.client.gather(self.futures())).sort_index(kind="stable")

    def sample(self, n: int, seed: int) -> pd.DataFrame:
        """Each partition sampled on its worker (seeded per partition), then a seeded sample of those."""
        futures = self.futures()
        fraction = min(1.0, 1.5 * n / max(self.rows(), 1))
        drawn = self.client.gather([self.client.submit(_sample, f, fraction, seed + i)
                                    for i, f in enumerate(futures)])
        return shap_sample(pd.concat(drawn), n, seed=seed)

    def digest(self) -> str:
        """The digest of the partition digests: the same windows give the same value on any cluster."""
        digests = self.client.gather([self.client.submit(frame_digest, f) for f in self.futures()])
        return hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


class DaskSource:
    """Windows and baseline inputs from a source validated and partitioned on the cluster."""

    def __init__(self, cs: ClusterSource):
        self.cs = cs

    def windows(self, eval_cutoff: pd.Timestamp, n_windows: int, step_days: int, config: TrainConfig,
                steps: Steps) -> DaskWindows:
        """build_training_set's windows as futures, with its skipping rule (a cutoff on or before the
        first transaction has no history) and label-coverage check, judged on the whole source."""
        horizon = config.horizon_days
        cutoffs = sorted(training_cutoffs(eval_cutoff, horizon, n_windows, step_days))
        parts = {}
        for cutoff in cutoffs:
            if cutoff + pd.Timedelta(days=horizon) > eval_cutoff:
                raise AssertionError(f"label window from {cutoff} passes eval_cutoff {eval_cutoff}")
            if self.cs.first_tx is None or cutoff <= self.cs.first_tx:
                continue
            check_label_window(self.cs, cutoff, horizon)
            steps.update(f"window {cutoff.date()} on the cluster")
            parts[cutoff] = features_dask(self.cs, cutoff, config.features, labels=True)
        if not parts:
            raise ValueError(
                f"no training window has transactions before its cutoff (cutoffs {cutoffs[0].date()}"
                f" .. {cutoffs[-1].date()}); use fewer windows, a smaller step or a later eval_cutoff"
            )
        return DaskWindows(self.cs.client, parts)

    def first_transaction(self) -> pd.Timestamp | None:
        return self.cs.first_tx

    def has_social_data(self) -> bool:
        return self.cs.social is not None

    def baseline_transactions(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """What the BG/NBD baseline reads, gathered: the purchases (positive amounts) before the cutoff."""
        client = self.cs.client
        parts = client.gather([client.submit(_purchases, t, cutoff) for t in self.cs.transactions])
        return pd.concat(parts, ignore_index=True)

    def customers(self, ids: pd.Index) -> pd.DataFrame:
        everyone = pd.concat(self.cs.client.gather(self.cs.slims)).set_index("customer_id")
        return everyone.loc[ids, ["signup_date"]].reset_index()


class DaskFitter:
    """CustomerValueModels fitted with DaskLGBMRegressor on the windows' partitions."""

    def __init__(self, client):
        self.client = client

    def fit(self, train: DaskWindows, validation: DaskWindows, manifest: FeatureManifest,
            config: TrainConfig) -> CustomerValueModel:
        return fit_dask(self.client, train.futures(), manifest, config, validation=validation.futures())

    def refit(self, windows: DaskWindows, manifest: FeatureManifest, config: TrainConfig,
              rounds: dict[str, int]) -> CustomerValueModel:
        return fit_dask(self.client, windows.futures(), manifest, config, rounds=rounds)


def _purchases(transactions: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    keep = (transactions["timestamp"] < cutoff) & (transactions["amount"] > 0)
    return transactions.loc[keep, ["customer_id", "timestamp", "amount"]]


def _positives(frame: pd.DataFrame) -> int:
    return int((frame["label"] > 0).sum())


def _empty(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:0]


def _without(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame.drop(columns=columns)


def _sample(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    return frame.sample(frac=fraction, random_state=seed) if fraction < 1 else frame


# ---------------------------------------------------------------------------------------------
# Fitting on the cluster


def _encoded(frame: pd.DataFrame, encoder, model_params, seed: int, part: str) -> pd.DataFrame:
    """One partition as LightGBM sees it for booster ``part``: encoded features plus LABEL, the
    part's rows only (ValueModel's own label transform and row mask)."""
    value_model = make_model(model_params, encoder.categorical, seed=seed)
    _objective, mask, label = value_model.parts(frame["label"].to_numpy())[part]
    return encoder.encode(frame.loc[mask]).assign(**{LABEL: label[mask]})


def _sklearn_params(model_params, seed: int, objective: dict) -> dict:
    params = {SKLEARN_NAMES.get(k, k): v for k, v in lgb_params(model_params, seed=seed).items()}
    params.pop("num_threads")  # lightgbm.dask sets each worker's threads itself
    params.update(objective)
    return params


def _curve(booster_text: str, frame: pd.DataFrame, objective: dict, rounds: int) -> tuple[np.ndarray, int]:
    """(sum over the rows of the objective's metric after each round 1..rounds, rows) of one partition.

    The metrics are LightGBM's, per row: tweedie, binary_logloss, gamma (negative log-likelihood)
    and l2; the raw score grows one tree at a time.
    """
    import lightgbm as lgb

    booster = lgb.Booster(model_str=booster_text)
    X, y = frame.drop(columns=[LABEL]), frame[LABEL].to_numpy(dtype="float64")
    sums = np.zeros(rounds)
    if not len(y):
        return sums, 0
    raw = np.zeros(len(y))
    for i in range(rounds):
        raw += booster.predict(X, raw_score=True, start_iteration=i, num_iteration=1, validate_features=False)
        sums[i] = _metric(objective, y, raw).sum()
    return sums, len(y)


def _metric(objective: dict, y: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """LightGBM's per-row loss for the objective's metric at raw score ``raw``."""
    metric = objective["metric"]
    if metric == "tweedie":
        rho = objective["tweedie_variance_power"]
        return -y * np.exp((1 - rho) * raw) / (1 - rho) + np.exp((2 - rho) * raw) / (2 - rho)
    if metric == "binary_logloss":
        p = np.clip(1.0 / (1.0 + np.exp(-raw)), 1e-15, 1 - 1e-15)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))
    if metric == "gamma":
        return y * np.exp(-raw) + raw  # -log-likelihood with psi = 1, up to a constant in y
    if metric == "l2":
        return (y - raw) ** 2
    raise ValueError(f"no distributed validation metric for {metric!r}")


def early_stopping_rounds(curve: np.ndarray, patience: int) -> int:
    """Rounds lightgbm.early_stopping would keep on this validation curve (lower is better)."""
    best, best_score = 0, np.inf
    for i, score in enumerate(curve):
        if score < best_score:
            best, best_score = i, score
        elif i - best >= patience:
            break
    return best + 1


def fit_dask(client, frames: list, manifest: FeatureManifest, config: TrainConfig, *,
             validation: list | None = None, rounds: dict[str, int] | None = None) -> CustomerValueModel:
    """A CustomerValueModel fitted with DaskLGBMRegressor on window futures (features + label).

    With ``validation``: max_rounds rounds, then the early-stopping rounds of the whole validation
    window; with ``rounds``: exactly those rounds per booster (the refit).
    """
    import dask.dataframe as dd
    from lightgbm.dask import DaskLGBMRegressor

    if (validation is None) == (rounds is None):
        raise ValueError("pass either validation windows (early stopping) or fixed rounds")
    encoder = FeatureEncoder.from_manifest(manifest)
    value_model = make_model(config.model, encoder.categorical, seed=config.seed)
    objectives = {part: spec[0] for part, spec in value_model.parts(np.zeros(1)).items()}
    for part, objective in objectives.items():
        encoded = [client.submit(_encoded, f, encoder, config.model, config.seed, part) for f in frames]
        meta = client.submit(_empty, encoded[0]).result()
        # One persisted frame; X and y are its columns, so their partitions always agree.
        xy = dd.from_delayed(encoded, meta=meta, verify_meta=False).persist()
        X, y = xy.drop(columns=[LABEL]), xy[LABEL]
        n_rounds = config.model.max_rounds if rounds is None else max(1, int(rounds[part]))
        model = DaskLGBMRegressor(client=client, n_estimators=n_rounds,
                                  **_sklearn_params(config.model, config.seed, objective))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            model.fit(X, y, categorical_feature=encoder.categorical)
        booster = model.to_local().booster_
        if validation is not None:
            text = client.scatter(booster.model_to_string(), broadcast=True)
            valid = [client.submit(_encoded, f, encoder, config.model, config.seed, part) for f in validation]
            sums = client.gather([client.submit(_curve, text, v, objective, booster.current_iteration())
                                  for v in valid])
            total = sum(s for s, _ in sums)
            count = sum(n for _, n in sums)
            chosen = early_stopping_rounds(total / max(count, 1), config.model.early_stopping_rounds)
        else:
            chosen = n_rounds
        value_model.boosters[part] = booster
        value_model.rounds[part] = int(chosen)
        del xy, X, y
    return CustomerValueModel.from_fitted(value_model, encoder, manifest_json=manifest.to_json(),
                                          families=dict(manifest.families))
