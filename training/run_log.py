"""Logging an Evaluation to the active MLflow run: tags, datasets, metrics, artifacts, both models.

Whichever engine trained, the run gets the same tags, metrics, artifacts, report inputs, the
ablation child run, the evaluation model and the registered refit model.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from features.catalog import SOCIAL_FAMILIES
from training import tracking
from training.baselines import BASELINES
from training.charts import decile_chart, importance_chart
from training.config import TrainConfig
from training.model_files import log_value_model
from training.pipeline import Evaluation, frame_digest
from training.registry import Candidate, decide_promotion, promote_version, score_champion
from training.report_inputs import log_report_inputs, report_frames
from training.summary import TrainSummary, comparison


def log_evaluation(ev: Evaluation, run_id: str, source: str | None, fingerprint: dict, experiment: str,
                   model_name: str, promote: str, uri: str) -> TrainSummary:
    """Log an Evaluation to the ACTIVE MLflow run and register its refit model.

    Tags, datasets, metrics, the ablation child run, artifacts, report inputs, both models, the
    registered version with alias ``challenger``, and the promotion decision. ``source`` is where
    the data came from, safe to log (None for in-memory tables). ``seconds`` of the returned
    summary is 0: the caller knows when its run started.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    config = ev.config
    verdict = ev.verdict
    mlflow.set_tags({
        "feature_manifest_hash": ev.refit_manifest.manifest_hash,
        "evaluation_manifest_hash": ev.manifest.manifest_hash,
        "baseline_bgnbd_status": ev.bgnbd_status,
        "windows": json.dumps(ev.plan.describe()),
        "window_plan": ev.plan.reason,
        "model_kind": ev.model.kind,
        "model_verdict": verdict.reason if verdict else "",
        "effective_min_child_samples": str((ev.fit_config or config).model.min_child_samples),
        "social_included": str(ev.social_included).lower(),
        "social_decision": ev.social_decision,
    })
    _log_inputs(ev, source)
    metrics = dict(ev.metrics)
    metrics.update({f"baseline_bgnbd_param_{k}": v for k, v in ev.bgnbd_params.items()})
    if ev.ablation is not None:
        metrics.update({f"ablation_{k}": v for k, v in ev.ablation.metrics.items()})
        _log_ablation_child(ev, config)
    log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        _write_artifacts(Path(tmp), ev, fingerprint, metrics)
        mlflow.log_artifacts(tmp)
    # Customer-level test-window predictions and currency SHAP for the stakeholder report.
    log_report_inputs(*report_frames(ev, log_contributions=ev.shap_contributions))
    signature, example = _signature(ev)
    # The boosters, encoder and manifest as data files, the wrapper as code: no pickle (model_files).
    eval_info = log_value_model("evaluation_model", ev.model, signature=signature, input_example=example,
                                pip_requirements=tracking.pip_requirements())
    final_signature, final_example = _signature(ev, final=True)
    info = log_value_model("model", ev.final_model, signature=final_signature, input_example=final_example,
                           pip_requirements=tracking.pip_requirements(), registered_model_name=model_name)
    mlflow.set_tag("evaluation_model_uri", eval_info.model_uri)
    version = str(info.registered_model_version)

    champion = score_champion(client, model_name, ev.test_features, ev.test_label, ev.predictions["model"],
                              ev.manifest, ev.plan.test_cutoff, ev.plan.horizon_days, exclude_version=version,
                              input_fingerprint=_input_hash(fingerprint))
    candidate = Candidate(ev.metrics["test_norm_gini"],
                          {name: ev.metrics.get(f"baseline_{name}_test_norm_gini") for name in BASELINES},
                          ev.model.kind)
    decision = decide_promotion(promote, candidate, champion)
    aliases = promote_version(client, model_name, version, decision)
    for key, value in (("test_norm_gini", f"{ev.metrics['test_norm_gini']:.6f}"),
                       ("as_of", str(ev.plan.as_of.date())), ("objective", config.model.objective),
                       ("model_kind", ev.model.kind)):
        client.set_model_version_tag(model_name, version, key, value)
    mlflow.set_tags({
        "model_name": model_name,
        "model_version": version,
        "promotion_mode": promote,
        "promotion_decision": decision.decision,
        "promotion_reason": decision.reason,
        "champion_before": decision.champion_version or "none",
    })
    if decision.champion_norm_gini is not None and np.isfinite(decision.champion_norm_gini):
        metrics["champion_test_norm_gini"] = decision.champion_norm_gini
        log_metrics({"champion_test_norm_gini": decision.champion_norm_gini})

    return TrainSummary(run_id=run_id, experiment=experiment, tracking_uri=uri, model_name=model_name,
                        model_version=version, aliases=aliases, promotion=decision.decision,
                        promotion_reason=decision.reason, windows=ev.plan.describe(), rows=ev.rows,
                        metrics=metrics, bgnbd_status=ev.bgnbd_status, ui_command=tracking.ui_command(uri),
                        seconds=0.0, model_kind=ev.model.kind, verdict=verdict.reason if verdict else "",
                        window_plan=ev.plan.reason, social_decision=ev.social_decision)


