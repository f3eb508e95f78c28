"""Reading one training run from MLflow into the ``RunRecord`` the report is built from.

A run is reached by model URI (its version's training run) or by run id; the record holds its
metrics, params, tags, feature_importance.csv, deciles.csv, the ablation child's test metrics and
the customer-level report_inputs/.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.ingest.masking import mask_url
from training import tracking
from training.model_source import parse_model_uri
from training.report_inputs import MissingReportInputs, load_report_inputs

DEFAULT_MODEL_URI = "models:/customer-value@champion"


@dataclass
class RunRecord:
    """Everything the report reads from MLflow for one training run."""

    run_id: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    importance: pd.DataFrame
    model_name: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    aliases: tuple[str, ...] = ()
    ablation_run_id: str | None = None
    deciles: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None
    shap_sample: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def horizon_days(self) -> int:
        return int(float(self.tags.get("horizon_days") or self.params.get("features.horizon_days") or 365))

    @property
    def market_topics(self) -> list[str]:
        raw = self.params.get("features.market_topics", "[]")
        try:
            topics = json.loads(raw.replace("'", '"'))
        except (ValueError, AttributeError):
            return []
        return [str(t) for t in topics] if isinstance(topics, list) else []


def resolve_run(client, *, model_uri: str | None, run_id: str | None):
    """(run_id, model_name, model_version, aliases, model_uri) for a model URI or a run id."""
    from mlflow.exceptions import MlflowException

    if model_uri is not None and run_id is not None:
        raise ValueError("pass a model URI or a run id, not both")
    if run_id is None:
        model_uri = model_uri or DEFAULT_MODEL_URI
        parsed = parse_model_uri(model_uri)
        if parsed is None:
            raise ValueError("model URI must look like models:/NAME@ALIAS or models:/NAME/VERSION, "
                             f"got {model_uri!r}")
        name, alias, version = parsed
        try:
            mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        except MlflowException as err:
            raise LookupError(f"no model {model_uri} in the registry: {err}") from None
        if not mv.run_id:
            raise LookupError(f"{model_uri} (version {mv.version}) has no training run to report on")
        return mv.run_id, name, str(mv.version), tuple(getattr(mv, "aliases", ()) or ()), model_uri
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise LookupError(f"no training run {run_id!r} in the tracking store {mask_url(client.tracking_uri)}") from None
    name, version = run.data.tags.get("model_name"), run.data.tags.get("model_version")
    aliases: tuple[str, ...] = ()
    if name and version:
        try:
            aliases = tuple(client.get_model_version(name, version).aliases or ())
        except Exception:  # noqa: BLE001 - a deleted version still leaves a readable run
            aliases = ()
    else:
        found = sorted(client.search_model_versions(f"run_id = '{run_id}'"), key=lambda v: int(v.version))
        if found:
            name, version, aliases = found[-1].name, str(found[-1].version), tuple(found[-1].aliases or ())
    return run_id, name, version, aliases, (f"models:/{name}/{version}" if name and version else None)


def _download(run_id: str, path: str, folder: Path, tracking_uri: str) -> Path | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(folder),
                                                        tracking_uri=tracking_uri))
    except (MlflowException, OSError):
        return None


def load_run(*, model_uri: str | None = None, run_id: str | None = None, tracking_uri: str | None = None) -> RunRecord:
    """Read a training run (and its ablation child and report inputs) from MLflow."""
    import mlflow

    tracking.quiet_mlflow_warnings()
    uri = tracking_uri or tracking.tracking_uri()
    tracking.check_store(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id, name, version, aliases, resolved_uri = resolve_run(client, model_uri=model_uri, run_id=run_id)
    run = client.get_run(run_id)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="clv-report-") as tmp:
        importance_path = _download(run_id, "feature_importance.csv", Path(tmp), uri)
        if importance_path is None:
            raise LookupError(f"run {run_id} has no feature_importance.csv: it is not a `clv train` run")
        importance = pd.read_csv(importance_path)
        deciles_path = _download(run_id, "deciles.csv", Path(tmp), uri)
        deciles = pd.read_csv(deciles_path) if deciles_path is not None else None
    metrics = dict(run.data.metrics)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    ablation_run_id = children[0].info.run_id if children else None
    if ablation_run_id and not any(k.startswith("ablation_test_") for k in metrics):
        metrics.update({f"ablation_{k}": v for k, v in children[0].data.metrics.items() if k.startswith("test_")})
    try:
        predictions, shap_sample = load_report_inputs(run_id, tracking_uri=uri)
    except MissingReportInputs as err:
        predictions = shap_sample = None
        notes.append(str(err))
    return RunRecord(run_id=run_id, metrics=metrics, params=dict(run.data.params), tags=dict(run.data.tags),
                     importance=importance, model_name=name, model_version=version, model_uri=resolved_uri,
                     aliases=aliases, ablation_run_id=ablation_run_id, deciles=deciles, predictions=predictions,
                     shap_sample=shap_sample, notes=notes)

