"""The pyfunc wrapper as code (MLflow models-from-code): copied into every logged model and run on load.

Not imported by the packages: ``training.model_files.log_value_model`` passes this file's path as
``python_model``, and MLflow executes it when the model is loaded. The model itself is data (the
booster text files and ``value_model.json`` among the model's artifacts), read back by
``StoredValueModel.load_context``.
"""

import mlflow.models

from training.model_files import StoredValueModel

mlflow.models.set_model(StoredValueModel())
