import os
def test_no_leak():
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ, dict((k, v) for k, v in os.environ.items() if k.startswith("MLFLOW"))
