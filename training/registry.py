"""The model registry: the champion and challenger aliases, and whether a new version is promoted.

A new version always becomes ``challenger``. With ``--promote auto`` it also becomes ``champion``
only when it ranks better than every baseline and at least as well as the current champion, all on
the new run's own test window (``decide_promotion``).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.errors import UserError
from features.manifest import FeatureManifest, FeatureSkewError, check_compatible
from training.config import PROMOTE_MODES
from training.metrics import norm_gini
from training.model_environment import load_pyfunc
from training.model_source import (
    UntrustedModelError,
    check_registered_files,
    is_registry_uri,
)
from training.report_inputs import are_pseudonyms, load_report_inputs, pseudonyms

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class ChampionScore:
    """The current champion, scored on the candidate's test window (or why it could not be).

    ``candidate_norm_gini`` is set when the comparison ran on part of the test window only (the
    champion's logged predictions cover other customers): the candidate's score on the same part.
    """

    version: str
    norm_gini: float | None  # None when it could not be scored
    note: str  # how it was scored, why it could not be, or a caveat about the comparison
    candidate_norm_gini: float | None = None


@dataclass(frozen=True)
class Candidate:
    """The new version, as the promotion gate sees it: its test score, the baselines', what it is."""

    norm_gini: float
    baselines: dict[str, float] = field(default_factory=dict)  # baseline name -> test normalised Gini
    kind: str = "lightgbm"  # or "fallback:<baseline>": a baseline served in place of a model


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    decision: str  # "promoted", "kept_champion" or "not_promoted"
    reason: str
    champion_version: str | None = None
    champion_norm_gini: float | None = None


def check_promote_mode(mode: str) -> str:
    if mode not in PROMOTE_MODES:
        raise UserError(f"promote must be one of {', '.join(PROMOTE_MODES)}, not {mode!r}")
    return mode


def decide_promotion(mode: str, candidate: Candidate, champion: ChampionScore | None) -> PromotionDecision:
    """Whether the new version becomes champion.

    auto, all on the run's own test window:
    (a) a learned model must rank better than every baseline (normalised Gini strictly above each);
        a fallback is the best baseline itself, so (a) does not apply to it;
    (b) it must rank at least as well as the current champion, scored on the same customers; a
        champion that cannot be scored there is kept (a blind swap could promote a worse model).
    always / never: as named.
    """
    check_promote_mode(mode)
    version = champion.version if champion else None
    score = champion.norm_gini if champion else None
    if mode == "always":
        return PromotionDecision(True, "promoted", "promote=always", version, score)
    if mode == "never":
        return PromotionDecision(False, "kept_champion" if champion else "not_promoted", "promote=never",
                                 version, score)
    kept = "kept_champion" if champion else "not_promoted"
    if candidate.kind == "lightgbm":
        beaten = {name: b for name, b in candidate.baselines.items()
                  if b is not None and math.isfinite(b) and not candidate.norm_gini > b}
        if beaten:
            name, b = max(beaten.items(), key=lambda item: item[1])
            return PromotionDecision(
                False, kept, f"test_norm_gini {candidate.norm_gini:.4f} does not beat the {name} baseline's "
                f"{b:.4f} on the same test window", version, score)
    what = "the model" if candidate.kind == "lightgbm" else f"the {candidate.kind} model"
    if champion is None:
        return PromotionDecision(True, "promoted", f"no champion yet: {what} becomes champion "
                                 + ("(it beats every baseline)" if candidate.kind == "lightgbm"
                                    else "(the best predictor the data supports)"))
    if score is None or not math.isfinite(score):
        return PromotionDecision(
            False, "kept_champion",
            f"champion v{version} cannot be scored on this test window ({champion.note}): kept; "
            "--promote always replaces it", version, score)
    mine = candidate.norm_gini if champion.candidate_norm_gini is None else champion.candidate_norm_gini
    note = f" ({champion.note})" if champion.note else ""
    if mine >= score:
        return PromotionDecision(True, "promoted", f"test_norm_gini {mine:.4f} >= champion v{version}'s "
                                 f"{score:.4f} on the same test window{note}", version, score)
    return PromotionDecision(False, "kept_champion", f"test_norm_gini {mine:.4f} < champion v{version}'s "
                             f"{score:.4f} on the same test window{note}", version, score)


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
                   predicted: pd.Series, manifest: FeatureManifest, test_cutoff: pd.Timestamp,
                   horizon_days: int, *, exclude_version: str,
                   input_fingerprint: str | None = None) -> ChampionScore | None:
    """The champion scored on this run's test window.

    Its out-of-time model predicts the test window's features when they are the features it was
    built on. When they are not (the feature code or config changed) or it cannot be loaded, its
    own logged evaluation is used if it was tested on the same window: its predictions for the
    customers of both runs, against this run's ``predicted`` on the same customers. The champion
    is loaded only by a models:/ or runs:/ URI of the store training uses (use_store), so its
    pickle is the registry's, never one a tag points elsewhere to.
    ``input_fingerprint``: this run's input hash; a champion that logged pseudonyms instead of
    customer ids (training.report_inputs) is compared only when it read the same input.
    """
    import mlflow
    import mlflow.artifacts

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
    if not is_registry_uri(uri):
        # A tag is only text: the comparison loads models from the configured store alone
        # (training.model_source), never from a path or URL a run's tag names.
        return _logged_comparison(client, run, version, test_label, predicted, test_cutoff, horizon_days,
                                  f"not loaded: its evaluation model {uri!r} is not in the MLflow store"[:300])
    try:
        check_registered_files(client, uri)
    except UntrustedModelError as exc:
        return _logged_comparison(client, run, version, test_label, predicted, test_cutoff, horizon_days,
                                  f"not loaded: {exc}"[:300])
    try:
        # Into a folder removed once loaded: without dst_path MLflow leaves its download in a new
        # temporary folder (remote artifact stores, runs:/ URIs).
        with tempfile.TemporaryDirectory(prefix="clv-champion-") as files:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=files)
            loaded = load_pyfunc(local, name=uri).unwrap_python_model()
        stored = loaded.manifest_json
        if stored is None:
            raise FeatureSkewError("champion has no feature manifest")
        check_compatible(FeatureManifest.from_json(stored), manifest)
    except FeatureSkewError as exc:
        return _logged_comparison(client, run, version, test_label, predicted, test_cutoff, horizon_days,
                                  f"incompatible features: {exc}"[:300], input_fingerprint)
    except Exception as exc:  # noqa: BLE001 - an unloadable champion is compared by its logged evaluation
        return _logged_comparison(client, run, version, test_label, predicted, test_cutoff, horizon_days,
                                  f"could not load: {type(exc).__name__}: {exc}"[:300], input_fingerprint)
    scored = loaded.predict_value(test_features)
    return ChampionScore(version, norm_gini(test_label.to_numpy(), scored.to_numpy()), "; ".join(notes))


