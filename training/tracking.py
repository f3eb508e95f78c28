"""MLflow plumbing: where runs go, what is tagged, how models are logged, registered and promoted."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import urlparse

from features.errors import UserError
from features.ingest.masking import mask_url

# What the logged model needs to be loaded and served: the model module is pickled by value, so
# only these (pinned to the versions that trained it, as MLflow recommends).
MODEL_PACKAGES = ("lightgbm", "numba", "pandas", "numpy", "pyarrow", "cloudpickle", "mlflow")
# Unpinned ranges the project supports, for callers that log models without pinning.
PIP_REQUIREMENTS = [
    "lightgbm>=4.3,<5",
    "numba>=0.61,<1",
    "pandas>=2.2,<4",
    "numpy>=1.26,<3",
    "mlflow>=3.1,<4",
    "pyarrow>=15,<26",
]


def pip_requirements() -> list[str]:
    """``package==installed version`` for every package the logged model needs."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in MODEL_PACKAGES:
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            out.append(package)
    return out


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else an embedded SQLite store ``mlflow.db`` in the working directory (absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def use_store() -> str:
    """Point MLflow's tracking and registry at tracking_uri() (quietly, once check_store passes); returns the URI."""
    import mlflow

    quiet_mlflow_warnings()
    uri = tracking_uri()
    check_store(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def check_store(uri: str, *, lock_wait_seconds: float = 5.0) -> None:
    """A UserError when the tracking store cannot be used: for an embedded SQLite store a folder, a
    missing folder, a file that is not a database or a database another process keeps locked; for
    any store, one MLflow refuses (a plain folder of files, an unknown scheme).

    MLflow itself retries opening a bad SQLite path for minutes and then fails with a traceback. A
    SQLite file that does not exist yet is fine (MLflow creates it).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    path = _sqlite_path(uri)
    if path is not None:
        _check_sqlite_file(uri, path, lock_wait_seconds)
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    try:
        mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    except MlflowException as err:
        raise UserError(f"MLflow store {mask_url(uri)} cannot be used: {mask_url(err.message)}") from None


def _check_sqlite_file(uri: str, path: Path, lock_wait_seconds: float) -> None:
    if not path.name or path.name == ":memory:":
        return
    if path.is_dir():
        raise UserError(f"MLflow store {uri}: {path} is a folder; point MLFLOW_TRACKING_URI at a database file")
    if not path.parent.is_dir():
        raise UserError(f"MLflow store {uri}: folder {path.parent} does not exist")
    if not path.exists():
        return
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=lock_wait_seconds)) as db:
            db.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as err:  # "file is not a database", "database is locked", ...
        hint = "; another process holds it, retry when it is done" if "locked" in str(err) else ""
        raise UserError(f"MLflow store {uri} cannot be used: {err}{hint}") from None


def _check_server(uri: str, timeout_seconds: float = 10.0) -> None:
    """A tracking server that does not answer is one line now, not MLflow's minutes of retries."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_seconds):
            pass
    except urllib.error.HTTPError:
        return  # it answers (behind a proxy or auth, /health may be refused): MLflow says the rest
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"MLflow tracking server {mask_url(uri)} does not answer: {reason}") from None


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (query string dropped), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    shown = mask_url(uri)  # a database-backed store's password never reaches the terminal
    if uri.startswith(("http://", "https://", "databricks")):
        return f"open {shown}"
    return f"mlflow ui --backend-store-uri {shown}"


def quiet_mlflow_warnings() -> None:
    """Silence warnings MLflow and its dependencies raise on every run that say nothing about our data."""
    for pattern in (
        r".*noload.*",  # SQLAlchemy deprecation inside MLflow's store
        r".*Passing a Python object as `python_model`.*",
        r".*Hint: Inferred schema contains integer column.*",
        r".*is deprecated and will be removed in pandas 4.*",
        r".*DataFrame\.applymap has been deprecated.*",
        r".*Any type hint is inferred as AnyType.*",
        r".*Add type hints to the `predict` method.*",
        r".*The filesystem tracking backend.*",
        r".*Operation with range is deprecated.*",
        r".*dataset source can be interpreted in multiple ways.*",  # pandas 4 deprecation inside mlflow.models.utils
    ):
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings(
        "ignore", category=DeprecationWarning, module=r"(mlflow|sqlalchemy|alembic).*"
    )
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"mlflow.*")
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # Warns on every custom pyfunc that cloudpickle is used; ours is the project's own code.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _sqlite_dir(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).parent


def experiment_id(name: str, uri: str) -> str:
    """The experiment's id, created if missing; with a SQLite store its artifacts live beside the DB file."""
    import mlflow

    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    folder = _sqlite_dir(uri)
    location = (folder / "mlartifacts").as_uri() if folder is not None else None
    return mlflow.create_experiment(name, artifact_location=location)


def _git(args: list[str], where: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=where, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def git_commit(path: str | os.PathLike | None = None) -> str:
    """The commit of the code doing the training (the repository holding this package), or "unknown"."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    commit = (_git(["rev-parse", "HEAD"], where) or "").strip()
    return commit if len(commit) == 40 else "unknown"


def git_dirty(path: str | os.PathLike | None = None) -> str:
    """"true" when the package's tracked files differ from the commit (the commit alone does not
    describe the code), "false" when clean, "unknown" outside a repository."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return "unknown" if status is None else str(bool(status.strip())).lower()


def fingerprint_hash(fingerprint: dict) -> str:
    """Short stable hash of a source fingerprint (file names, sizes and content hashes per table)."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def local_artifact_dir(uri: str) -> Path | None:
    """Local folder of a file:// artifact URI (None for remote stores)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path)
    return None


@contextmanager
def launcher_run() -> Iterator[str | None]:
    """The run id of a launcher (``mlflow run`` sets MLFLOW_RUN_ID), hidden while training logs its own run.

    Without this, ``mlflow.start_run()`` would resume the launcher's run and the training run's params
    would collide with the project's parameters; the training run records it as its parent instead.
    """
    parent = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        yield parent
    finally:
        if parent is not None:
            os.environ["MLFLOW_RUN_ID"] = parent
