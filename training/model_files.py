"""The customer-value model as data files, and the pyfunc wrapper (defined in code) that rebuilds it.

A logged model holds no pickle: each booster is LightGBM's native model text
(``booster_<part>.txt``), and everything else the model carries (objective, rounds, encoder
features and levels, feature manifest JSON, families, source columns, a fallback's baseline and
scale) is one JSON file (``value_model.json``). The wrapper is ``training/pyfunc_code.py``, which
MLflow copies into the model folder and runs on load (MLflow's models-from-code);
``StoredValueModel.load_context`` reads the files back into a ``CustomerValueModel`` or
``BaselineValueModel``, so ``unwrap_python_model()`` gives the same object the pickle gave.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from training.model import BaselineValueModel, CustomerValueModel

PYFUNC_CODE = Path(__file__).with_name("pyfunc_code.py")
STATE_ARTIFACT = "value_model"
BOOSTER_PREFIX = "booster_"
CLASSES = {cls.__name__: cls for cls in (CustomerValueModel, BaselineValueModel)}
# Rebuilt on load, never stored: the parsed boosters and MLflow's cached type hints.
NOT_STORED = ("booster_strings", "_boosters", "_predict_type_hints")


def write_model_files(model: CustomerValueModel, folder: Path) -> dict[str, str]:
    """Write the model's boosters (LightGBM text) and state (JSON) into ``folder``; the pyfunc
    artifacts mapping (name -> file) that ``read_model_files`` takes back."""
    kind = type(model).__name__
    if kind not in CLASSES:
        raise TypeError(f"cannot store a {kind}: known models are {sorted(CLASSES)}")
    state = {k: v for k, v in vars(model).items() if k not in NOT_STORED}
    artifacts = {STATE_ARTIFACT: folder / "value_model.json"}
    artifacts[STATE_ARTIFACT].write_text(json.dumps({"class": kind, "state": state}, indent=1), encoding="utf-8")
    for part, text in model.booster_strings.items():
        artifacts[BOOSTER_PREFIX + part] = folder / f"booster_{part}.txt"
        artifacts[BOOSTER_PREFIX + part].write_bytes(text.encode("utf-8"))  # byte for byte, newlines kept
    return {name: str(path) for name, path in artifacts.items()}


def read_model_files(artifacts: dict[str, str]) -> CustomerValueModel:
    """The model ``write_model_files`` stored, from its artifacts mapping (name -> local file)."""
    stored = json.loads(Path(artifacts[STATE_ARTIFACT]).read_text(encoding="utf-8"))
    cls = CLASSES.get(stored.get("class"))
    if cls is None:
        raise ValueError(f"unknown stored model class {stored.get('class')!r}; known: {sorted(CLASSES)}")
    model = cls.__new__(cls)
    vars(model).update(stored["state"])
    model.booster_strings = {name[len(BOOSTER_PREFIX):]: Path(path).read_bytes().decode("utf-8")
                             for name, path in sorted(artifacts.items()) if name.startswith(BOOSTER_PREFIX)}
    model._boosters = None
    return model


class StoredValueModel(mlflow.pyfunc.PythonModel):
    """The pyfunc ``pyfunc_code.py`` hands to MLflow: on load it becomes the stored model itself.

    MLflow's ``unwrap_python_model()`` returns this very object, and the scorer, the report and
    the registry expect a ``CustomerValueModel`` (its encoder, manifest, contributions; pickled by
    reference to Dask workers), so ``load_context`` turns the object into the rebuilt model
    (class and attributes) rather than wrapping it.
    """

    def load_context(self, context):
        model = read_model_files(context.artifacts)
        model.load_context(context)
        self.__dict__.clear()
        self.__dict__.update(vars(model))
        self.__class__ = type(model)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        raise RuntimeError("the stored value model predicts only once MLflow has loaded its files")


def log_value_model(name: str, model: CustomerValueModel, **kwargs):
    """``mlflow.pyfunc.log_model`` of the model as data files plus the wrapper's code (no pickle);
    ``kwargs`` go to log_model (signature, input_example, pip_requirements, registered_model_name)."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        artifacts = write_model_files(model, Path(tmp))
        return mlflow.pyfunc.log_model(name=name, python_model=str(PYFUNC_CODE), artifacts=artifacts, **kwargs)