def _input_hash(fingerprint: dict) -> str | None:
    """The run's input hash, or None when the input is not known by content (tables in memory)."""
    return None if fingerprint.get("source") == "in-memory tables" else tracking.fingerprint_hash(fingerprint)


def log_metrics(values: dict) -> None:
    """Log the finite values; a NaN metric (e.g. Spearman of a constant prediction) is left out."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)})


def _signature(ev: Evaluation, *, final: bool = False):
    from mlflow.models import infer_signature

    model = ev.final_model if final else ev.model
    example = model.encoder.model_input(ev.test_features.head(200))
    prediction = model.predict_value(example)
    # The logged example carries feature values only: no customer ids (the index) unless opted in.
    shown = example.head(5) if ev.config.log_customer_ids else example.head(5).reset_index(drop=True)
    return infer_signature(example, prediction), shown


def _log_inputs(ev: Evaluation, source: str | None) -> None:
    """Training windows (a seeded sample, digest of the whole) and the test window as MLflow datasets."""
    import mlflow

    encoder = ev.model.encoder
    test = encoder.model_input(ev.test_features).assign(label=ev.test_label)
    datasets = []
    if ev.train_sample is not None:
        sample = encoder.model_input(ev.train_sample).assign(cutoff=ev.train_sample["cutoff"],
                                                             label=ev.train_sample["label"])
        datasets.append((sample, "training_windows", ev.train_digest, "training"))
    datasets.append((test, f"test_window_{ev.plan.test_cutoff.date()}", frame_digest(test), "testing"))
    ids = ev.config.log_customer_ids  # otherwise customer_id is not even a column of the dataset
    for frame, name, digest, context in datasets:
        frame = frame.reset_index(drop=not ids)
        kwargs = {"name": name, "targets": "label", "digest": digest}
        try:
            dataset = mlflow.data.from_pandas(frame, source=source, **kwargs)
        except Exception:  # noqa: BLE001 - a source MLflow cannot describe is recorded without it
            dataset = mlflow.data.from_pandas(frame, **kwargs)
        mlflow.log_input(dataset, context=context)


def _log_ablation_child(ev: Evaluation, config: TrainConfig) -> None:
    import mlflow

    ab = ev.ablation
    parent = mlflow.active_run().info.experiment_id
    with mlflow.start_run(run_name="without social families", nested=True, experiment_id=parent):
        mlflow.log_params(config.flat())
        mlflow.set_tags({"ablation": "without " + ", ".join(SOCIAL_FAMILIES),
                         "feature_manifest_hash": ab.manifest.manifest_hash,
                         "test_cutoff": str(ev.plan.test_cutoff.date())})
        values = dict(ab.metrics)
        values.update({f"rounds_{k}": float(v) for k, v in ab.rounds.items()})
        mlflow.log_metrics({k: float(v) for k, v in values.items() if np.isfinite(v)})


def _write_artifacts(folder: Path, ev: Evaluation, fingerprint: dict, metrics: dict) -> None:
    (folder / "feature_manifest.json").write_text(ev.refit_manifest.to_json())
    (folder / "evaluation_feature_manifest.json").write_text(ev.manifest.to_json())
    (folder / "input_fingerprint.json").write_text(json.dumps(fingerprint, indent=2, sort_keys=True, default=str))
    ev.importance.to_csv(folder / "feature_importance.csv", index=False)
    ev.decile_table.to_csv(folder / "deciles.csv", index=False)
    decile_chart(ev.decile_table, folder / "deciles.png",
                 title=f"Test window {ev.plan.test_cutoff.date()} + {ev.plan.horizon_days} days: "
                 "predicted vs realised")
    importance_chart(ev.importance, folder / "feature_importance.png")
    lifts = {k: v for k, v in metrics.items() if k.startswith("social_lift")}
    shares = {k: v for k, v in metrics.items() if k.startswith("shap_share_")}
    summary = {
        "windows": ev.plan.describe(),
        "rows": ev.rows,
        "test_metrics": comparison(metrics),
        "social_lift": lifts,
        "shap_shares": shares,
        "bgnbd_status": ev.bgnbd_status,
        "rounds": ev.rounds,
    }
    (folder / "metrics_vs_baselines.json").write_text(json.dumps(_finite(summary), indent=2))


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
