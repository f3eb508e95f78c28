"""Training configuration: one frozen object holding everything a run depends on, logged whole.

``TrainConfig.from_file`` reads a TOML file that sets any field (``[features]`` and ``[model]``
tables for the nested ones); ``replace_fields`` applies command-line overrides on top. Unknown
keys and values of the wrong type or range are a UserError naming the key, so a typo never
silently trains with a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from features.config import FeatureConfig
from features.errors import UserError

Objective = Literal["tweedie", "two_part", "log_target"]
OBJECTIVES: tuple[str, ...] = ("tweedie", "two_part", "log_target")
LABELS = {"net": "revenue", "revenue": "revenue", "margin": "margin"}  # --label words -> FeatureConfig.label
PROMOTE_MODES = ("auto", "always", "never")  # clv train --promote (training.registry)


@dataclass(frozen=True)
class ModelParams:
    """LightGBM settings. Modest by default: exact TreeSHAP cost grows with depth and tree count.

    objective: how the zero-inflated, heavy-tailed value is modelled (see docs/evaluation.md):
        ``tweedie`` (one booster, log link), ``two_part`` (P(buy) x E[value | buy]) or
        ``log_target`` (regression on log1p(value), predictions expm1'd: biased low, see docs).
    max_rounds: upper bound on boosting rounds; early stopping on the validation window picks the number.
    min_child_samples: the least customers a leaf holds; lowered for a small base (``for_rows``).
    """

    # Chosen from the comparison in docs/evaluation.md: ranks like two-part with one booster.
    objective: Objective = "tweedie"
    tweedie_variance_power: float = 1.5
    num_leaves: int = 31
    max_depth: int = 7
    # 0.1 ranks as 0.05 did on every world measured (docs/evaluation.md) in half the rounds.
    learning_rate: float = 0.1
    max_rounds: int = 1000
    early_stopping_rounds: int = 30
    min_child_samples: int = 50
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    # Fixed thread count and deterministic=True make the same data + seed give identical boosters.
    num_threads: int = 2

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise UserError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        for name in ("num_leaves", "max_rounds", "early_stopping_rounds", "min_child_samples", "num_threads"):
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} must be at least 1, not {getattr(self, name)}")
        for name in ("learning_rate", "feature_fraction", "bagging_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise UserError(f"model.{name} must be in (0, 1], not {getattr(self, name)}")
        if not 1 < self.tweedie_variance_power < 2:
            raise UserError(f"model.tweedie_variance_power must be in (1, 2), not {self.tweedie_variance_power}")

    def for_rows(self, rows: int) -> ModelParams:
        """These settings for a training set of ``rows`` rows: a leaf needs at most 1% of them, so a
        few hundred customers still get trees with splits instead of a constant."""
        return dataclasses.replace(self, min_child_samples=min(self.min_child_samples, max(5, rows // 100)))


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on besides the data.

    n_windows / step_days: training windows at cutoffs test_cutoff - H - k*step_days (k < n_windows);
        None (the default) sizes them from the history the data has (training.plan). The most
        recent ``validation_windows`` of them are held out for early stopping.
    bootstrap_resamples / interval: paired bootstrap of the social lift.
    shap_sample: at most this many test customers get exact TreeSHAP values (seeded sample).
    social_ablation: weigh the social families (training.ablation): fit with and without them
        ``social_refits`` times on ``social_folds`` rolling validation folds, and keep them only
        when they improve ranking there beyond customer sampling and refitting noise; off keeps
        them untested.
    min_train_buyers / min_test_buyers: customers with a positive label needed in the training
        windows and in the test window; fewer stops the run (too little data to learn or to judge).
    currency: the currency the source's amounts are in (``EUR``, ``$``); it labels money in the
        summary, the scores' manifest, the contact list and the report (None: plain amounts).
    log_customer_ids: write real customer ids into the run's report inputs (predictions and SHAP
        sample); off (the default) writes pseudonyms (``customer-<n>``) instead (docs/privacy.md).
    """

    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelParams = field(default_factory=ModelParams)
    n_windows: int | None = None
    step_days: int | None = None
    validation_windows: int = 1
    seed: int = 0
    bootstrap_resamples: int = 200
    interval: float = 0.90
    shap_sample: int = 10_000
    social_ablation: bool = True
    social_refits: int = 3
    social_folds: int = 2
    min_train_buyers: int = 50
    min_test_buyers: int = 10
    log_customer_ids: bool = False
    currency: str | None = None

    def __post_init__(self):
        if self.currency is not None:
            object.__setattr__(self, "currency", currency_label(self.currency))
        if self.validation_windows < 1:
            raise UserError(f"validation_windows must be at least 1, not {self.validation_windows}")
        if self.n_windows is not None and self.n_windows <= self.validation_windows:
            raise UserError(
                f"n_windows ({self.n_windows}) must exceed validation_windows "
                f"({self.validation_windows}): at least one window must remain for training"
            )
        if self.step_days is not None and self.step_days <= 0:
            raise UserError(f"step_days must be positive, not {self.step_days}")
        if self.social_refits < 1 or self.social_folds < 1:
            raise UserError(f"social_refits and social_folds must be at least 1, not {self.social_refits} "
                            f"and {self.social_folds}")
        if not 0 < self.interval < 1:
            raise UserError(f"interval must be in (0, 1), not {self.interval}")
        if self.features.label not in ("revenue", "margin"):
            raise UserError(f"features.label must be net (revenue) or margin, not {self.features.label!r}")
        if self.features.horizon_days < 1:
            raise UserError(f"features.horizon_days must be positive, not {self.features.horizon_days}")

    @property
    def horizon_days(self) -> int:
        return self.features.horizon_days

    def flat(self) -> dict[str, object]:
        """Dotted-key view of the whole config (``model.num_leaves``, ``features.market_topics``), for MLflow params."""
        out: dict[str, object] = {}
        for key, value in asdict(self).items():
            if key == "features":
                value = self.features.to_dict()
            if isinstance(value, dict):
                for sub, v in value.items():
                    out[f"{key}.{sub}"] = _plain(v)
            else:
                out[key] = "auto" if value is None and key in ("n_windows", "step_days") else _plain(value)
        return out

    @classmethod
    def from_file(cls, path) -> TrainConfig:
        """A TrainConfig from a TOML file setting any of its fields; unset fields keep their defaults."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise UserError(f"--config {path}: cannot read it ({err.strerror or err})") from None
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"--config {path}: not valid TOML ({err})") from None
        return replace_fields(cls(), data, where=f"--config {path}")


def currency_label(currency: str) -> str:
    """A currency label: an ISO 4217 code such as EUR (upper-cased) or a short symbol such as $."""
    text = str(currency).strip()
    if not text or len(text) > 5 or any(c.isspace() or c in ",;" for c in text):
        raise UserError(f"currency takes a code such as EUR or a symbol such as $, not {currency!r}")
    return text.upper() if text.isalpha() else text


def replace_fields(config: TrainConfig, values: dict, *, where: str = "configuration") -> TrainConfig:
    """``config`` with ``values`` applied: top-level fields, and ``features`` / ``model`` tables."""
    nested = {"features": FeatureConfig, "model": ModelParams}
    changes = {}
    for key, value in values.items():
        if key in nested:
            if not isinstance(value, dict):
                raise UserError(f"{where}: [{key}] must be a table of settings, not {value!r}")
            changes[key] = _checked(nested[key], getattr(config, key), value, f"{where}: [{key}]")
        else:
            changes.update(_fields_of(TrainConfig, {key: value}, where, skip=set(nested)))
    try:
        return dataclasses.replace(config, **changes)
    except (TypeError, ValueError) as err:  # a field's own check (UserError is a ValueError)
        raise UserError(f"{where}: {err}") from None


def _checked(cls, current, values: dict, where: str):
    try:
        return dataclasses.replace(current, **_fields_of(cls, values, where))
    except UserError:
        raise
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: {err}") from None


def _fields_of(cls, values: dict, where: str, skip: set = frozenset()) -> dict:
    """``values`` checked against the dataclass ``cls``: known names, values of the declared type."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in skip and f.name != "extra"}
    out = {}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        if key == "label" and cls is FeatureConfig:
            if value not in LABELS:
                raise UserError(f"{where}: label must be net or margin, not {value!r}")
            value = LABELS[value]
        out[key] = _typed(value, hints[key], f"{where} {key}")
    return out


def _typed(value, hint, what: str):
    """``value`` as the annotated type (ints accepted for floats, lists for tuples), or a UserError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _typed(value, next(a for a in args if a is not type(None)), what)
    if origin is Literal:
        if value not in args:
            raise UserError(f"{what} must be one of {', '.join(map(str, args))}, not {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{what} must be a list, not {value!r}")
        return tuple(_typed(v, args[0], what) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{what} must be true or false, not {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{what} must be a number, not {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{what} must be a whole number, not {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{what} must be text, not {value!r}")
        return value
    raise UserError(f"{what} cannot be set from a file")


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    return value
