"""Loading a downloaded MLflow model, with its environment checked against this one in milliseconds.

MLflow's ``pyfunc.load_model`` checks the model's ``requirements.txt`` against the installed
packages by first mapping every file of every installed distribution to its modules: about a
second of CPU in each new process (20,000 files here), paid by every scorer worker and every
``clv score`` and ``clv report``. The check itself needs only each required package's installed
version, so it is done here with ``importlib.metadata`` and MLflow's is skipped
(``suppress_warnings=True``, which also skips a Python-version note that is checked here too).
"""

from __future__ import annotations

import sys
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from features.errors import UserNotice


class ModelEnvironmentWarning(UserNotice):
    """The model was logged with packages (or a Python) that this environment does not match."""


def model_requirements(path: str | Path) -> list[str]:
    """The pip requirements a downloaded model folder names (``requirements.txt``), options and
    comments left out; [] when it has none."""
    file = Path(path) / "requirements.txt"
    if not file.is_file():
        return []
    lines = (line.split("#", 1)[0].strip() for line in file.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def requirement_mismatches(requirements: list[str]) -> list[str]:
    """Each requirement this environment does not satisfy, as ``name (installed X, required Y)``;
    a path, URL or requirement whose marker excludes this platform is not checked."""
    out = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            out.append(f"{requirement.name} (not installed, required {requirement.specifier or 'any version'})")
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            out.append(f"{requirement.name} (installed {installed}, required {requirement.specifier})")
    return out


def python_mismatch(path: str | Path) -> str | None:
    """``python (running X.Y, logged with X.Y.Z)`` when the model was logged with another minor
    version of Python than this one; None when it matches or is not recorded."""
    from mlflow.models import Model

    if not (Path(path) / "MLmodel").is_file():
        return None
    logged = str(Model.load(str(path)).flavors.get("python_function", {}).get("python_version") or "")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not logged or logged.split(".")[:2] == running.split("."):
        return None
    return f"python (running {running}, logged with {logged})"


def load_pyfunc(path: str | Path, *, name: str | None = None, check_environment: bool = True):
    """``mlflow.pyfunc.load_model`` of a downloaded model folder; with ``check_environment``, one
    ModelEnvironmentWarning naming the model (``name``, else the folder) and every package (and
    Python) that differs from the model's."""
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(path), suppress_warnings=True)
    if check_environment:
        differences = requirement_mismatches(model_requirements(path))
        python = python_mismatch(path)
        differences += [python] if python else []
        if differences:
            warnings.warn(f"model {name or path} was logged in another environment: {'; '.join(differences)}; "
                          "its predictions may differ from those it was tested with",
                          ModelEnvironmentWarning, stacklevel=2)
    return pyfunc
