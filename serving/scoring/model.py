"""The model a scoring run uses: loaded from MLflow, and refused unless its features are this code's.

A model is served only with the features it was trained on: same feature code (the manifest's
code hash), same FeatureConfig (taken from the manifest, so training and scoring cannot disagree, attribute
columns included),
same feature names, order, dtypes and families. Predictions go through the pyfunc's predict, which
enforces the logged MLflow signature.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field

import pandas as pd

from features.build import FAMILY_NAMES
from features.catalog import SOCIAL_FAMILIES
from features.config import FeatureConfig
from features.families import attributes
from features.ingest.contract import ContractError
from features.manifest import (
    FeatureManifest,
    FeatureSkewError,
    check_compatible,
    code_hash,
    manifest_for,
)
from training import tracking
from training.model_environment import load_pyfunc
from training.model_source import (
    UntrustedModelError,
    check_model_source,
    check_registered_files,
    parse_model_uri,
)

DEFAULT_MODEL_URI = "models:/customer-value@champion"
MODEL_FILES = "model-files"  # the folder of a scoring run's work directory the model is downloaded into


class ScoringSkewError(ContractError, FeatureSkewError):
    """The model's feature manifest does not match the features this code builds: scoring is refused.

    A ContractError, so the command line reports it in one line and exits with code 2.
    """


@dataclass
class ScoringModel:
    """A loaded pyfunc model and what the scorer needs to know about it."""

    pyfunc: object  # mlflow.pyfunc.PyFuncModel: predict() enforces the logged signature
    python_model: object  # training.model.CustomerValueModel: encoder, contributions()
    uri: str
    name: str
    version: str | None
    run_id: str | None
    manifest: FeatureManifest
    config: FeatureConfig
    families: tuple[str, ...]
    local_path: str | None = None  # the model's files on this machine (worker processes load them)
    # The folder load_scoring_model downloaded the files into, removed by close() (or, failing
    # that, when this object is garbage-collected or the process exits).
    files: tempfile.TemporaryDirectory | None = field(default=None, repr=False, compare=False)

    def close(self) -> None:
        """Remove the model's downloaded files; the loaded model still predicts, but worker
        processes can no longer load it (``local_path`` becomes None). Safe to call twice."""
        if self.files is not None:
            self.files.cleanup()
            self.files = None
            self.local_path = None

    @property
    def horizon_days(self) -> int:
        return int(self.config.horizon_days)

    @property
    def kind(self) -> str:
        """``lightgbm``, or ``fallback:<baseline>`` when training served a baseline in the model's place."""
        return str(getattr(self.python_model, "kind", "lightgbm"))

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "run_id": self.run_id, "uri": self.uri,
                "kind": self.kind, "feature_manifest_hash": self.manifest.manifest_hash,
                "objective": getattr(self.python_model, "objective", None)}