def _logged_comparison(client, run, version: str, test_label: pd.Series, predicted: pd.Series,
                       test_cutoff: pd.Timestamp, horizon_days: int, why: str,
                       input_fingerprint: str | None = None) -> ChampionScore:
    """The champion's logged test-window predictions against the candidate's on the same customers."""
    tags = run.data.tags if run else {}
    if tags.get("test_cutoff") != str(test_cutoff.date()) or tags.get("horizon_days") != str(horizon_days):
        return ChampionScore(version, None, f"{why}; its logged evaluation is of another test window "
                             f"({tags.get('test_cutoff')}, {tags.get('horizon_days')} days)")
    try:
        logged, _ = load_report_inputs(run.info.run_id)
    except Exception as exc:  # noqa: BLE001 - no logged evaluation: nothing to compare with
        return ChampionScore(version, None, f"{why}; no logged evaluation ({type(exc).__name__})")
    theirs = logged.set_index("customer_id")["predicted"]
    if are_pseudonyms(theirs.index):
        # Pseudonyms are positions in the test window: they name the same customers only on the same input.
        if input_fingerprint is None or tags.get("input_fingerprint") != input_fingerprint:
            return ChampionScore(version, None, f"{why}; its logged evaluation names customers by pseudonym "
                                 "and was made on other input")
        predicted = pd.Series(predicted.reindex(test_label.index).to_numpy(), index=pseudonyms(len(test_label)))
        test_label = pd.Series(test_label.to_numpy(), index=pseudonyms(len(test_label)))
    common = test_label.index.intersection(theirs.index)
    if len(common) < 2:
        return ChampionScore(version, None, f"{why}; its logged evaluation shares no customers with this run")
    actual = test_label.reindex(common).to_numpy()
    return ChampionScore(
        version, norm_gini(actual, theirs.reindex(common).to_numpy()),
        f"{why}; compared by its logged evaluation on the {len(common):,} customers both runs tested",
        candidate_norm_gini=norm_gini(actual, predicted.reindex(common).to_numpy()))


def promote_version(client, model_name: str, version: str, decision: PromotionDecision) -> list[str]:
    """Move ``challenger`` (always) and ``champion`` (when promoted) to ``version``; returns its aliases."""
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    return [CHALLENGER] + ([CHAMPION] if decision.promote else [])


def finite(value) -> bool:
    return value is not None and bool(np.isfinite(value))
