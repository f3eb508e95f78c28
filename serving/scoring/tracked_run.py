"""A scoring run leaves a trace in MLflow, and a drifted population can stop it before it is published.

Each ``clv score`` logs one run in the experiment ``<model name>-scoring`` (beside the training
runs, not among them): which model version scored, as of when, a hash of the inputs, row counts,
customers and value per tier, and the drift checks (training.drift: the PSI of every model feature
and of the predictions against the training test window), with ``drift.json`` as an artifact.
Nothing personal is logged: no customer id, no file path, no database URL (the inputs only as
their fingerprint's hash).

With ``fail_on_drift`` a run whose drift check crossed the threshold publishes nothing (the
previous scores stay as they were) and ends with a DriftError; the scoring run is logged first, so
the figures are there to look at.
"""

from __future__ import annotations

import json

from features.ingest.masking import mask_url
from training import tracking
from training.drift import PREDICTIONS, drift_sentence

SCORING_EXPERIMENT_SUFFIX = "-scoring"


class DriftError(Exception):
    """Today's customers drifted from those the model was tested on, and the run was told to stop."""


def experiment_name(model) -> str:
    """``<registered model name>-scoring``; ``clv-scoring`` for a model loaded from a folder."""
    return f"{model.name}{SCORING_EXPERIMENT_SUFFIX}" if model.version is not None else "clv-scoring"


def run_metrics(manifest: dict) -> dict[str, float]:
    """Counts, tier economics and the drift figures of a scoring manifest, as MLflow metrics."""
    metrics = {"customers_in": manifest["customers_in"], "scored": manifest["scored"],
               "rejected_customers": manifest["rejected_customers"],
               "not_yet_customers": manifest["not_yet_customers"]}
    for tier in manifest.get("tier_economics", []):
        metrics[f"tier_{tier['tier']}_customers"] = tier["customers"]
        metrics[f"tier_{tier['tier']}_total_value"] = tier["total_value"]
        metrics[f"tier_{tier['tier']}_mean_value"] = tier["mean_value"]
    drift = manifest.get("drift") or {}
    if drift.get("predictions") is not None:
        metrics["psi_predictions"] = drift["predictions"]
    if drift.get("features"):
        metrics["psi_max_feature"] = max(drift["features"].values())
        metrics["drifted_checks"] = len(drift["drifted"])
    if manifest.get("seconds") is not None:
        metrics["seconds"] = manifest["seconds"]
    return {k: float(v) for k, v in metrics.items() if v is not None}


def run_tags(manifest: dict) -> dict[str, str]:
    model = manifest["model"]
    return {
        "model_name": str(model.get("name")), "model_version": str(model.get("version")),
        "model_run_id": str(model.get("run_id")), "model_kind": str(model.get("kind")),
        "as_of": manifest["as_of"][:10], "horizon_days": str(manifest["horizon_days"]),
        "input_fingerprint": tracking.fingerprint_hash(manifest["inputs"]),
        "engine": str(manifest.get("engine")), "currency": manifest.get("currency") or "",
        "drift_status": (manifest.get("drift") or {}).get("status", "not checked"),
    }


def log_scoring_run(manifest: dict, model) -> dict:
    """Log the run (tags, metrics, drift.json) to the tracking store; returns where it went."""
    import mlflow

    uri = tracking.use_store()
    name = experiment_name(model)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(tracking.experiment_id(name, uri), run_name=f"score as_of {manifest['as_of'][:10]}",
                            tags=run_tags(manifest))
    run_id = run.info.run_id
    try:
        for key, value in run_metrics(manifest).items():
            client.log_metric(run_id, key, value)
        drift = manifest.get("drift") or {}
        client.log_text(run_id, json.dumps({"drift": drift, "tier_economics": manifest.get("tier_economics"),
                                            "interval": manifest.get("interval")}, indent=1), "drift.json")
        client.set_terminated(run_id)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    return {"experiment": name, "run_id": run_id}


def track_and_check(manifest: dict, model, *, track: bool, fail_on_drift: bool) -> None:
    """Log the scoring run (its place goes into the manifest), then stop before publishing when the
    drift check failed and the run was told to fail on drift."""
    if track:
        try:
            manifest["tracking"] = log_scoring_run(manifest, model)
        except Exception as err:  # noqa: BLE001 - the night's scores are not lost to a tracking store hiccup
            manifest["tracking"] = {"error": mask_url(f"{type(err).__name__}: {err}")[:300]}
    else:
        manifest["tracking"] = {"skipped": "tracking turned off for this run"}
    drift = manifest.get("drift") or {}
    if fail_on_drift and drift.get("status") == "drift":
        logged = manifest["tracking"].get("run_id")
        raise DriftError(drift_sentence(drift) + "; nothing published (--fail-on-drift)"
                         + (f"; figures in scoring run {logged}" if logged else ""))


def drift_lines(drift: dict, top: int = 5) -> list[str]:
    """The drift check for a printed summary: the verdict, then the largest PSI figures."""
    if not drift:
        return []
    lines = [drift_sentence(drift)]
    every = {**drift.get("features", {}), PREDICTIONS: drift.get("predictions")}
    every = {k: v for k, v in every.items() if v is not None}
    if drift.get("status") in ("drift", "shift"):
        worst = sorted(every, key=lambda n: -every[n])[:top]
        lines.append("largest PSI: " + ", ".join(f"{n} {every[n]:.3f}" for n in worst))
    return lines
