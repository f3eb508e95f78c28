"""The model registry: the champion and challenger aliases, and whether a new version is promoted.

A new version always becomes ``challenger``. With ``--promote auto`` it also becomes ``champion``
when it ranks at least as well as the current champion re-scored on the new run's own test window.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import UserError
from features.manifest import FeatureManifest, FeatureSkewError, check_compatible
from training.metrics import norm_gini

CHAMPION = "champion"
CHALLENGER = "challenger"
PROMOTE_MODES = ("auto", "always", "never")
_MODEL_URI = re.compile(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))")


@dataclass(frozen=True)
class ChampionScore:
    """The current champion, re-scored on the candidate's test window when its features are compatible."""

    version: str
    norm_gini: float | None  # None when it could not be re-scored
    note: str  # why it could not be scored, or a caveat about the comparison


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    decision: str  # "promoted" or "kept_champion"
    reason: str
    champion_version: str | None = None
    champion_norm_gini: float | None = None


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, alias, version) of a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI, else None."""
    match = _MODEL_URI.fullmatch(uri)
    return None if match is None else match.groups()


def check_promote_mode(mode: str) -> str:
    if mode not in PROMOTE_MODES:
        raise UserError(f"promote must be one of {PROMOTE_MODES}, got {mode!r}")
    return mode


def decide_promotion(mode: str, candidate_norm_gini: float, champion: ChampionScore | None) -> PromotionDecision:
    """Whether the new version becomes champion.

    auto: yes when there is no champion, when the champion cannot be compared on the same test
    window (incompatible features), or when the candidate's test_norm_gini is at least the
    champion's on that window; otherwise the champion stays. always / never: as named.
    """
    check_promote_mode(mode)
    version = champion.version if champion else None
    score = champion.norm_gini if champion else None
    if mode == "always":
        return PromotionDecision(True, "promoted", "promote=always", version, score)
    if mode == "never":
        return PromotionDecision(False, "kept_champion" if champion else "not_promoted", "promote=never",
                                 version, score)
    if champion is None:
        return PromotionDecision(True, "promoted", "no champion yet: the first model becomes champion")
    if score is None or not math.isfinite(score):
        return PromotionDecision(
            True, "promoted",
            f"champion v{version} cannot be compared on this test window ({champion.note}): promoted",
            version, score)
    note = f" ({champion.note})" if champion.note else ""
    if candidate_norm_gini >= score:
        return PromotionDecision(
            True, "promoted",
            f"test_norm_gini {candidate_norm_gini:.4f} >= champion v{version}'s {score:.4f} on the same "
            f"test window{note}", version, score)
    return PromotionDecision(
        False, "kept_champion",
        f"test_norm_gini {candidate_norm_gini:.4f} < champion v{version}'s {score:.4f} on the same "
        f"test window{note}", version, score)


def current_champion(client, model_name: str):
    """The model version holding alias ``champion``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        return None
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def score_champion(client, model_name: str, test_features: pd.DataFrame, test_label: pd.Series,
                   manifest: FeatureManifest, test_cutoff: pd.Timestamp, *,
                   exclude_version: str) -> ChampionScore | None:
    """The champion's out-of-time model re-scored on this run's test window (or why it could not be)."""
    import mlflow

    current = current_champion(client, model_name)
    if current is None or str(current.version) == exclude_version:
        return None
    version = str(current.version)
    run = client.get_run(current.run_id) if current.run_id else None
    uri = run.data.tags.get("evaluation_model_uri") if run else None
    notes = []
    labels_end = run.data.tags.get("test_cutoff") if run else None
    if uri is None:
        # Only the refit model exists: its labels reach the champion's as_of.
        uri = f"models:/{model_name}/{version}"
        labels_end = run.data.tags.get("as_of") if run else None
        notes.append("champion has no out-of-time model; its refit model is compared")
    if labels_end and pd.Timestamp(labels_end) > test_cutoff:
        notes.append(f"the champion's training labels reach {labels_end}, past this test cutoff "
                     f"{test_cutoff.date()}: the comparison favours the champion")
    note = "; ".join(notes)
    try:
        loaded = mlflow.pyfunc.load_model(uri).unwrap_python_model()
        stored = loaded.manifest_json
        if stored is None:
            return ChampionScore(version, None, "champion has no feature manifest")
        check_compatible(FeatureManifest.from_json(stored), manifest)
    except FeatureSkewError as exc:
        return ChampionScore(version, None, f"incompatible features: {exc}"[:400])
    except Exception as exc:  # noqa: BLE001 - an unloadable champion must not block a new model
        return ChampionScore(version, None, f"could not load: {type(exc).__name__}: {exc}"[:400])
    predicted = loaded.predict_value(test_features)
    return ChampionScore(version, norm_gini(test_label.to_numpy(), predicted.to_numpy()), note)


def promote_version(client, model_name: str, version: str, decision: PromotionDecision) -> list[str]:
    """Move ``challenger`` (always) and ``champion`` (when promoted) to ``version``; returns its aliases."""
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    return [CHALLENGER] + ([CHAMPION] if decision.promote else [])


def finite(value) -> bool:
    return value is not None and bool(np.isfinite(value))
