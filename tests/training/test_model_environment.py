"""A downloaded model is loaded with its environment checked by us, not by MLflow's slow file map."""

from __future__ import annotations

import warnings
from importlib.metadata import version

import mlflow.pyfunc
import pandas as pd
import pytest
import yaml

from training.model_environment import (
    ModelEnvironmentWarning,
    load_pyfunc,
    model_requirements,
    requirement_mismatches,
)

PANDAS = f"pandas=={version('pandas')}"


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def saved_model(folder, requirements: list[str]):
    path = folder / "model"
    mlflow.pyfunc.save_model(str(path), python_model=Echo(), pip_requirements=requirements)
    return path


@pytest.fixture
def mlflow_checks(monkeypatch) -> list:
    """Each time MLflow's own check maps the installed files to packages (it swallows any exception,
    so calls are recorded rather than refused). Saving a model runs it; loading must not."""
    from mlflow.utils import requirements_utils

    calls: list = []
    monkeypatch.setattr(requirements_utils, "_init_packages_to_modules_map", lambda: calls.append(1))
    return calls


def test_only_requirements_this_environment_does_not_meet_are_named():
    found = requirement_mismatches([
        PANDAS,  # met
        "numpy>=1",  # met
        "lightgbm==0.0.1",  # another version
        "no-such-package-clv>=1",  # not installed
        'pandas==0.0.1; sys_platform == "win32"',  # not for this platform
        "./wheels/local.whl",  # a path: not checkable by name
    ])
    assert found == [f"lightgbm (installed {version('lightgbm')}, required ==0.0.1)",
                     "no-such-package-clv (not installed, required >=1)"]


def test_requirements_are_read_without_comments_or_pip_options(tmp_path):
    (tmp_path / "requirements.txt").write_text(f"# pinned\n-r other.txt\n{PANDAS}  # the frames\n\nnumpy\n")
    assert model_requirements(tmp_path) == [PANDAS, "numpy"]
    assert model_requirements(tmp_path / "nowhere") == []


def test_a_model_logged_with_other_packages_loads_with_one_warning_naming_them(tmp_path, mlflow_checks):
    path = saved_model(tmp_path, [PANDAS, "lightgbm==0.0.1"])
    mlflow_checks.clear()
    with pytest.warns(ModelEnvironmentWarning,
                      match=r"^model models:/m@champion was logged in another environment: "
                            r"lightgbm \(installed .*, required ==0\.0\.1\)") as caught:
        model = load_pyfunc(path, name="models:/m@champion")
    assert len(caught) == 1 and "pandas" not in str(caught[0].message)
    assert mlflow_checks == []
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    pd.testing.assert_frame_equal(model.predict(frame), frame)


def test_a_model_logged_with_another_python_is_named_too(tmp_path):
    path = saved_model(tmp_path, [PANDAS])
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    mlmodel["flavors"]["python_function"]["python_version"] = "3.9.18"
    (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.warns(ModelEnvironmentWarning, match=r"python \(running 3\.\d+, logged with 3\.9\.18\)"):
        load_pyfunc(path)


def test_a_matching_model_or_an_unchecked_load_warns_nothing(tmp_path, mlflow_checks):
    matching = saved_model(tmp_path / "a", [PANDAS])
    other = saved_model(tmp_path / "b", ["lightgbm==0.0.1"])
    mlflow_checks.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelEnvironmentWarning)
        load_pyfunc(matching)
        load_pyfunc(other, check_environment=False)  # a worker: its parent checked the same files
    assert mlflow_checks == []