def feature_config_of(manifest: FeatureManifest) -> FeatureConfig:
    """The FeatureConfig a model was trained with, rebuilt from its manifest (lists back to tuples)."""
    names = {f.name for f in dataclasses.fields(FeatureConfig)}
    unknown = sorted(set(manifest.config) - names)
    if unknown:
        raise ScoringSkewError(f"the model's feature config has settings this code does not know: {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in manifest.config.items()}
    return FeatureConfig(**values)


def scoring_config(manifest: FeatureManifest) -> FeatureConfig:
    """feature_config_of, with the attribute columns fixed to the model's ``attr_`` features when its
    config has no allow-list: judging identifiers chunk by chunk could pick other columns."""
    config = feature_config_of(manifest)
    if config.attributes is not None:
        return config
    names = tuple(f[len(attributes.PREFIX):] for f in manifest.features
                  if manifest.families.get(f) == attributes.FAMILY)
    return dataclasses.replace(config, attributes=names)


def model_families(manifest: FeatureManifest) -> tuple[str, ...]:
    """The feature families the model was built with, identified by its manifest's code hash.

    Training hashes the code of every family it selected, including families that happened to
    produce no column (attributes without attribute columns), so the candidates are all families,
    all but the social ones (a model whose run left social data out) and the families that produced
    the model's features. No match means the feature code changed.
    """
    present = tuple(name for name in FAMILY_NAMES if name in set(manifest.families.values()))
    crm_only = tuple(name for name in FAMILY_NAMES if name not in SOCIAL_FAMILIES)
    for candidate in (FAMILY_NAMES, crm_only, present):
        if code_hash(candidate) == manifest.code_hash:
            return tuple(candidate)
    raise ScoringSkewError(
        "the model was trained with different feature code (manifest code_hash "
        f"{manifest.code_hash[:12]}, this code {code_hash(FAMILY_NAMES)[:12]}): retrain it with "
        "this code, or score with the code it was trained with"
    )


def check_model_features(model: ScoringModel, features: pd.DataFrame) -> None:
    """Refuse to score when the built features differ from the model's (names, order, dtypes, families).

    Category levels are not compared: the model maps categories by their text to its training
    levels, and a level it never saw is treated as missing (counted in the run's manifest).
    """
    actual = manifest_for(features, feature_config_of(model.manifest), model.families)
    expected = model.manifest
    categories = {name: expected.categories.get(name, levels) for name, levels in actual.categories.items()}
    fields = {f.name: getattr(actual, f.name) for f in dataclasses.fields(actual)}
    actual = FeatureManifest(**{**fields, "categories": categories, "manifest_hash": ""})
    try:
        check_compatible(expected, actual)
    except FeatureSkewError as err:
        raise ScoringSkewError(f"model {model.uri} refused: {err}") from None


def load_scoring_model(model_uri: str = DEFAULT_MODEL_URI, *, trust_model_from=None,
                       files_in=None) -> ScoringModel:
    """Load a pyfunc model (registry alias or version, runs:/ URI) and check its feature code.

    The tracking and registry store are training's (MLFLOW_TRACKING_URI, else ./mlflow.db). A path
    or any other URL is refused before anything is read (loading a pickle runs its code), unless it
    is a local folder at or under ``trust_model_from`` (training.model_source); so is a registered
    version whose files lie outside its experiment's artifact location.

    The model's files are downloaded into ``files_in``, a folder the caller removes (a scoring run's
    work directory, so a killed run's copy goes with its other leftovers); without it, into a
    temporary folder the returned model owns, removed by its ``close()``. Worker processes load the
    model from these files (``local_path``) until then. Without a destination MLflow would make a
    temporary folder nobody removes (for ``runs:/`` URIs and remote artifact stores; for a model in
    a local store it would hand back the store's own folder).
    """
    import mlflow
    import mlflow.artifacts

    check_model_source(model_uri, trust_model_from)
    tracking.use_store()
    files = tempfile.TemporaryDirectory(prefix="clv-model-") if files_in is None else None
    try:
        try:
            check_registered_files(mlflow.MlflowClient(), model_uri, trust_model_from)
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=str(files_in) if files is None else files.name)
            pyfunc = load_pyfunc(local, name=model_uri)  # warns when this environment differs
        except UntrustedModelError:
            raise
        except Exception as err:  # noqa: BLE001 - MlflowException, OSError...: one clear line for the CLI
            raise ContractError(f"cannot load model {model_uri!r}: {str(err).splitlines()[0]}") from None
        name, version, run_id = _registry_facts(model_uri, pyfunc)
        model = _checked_model(pyfunc, model_uri, name, version, run_id, local)
    except BaseException:
        if files is not None:
            files.cleanup()
        raise
    model.files = files
    return model


def load_local_model(path: str, uri: str) -> ScoringModel:
    """The same model from its downloaded files (in a worker process): no registry lookup.

    Only for files load_scoring_model already fetched (and so checked) in the parent process.
    """
    tracking.quiet_mlflow_warnings()
    pyfunc = load_pyfunc(path, check_environment=False)  # the parent checked it
    return _checked_model(pyfunc, uri, uri, None, None, path)


def _checked_model(pyfunc, uri: str, name: str, version, run_id, local: str) -> ScoringModel:
    python_model = pyfunc.unwrap_python_model()
    text = getattr(python_model, "manifest_json", None)
    if not text:
        raise ScoringSkewError(f"model {uri} carries no feature manifest: it cannot be checked "
                               "against this feature code, so it is not used")
    manifest = FeatureManifest.from_json(text)
    return ScoringModel(pyfunc, python_model, uri, name, version, run_id, manifest,
                        scoring_config(manifest), model_families(manifest), local)


def _registry_facts(model_uri: str, pyfunc) -> tuple[str, str | None, str | None]:
    """(name, version, run id) of a model: from the registry for models:/ URIs, else from its metadata."""
    import mlflow

    run_id = getattr(pyfunc.metadata, "run_id", None)
    parsed = parse_model_uri(model_uri)
    if parsed is None:
        return model_uri, None, run_id
    name, alias, number = parsed
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    return name, str(mv.version), mv.run_id or run_id
