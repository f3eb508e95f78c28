"""Where a model may be loaded from: the configured MLflow store, or a local folder the user trusts.

Loading an MLflow pyfunc runs code: its MLmodel file names a loader module and a code file to
run (``pyfunc_code.py`` for the models training logs now, training.model_files) or a cloudpickle
(``python_model.pkl``, older models). So every loader in this project asks
``check_model_source`` first, before anything is downloaded or unpickled:

- ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` (and MLflow 3's ``models:/m-ID``) and
  ``runs:/RUN_ID/PATH`` are resolved against the tracking and registry store training uses
  (training.tracking.use_store); they are accepted. A URI naming another store
  (``models://profile@host/...``) is not.
- A registered version (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``) is a pointer: its
  files may lie anywhere (``MlflowClient.create_model_version(name, source=PATH)``). It is loaded
  only when they lie under the artifact location of the experiment that logged it
  (``check_registered_files``), as every version ``clv train`` registers does.
- Anything else (a folder, ``file:``, ``http(s)://``, ``s3://``, ``gs://``...) is refused in one
  line, unless the user trusts the folder it lies in (``--trust-model-from PATH``): a local folder
  at or under PATH (symbolic links resolved) is then accepted. Remote URLs are never trusted.

What stays trusted: the store itself. Whoever can write to the registry or its artifact store can
make the champion any pickle (docs/security.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from features.errors import UserError

REGISTRY_SCHEMES = ("models", "runs")
_MODEL_URI = re.compile(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))")


class UntrustedModelError(UserError):
    """A model URI outside the configured store, and no trust given for it: nothing was loaded."""


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, alias, version) of a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI, else None."""
    match = _MODEL_URI.fullmatch(uri)
    return None if match is None else match.groups()


def is_registry_uri(uri: str) -> bool:
    """True for ``models:/...`` and ``runs:/...`` URIs of the configured store (no other host)."""
    scheme, sep, rest = str(uri).partition(":/")
    return bool(sep) and scheme in REGISTRY_SCHEMES and bool(rest) and not rest.startswith("/")


def local_model_path(uri: str) -> Path | None:
    """The folder a path or ``file:`` URI names (absolute, links resolved), else None (a remote URL)."""
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(unquote(parsed.path)).resolve()
    if parsed.scheme and len(parsed.scheme) > 1:  # http, s3, gs, dbfs, ... (one letter: a Windows drive)
        return None
    return Path(os.path.expanduser(text)).resolve()


def check_model_source(uri: str, trust_model_from: str | os.PathLike | None = None) -> Path | None:
    """Refuse, before anything is loaded, a model from outside the configured store and the trusted folder.

    Returns None for a store URI, the resolved folder for a trusted local model; raises
    UntrustedModelError (one line, exit code 2 on the command line) for anything else.
    """
    if is_registry_uri(uri):
        return None
    path = local_model_path(uri)
    hatch = ("models load only from the MLflow store (models:/NAME@ALIAS, models:/NAME/VERSION, "
             "runs:/RUN_ID/PATH)")
    if path is None:
        raise UntrustedModelError(f"model {uri!r} refused: {hatch}; a remote URL is never trusted, "
                                  "register the model instead")
    if trust_model_from is None:
        raise UntrustedModelError(f"model {uri!r} refused: {hatch}; pass --trust-model-from FOLDER to load "
                                  "a model folder you trust (loading a model runs its code)")
    trusted = Path(os.path.expanduser(str(trust_model_from))).resolve()
    if path != trusted and trusted not in path.parents:
        raise UntrustedModelError(f"model {uri!r} refused: it is not under the trusted folder {trusted} "
                                  "(--trust-model-from)")
    return path


def trust_warning(uri: str, trusted_path: Path) -> str:
    """The line the command line prints when it loads a trusted model from outside the store."""
    return (f"warning: loading model {uri} from {trusted_path}, outside the MLflow store "
            "(--trust-model-from): its pickled code runs as you")


def check_registered_files(client, uri: str, trust_model_from: str | os.PathLike | None = None) -> None:
    """Refuse a registered version whose files lie outside the artifact location of its experiment.

    ``client`` is an MlflowClient of the configured store. Runs and logged models (``runs:/``,
    ``models:/m-ID``) keep their files where the store put them; a version is a pointer that can
    name any path or URL, so it is checked (or accepted under ``trust_model_from``, for local files).
    """
    parsed = parse_model_uri(uri)
    if parsed is None:
        return
    name, alias, number = parsed
    mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    location = str(client.get_model_version_download_uri(name, str(mv.version)))
    root = _experiment_artifact_root(client, mv)
    if root is not None and _is_under(location, root):
        return
    path = local_model_path(location)
    if trust_model_from is not None and path is not None:
        check_model_source(str(path), trust_model_from)
        return
    where = f"its experiment's artifact location {root}" if root else "any experiment of the store"
    raise UntrustedModelError(f"model {uri!r} refused: version {mv.version} keeps its files at {location}, "
                              f"outside {where}; register it with clv train, or pass --trust-model-from "
                              "FOLDER for a local folder you trust")


def _experiment_artifact_root(client, mv) -> str | None:
    """The artifact location of the experiment that logged a version's model (logged model or run)."""
    source = str(getattr(mv, "source", "") or "")
    experiment_id = None
    if source.startswith("models:/m-"):
        experiment_id = client.get_logged_model(source[len("models:/"):].split("/", 1)[0]).experiment_id
    elif getattr(mv, "run_id", None):
        experiment_id = client.get_run(mv.run_id).info.experiment_id
    if experiment_id is None:
        return None
    return str(client.get_experiment(experiment_id).artifact_location)


def _is_under(location: str, root: str) -> bool:
    """Whether ``location`` is ``root`` or inside it (local paths resolved, URLs compared by prefix)."""
    local, local_root = local_model_path(location), local_model_path(root)
    if local is not None and local_root is not None:
        return local == local_root or local_root in local.parents
    if local is not None or local_root is not None:
        return False
    return location.rstrip("/") == root.rstrip("/") or location.startswith(root.rstrip("/") + "/")
