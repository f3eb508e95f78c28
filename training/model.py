"""The customer-value model: LightGBM boosters for one objective, and the MLflow pyfunc that serves them.

Categorical features travel as plain strings (MLflow signatures cannot carry pandas ``category``)
and are mapped to integer codes by the levels seen in training, both when fitting and when
predicting, so training and serving encode identically; unseen or missing levels become NaN, which
LightGBM routes like a missing value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from training.intervals import apply_intervals

# ---------------------------------------------------------------------------------------------
# Encoding


@dataclass(frozen=True)
class FeatureEncoder:
    """Column order, categorical levels and the string -> code mapping shared by training and serving."""

    features: tuple[str, ...]
    levels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, features: list[str] | None = None) -> FeatureEncoder:
        """Levels (sorted) of every non-numeric feature in the frame."""
        features = list(frame.columns if features is None else features)
        levels = {}
        for name in features:
            column = frame[name]
            if not pd.api.types.is_numeric_dtype(column) or isinstance(
                column.dtype, pd.CategoricalDtype
            ):
                values = column.dropna().astype(str).unique()
                levels[name] = tuple(sorted(values))
        return cls(tuple(features), levels)

    @classmethod
    def from_manifest(cls, manifest) -> FeatureEncoder:
        """Feature order and category levels (as strings, in the manifest's code order) of a
        features.manifest.FeatureManifest: training encodes exactly the features it records."""
        levels = {name: tuple(str(v) for v in manifest.categories[name])
                  for name in manifest.features if manifest.dtypes[name] == "category"}
        return cls(tuple(manifest.features), levels)

    @property
    def categorical(self) -> list[str]:
        return [name for name in self.features if name in self.levels]

    def model_input(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The pyfunc's input frame: categorical features as plain strings, every other feature float64."""
        missing = [name for name in self.features if name not in frame.columns]
        if missing:
            raise KeyError(
                f"feature frame is missing {len(missing)} model features: {missing[:10]}"
            )
        columns = {}
        for name in self.features:
            column = frame[name]
            if name in self.levels:
                columns[name] = column.astype("str")
            else:
                columns[name] = column.astype(np.float64)
        return pd.DataFrame(columns, index=frame.index)

    def encode(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Float64 matrix for LightGBM: numeric features as they are, categories as codes (unknown -> NaN)."""
        missing = [name for name in self.features if name not in frame.columns]
        if missing:
            raise KeyError(
                f"feature frame is missing {len(missing)} model features: {missing[:10]}"
            )
        columns = {}
        for name in self.features:
            column = frame[name]
            if name in self.levels:
                codes = (
                    pd.Index(self.levels[name]).get_indexer(column.astype("str")).astype(np.float64)
                )
                codes[codes < 0] = np.nan
                columns[name] = codes
            else:
                columns[name] = pd.to_numeric(column, errors="raise").astype(np.float64).to_numpy()
        return pd.DataFrame(columns, index=frame.index)


# ---------------------------------------------------------------------------------------------
# Boosters per objective


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def lgb_params(model_params, *, seed: int) -> dict:
    """LightGBM parameters shared by every booster; deterministic for a fixed seed and thread count."""
    return {
        "num_leaves": model_params.num_leaves,
        "max_depth": model_params.max_depth,
        "learning_rate": model_params.learning_rate,
        "min_child_samples": model_params.min_child_samples,
        "feature_fraction": model_params.feature_fraction,
        "bagging_fraction": model_params.bagging_fraction,
        "bagging_freq": model_params.bagging_freq,
        "lambda_l2": model_params.lambda_l2,
        "num_threads": model_params.num_threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }


@dataclass
class ValueModel:
    """Boosters of one objective, fitted on encoded features; predictions in currency.

    ``tweedie``: one booster, log link, trained on value clipped at 0 (a Tweedie mean cannot be negative).
    ``two_part``: a binary booster for P(value > 0) and a gamma (log link) booster for E[value | value > 0].
    ``log_target``: L2 regression on log1p(value clipped at 0), predictions expm1'd: this estimates a
        geometric-type mean, so totals come out low (retransformation bias; see docs/evaluation.md).
    """

    objective: str
    params: dict
    categorical: list[str]
    max_rounds: int = 500
    early_stopping_rounds: int = 30
    tweedie_variance_power: float = 1.5
    boosters: dict[str, lgb.Booster] = field(default_factory=dict)
    rounds: dict[str, int] = field(default_factory=dict)

    def parts(self, y: np.ndarray) -> dict[str, tuple[dict, np.ndarray, np.ndarray]]:
        """(objective params, row mask, label) of each booster."""
        y = np.asarray(y, dtype=np.float64)
        clipped = np.clip(y, 0.0, None)
        everyone = np.ones(len(y), dtype=bool)
        if self.objective == "tweedie":
            objective = {
                "objective": "tweedie",
                "tweedie_variance_power": self.tweedie_variance_power,
                "metric": "tweedie",
            }
            return {"value": (objective, everyone, clipped)}
        if self.objective == "two_part":
            return {
                "buy": (
                    {"objective": "binary", "metric": "binary_logloss"},
                    everyone,
                    (y > 0).astype(np.float64),
                ),
                "spend": ({"objective": "gamma", "metric": "gamma"}, y > 0, y),
            }
        if self.objective == "log_target":
            return {
                "log_value": (
                    {"objective": "regression", "metric": "l2"},
                    everyone,
                    np.log1p(clipped),
                )
            }
        raise ValueError(f"unknown objective {self.objective!r}")

    def fit(
        self,
        X: pd.DataFrame,
        y,
        *,
        X_valid: pd.DataFrame | None = None,
        y_valid=None,
        rounds: dict[str, int] | None = None,
    ) -> ValueModel:
        """Fit every booster: early stopping on (X_valid, y_valid), or exactly ``rounds`` per booster."""
        if (X_valid is None) == (rounds is None):
            raise ValueError(
                "pass either a validation set (early stopping) or fixed rounds, not both"
            )
        parts = self.parts(y)
        valid_parts = self.parts(y_valid) if X_valid is not None else None
        self.boosters, self.rounds = {}, {}
        for part, (objective, mask, label) in parts.items():
            params = {**self.params, **objective}
            train = lgb.Dataset(
                X[mask],
                label[mask],
                categorical_feature=self.categorical,
                free_raw_data=False,
                params={"verbosity": -1},
            )
            if rounds is not None:
                n_rounds = max(1, int(rounds[part]))
                booster = lgb.train(params, train, num_boost_round=n_rounds)
            else:
                _, vmask, vlabel = valid_parts[part]
                valid = lgb.Dataset(
                    X_valid[vmask],
                    vlabel[vmask],
                    reference=train,
                    categorical_feature=self.categorical,
                    free_raw_data=False,
                )
                booster = lgb.train(
                    params,
                    train,
                    num_boost_round=self.max_rounds,
                    valid_sets=[valid],
                    callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
                )
                n_rounds = booster.best_iteration or booster.current_iteration()
            self.boosters[part] = booster
            self.rounds[part] = int(n_rounds)
        return self

    def booster_strings(self) -> dict[str, str]:
        return {
            part: b.model_to_string(num_iteration=self.rounds[part])
            for part, b in self.boosters.items()
        }

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return predict_value(self.objective, self.boosters, self.rounds, X)

    def log_contributions(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return log_contributions(self.objective, self.boosters, self.rounds, X)


def make_model(model_params, categorical: list[str], *, seed: int) -> ValueModel:
    """An unfitted ValueModel for the configured objective (training.config.ModelParams)."""
    return ValueModel(
        objective=model_params.objective,
        params=lgb_params(model_params, seed=seed),
        categorical=list(categorical),
        max_rounds=model_params.max_rounds,
        early_stopping_rounds=model_params.early_stopping_rounds,
        tweedie_variance_power=model_params.tweedie_variance_power,
    )


def _raw(booster, rounds, X):
    """LightGBM's raw score of the encoded features: training.tree_predict, the same bits as
    ``booster.predict(X, raw_score=True)``, about 1.5x faster; LightGBM's own for frames whose
    columns are not plain numbers (its pandas categories)."""
    if isinstance(X, pd.DataFrame) and not all(isinstance(t, np.dtype) and t.kind in "biuf" for t in X.dtypes):
        return booster.predict(X, raw_score=True, num_iteration=rounds, validate_features=False)
    # Imported here: numba adds 54 MiB and 0.5 s to a process, paid only by the ones that predict.
    from training.tree_predict import raw_score

    matrix = X.to_numpy(np.float64) if isinstance(X, pd.DataFrame) else np.asarray(X, np.float64)
    return raw_score(booster, matrix, rounds)


def predict_value(objective: str, boosters: dict, rounds: dict, X: pd.DataFrame) -> np.ndarray:
    """Predicted value in currency from encoded features."""
    if objective == "tweedie":
        return np.exp(_raw(boosters["value"], rounds["value"], X))
    if objective == "two_part":
        p = _sigmoid(_raw(boosters["buy"], rounds["buy"], X))
        return p * np.exp(_raw(boosters["spend"], rounds["spend"], X))
    if objective == "log_target":
        return np.expm1(_raw(boosters["log_value"], rounds["log_value"], X))
    raise ValueError(f"unknown objective {objective!r}")


def log_contributions(objective: str, boosters: dict, rounds: dict, X: pd.DataFrame):
    """Exact TreeSHAP contributions on the model's log scale: (n x features matrix, baseline per row).

    The values are LightGBM's ``pred_contrib``, computed by training.tree_shap (about 20x faster).
    tweedie / log_target: LightGBM's raw SHAP values (log-mean / log1p scale) and the bias term.
    two_part: log P(buy) + log E[spend | buy]; the spend part is additive in raw SHAP, the log-sigmoid of
    the buy part is split across features in proportion to their raw SHAP on the logit scale.
    """
    # Imported here: numba adds 54 MiB and 0.5 s to a process, paid only by the ones that explain.
    from training.tree_shap import tree_shap

    matrix = X.to_numpy(np.float64) if isinstance(X, pd.DataFrame) else np.asarray(X, np.float64)
    if objective in ("tweedie", "log_target"):
        part = "value" if objective == "tweedie" else "log_value"
        contrib = tree_shap(boosters[part], matrix, rounds[part])
        return contrib[:, :-1], contrib[:, -1]
    if objective == "two_part":
        buy = tree_shap(boosters["buy"], matrix, rounds["buy"])
        spend = tree_shap(boosters["spend"], matrix, rounds["spend"])
        logit_total = buy[:, :-1].sum(axis=1)
        base_logit = buy[:, -1]
        log_p_change = _log_sigmoid(base_logit + logit_total) - _log_sigmoid(base_logit)
        # d log sigmoid(x) / dx = sigmoid(-x): the limit of the ratio when the logit does not move.
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(
                np.abs(logit_total) > 1e-12, log_p_change / logit_total, _sigmoid(-base_logit)
            )
        contrib = buy[:, :-1] * ratio[:, None] + spend[:, :-1]
        return contrib, _log_sigmoid(base_logit) + spend[:, -1]
    raise ValueError(f"unknown objective {objective!r}")


def currency_contributions(objective: str, contrib: np.ndarray, base: np.ndarray):
    """Split prediction - baseline (currency) across features in proportion to their log-scale SHAP.

    Returns (n x features contributions, baseline per row); they sum to the prediction exactly.
    Every objective maps its log-scale total t to currency as exp(t) (tweedie, two-part) or
    expm1(t) (log-target), so the difference exp(b + d) - exp(b) = exp(b) * expm1(d) is shared
    as exp(b) * expm1(d) / d per unit of log contribution (exp(b) when d = 0).
    """
    d = contrib.sum(axis=1)
    baseline = np.expm1(base) if objective == "log_target" else np.exp(base)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(np.abs(d) > 1e-12, np.exp(base) * np.expm1(d) / d, np.exp(base))
    return contrib * ratio[:, None], baseline


# ---------------------------------------------------------------------------------------------
# The MLflow pyfunc


class CustomerValueModel(mlflow.pyfunc.PythonModel):
    """Predicted customer value (currency) from the feature frame, with per-feature reasons.

    Holds the boosters (as LightGBM model strings), the encoder (feature order, category levels), the
    objective and the feature manifest JSON (for skew checks). Input: the features with categorical
    columns as plain strings (``FeatureEncoder.model_input``); pandas categories are accepted too.
    """

    def __init__(
        self,
        objective: str,
        encoder: FeatureEncoder,
        booster_strings: dict[str, str],
        rounds: dict[str, int],
        manifest_json: str | None = None,
        families: dict[str, str] | None = None,
    ):
        self.objective = objective
        self.features = list(encoder.features)
        self.levels = {name: list(values) for name, values in encoder.levels.items()}
        self.booster_strings = dict(booster_strings)
        self.rounds = dict(rounds)
        self.manifest_json = manifest_json
        self.families = dict(families or {})
        self._boosters = None

    @classmethod
    def from_fitted(
        cls,
        model: ValueModel,
        encoder: FeatureEncoder,
        *,
        manifest_json: str | None = None,
        families: dict[str, str] | None = None,
    ) -> CustomerValueModel:
        return cls(
            model.objective, encoder, model.booster_strings(), model.rounds, manifest_json, families
        )

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_boosters"] = None  # rebuilt from the model strings on first use
        return state

    @property
    def encoder(self) -> FeatureEncoder:
        return FeatureEncoder(tuple(self.features), {k: tuple(v) for k, v in self.levels.items()})

    @property
    def boosters(self) -> dict:
        if self._boosters is None:
            self._boosters = {
                part: lgb.Booster(model_str=text) for part, text in self.booster_strings.items()
            }
        return self._boosters

    def load_context(self, context):
        self.boosters  # noqa: B018 - parse the model strings once, at load time

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        """Predicted value in currency, one per input row (index kept)."""
        X = self.encoder.encode(model_input)
        values = predict_value(self.objective, self.boosters, self.rounds, X)
        return pd.Series(values, index=model_input.index, name="predicted_value")

    def predict_value(self, frame: pd.DataFrame) -> pd.Series:
        """Same as predict, without the pyfunc plumbing."""
        return self.predict(None, frame)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Signed contribution of every feature in currency, plus ``baseline``; each row sums to the prediction.

        For log-link models the difference between the prediction and the baseline (the model's value
        at the average log-score) is split across features in proportion to their exact TreeSHAP
        values on the log scale (see currency_contributions).
        """
        X = self.encoder.encode(frame)
        contrib, base = log_contributions(self.objective, self.boosters, self.rounds, X)
        money, baseline = currency_contributions(self.objective, contrib, base)
        out = pd.DataFrame(money, index=frame.index, columns=self.features)
        out["baseline"] = baseline
        return out

    def log_contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Exact TreeSHAP values on the model's log scale (columns = features, plus ``baseline``)."""
        X = self.encoder.encode(frame)
        contrib, base = log_contributions(self.objective, self.boosters, self.rounds, X)
        out = pd.DataFrame(contrib, index=frame.index, columns=self.features)
        out["baseline"] = base
        return out

    def manifest(self) -> dict | None:
        return None if self.manifest_json is None else json.loads(self.manifest_json)

    def value_interval(self, values) -> tuple[np.ndarray, np.ndarray]:
        """(p10, p90) per predicted value: the 80% interval of realised value from the model's
        ``interval_table`` (training.intervals); all NaN for a model stored without one."""
        values = np.asarray(values, dtype=np.float64)
        table = getattr(self, "interval_table", None)  # models stored before intervals lack it
        if table is None:
            return np.full(values.shape, np.nan), np.full(values.shape, np.nan)
        return apply_intervals(table, values)

    @property
    def kind(self) -> str:
        """What predicts: ``lightgbm`` (boosters) or ``fallback:<baseline>`` (BaselineValueModel)."""
        return "lightgbm"


# The baselines a fallback model can serve, and the feature that holds each one's prediction.
BASELINE_FEATURES = {"bgnbd": "btyd_expected_value", "last_h": "spend_horizon"}


def calibration_scale(frame: pd.DataFrame, baseline: str) -> float:
    """Realised value / the baseline's prediction, summed over a window's customers (``label`` and
    the baseline's feature); 1 when either total is not positive."""
    predicted = np.nansum(frame[BASELINE_FEATURES[baseline]].to_numpy(dtype="float64"))
    realised = np.nansum(frame["label"].to_numpy(dtype="float64"))
    return float(realised / predicted) if predicted > 0 and realised > 0 else 1.0


class BaselineValueModel(CustomerValueModel):
    """A baseline served as the model: the prediction is one feature's value, labelled as a fallback.

    A training run registers one when its learned model is degenerate or ranks below a baseline
    (training.pipeline), so the registry, the scorer and the report carry the better predictor
    under its own name instead of a worse model. Its reasons put the whole value on that feature.
    ``scale`` levels the baseline to net value (BG/NBD forecasts gross spend): the ratio of realised
    value to the baseline on the latest window whose label the run may see (``calibration_scale``);
    it never changes the ranking. A customer without the feature (NaN) is valued at 0.
    """

    def __init__(self, baseline: str, encoder: FeatureEncoder, manifest_json: str | None = None,
                 families: dict[str, str] | None = None, scale: float = 1.0):
        if baseline not in BASELINE_FEATURES:
            raise ValueError(f"no fallback for baseline {baseline!r}; known: {sorted(BASELINE_FEATURES)}")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"a fallback's scale must be a positive number, not {scale!r}")
        super().__init__(f"baseline:{baseline}", encoder, {}, {}, manifest_json, families)
        self.baseline = baseline
        self.feature = BASELINE_FEATURES[baseline]
        self.scale = float(scale)

    @property
    def kind(self) -> str:
        return f"fallback:{self.baseline}"

    def load_context(self, context):
        pass

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        values = self.encoder.encode(model_input)[self.feature].to_numpy(dtype="float64")
        values = np.nan_to_num(values, nan=0.0) * getattr(self, "scale", 1.0)
        return pd.Series(values, index=model_input.index, name="predicted_value")

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(0.0, index=frame.index, columns=self.features)
        out[self.feature] = self.predict(None, frame).to_numpy()
        out["baseline"] = 0.0
        return out

    def log_contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(0.0, index=frame.index, columns=self.features)
        out[self.feature] = np.log1p(np.clip(self.predict(None, frame).to_numpy(), 0, None))
        out["baseline"] = 0.0
        return out
