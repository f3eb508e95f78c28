"""Training configuration: one frozen object holding everything a run depends on, logged whole."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from features.config import FeatureConfig

Objective = Literal["tweedie", "two_part", "log_target"]
OBJECTIVES: tuple[str, ...] = ("tweedie", "two_part", "log_target")


@dataclass(frozen=True)
class ModelParams:
    """LightGBM settings. Modest by default: exact TreeSHAP cost grows with depth and tree count.

    objective: how the zero-inflated, heavy-tailed value is modelled (see docs/evaluation.md):
        ``tweedie`` (one booster, log link), ``two_part`` (P(buy) x E[value | buy]) or
        ``log_target`` (regression on log1p(value), predictions expm1'd: biased low, see docs).
    max_rounds: upper bound on boosting rounds; early stopping on the validation window picks the number.
    """

    # Chosen from the comparison in docs/evaluation.md: ranks like two-part with one booster.
    objective: Objective = "tweedie"
    tweedie_variance_power: float = 1.5
    num_leaves: int = 31
    max_depth: int = 7
    learning_rate: float = 0.05
    max_rounds: int = 500
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
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on besides the data.

    n_windows / step_days: training windows at cutoffs eval_cutoff - H - k*step_days (k < n_windows);
        the most recent ``validation_windows`` of them are held out for early stopping.
    bootstrap_resamples / interval: paired bootstrap of the social lift.
    shap_sample: at most this many test customers get exact TreeSHAP values (seeded sample).
    social_ablation: also fit the model without the social families (child run).
    """

    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelParams = field(default_factory=ModelParams)
    n_windows: int = 4
    step_days: int = 91
    validation_windows: int = 1
    seed: int = 0
    bootstrap_resamples: int = 200
    interval: float = 0.90
    shap_sample: int = 10_000
    social_ablation: bool = True

    def __post_init__(self):
        if self.n_windows <= self.validation_windows:
            raise ValueError(
                f"n_windows ({self.n_windows}) must exceed validation_windows "
                f"({self.validation_windows}): at least one window must remain for training"
            )
        if self.step_days <= 0:
            raise ValueError(f"step_days must be positive, got {self.step_days}")

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
                out[key] = _plain(value)
        return out


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    return value
