"""Models load only from the configured MLflow store, or from a local folder the user trusts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from features.errors import UserError
from training.model_source import (
    UntrustedModelError,
    check_model_source,
    check_registered_files,
    is_registry_uri,
)


@pytest.mark.parametrize("uri", ["models:/customer-value@champion", "models:/customer-value/3",
                                 "models:/m-0123456789abcdef", "runs:/0123abcd/model"])
def test_registry_and_run_uris_of_the_configured_store_are_accepted(uri):
    assert is_registry_uri(uri)
    assert check_model_source(uri) is None


@pytest.mark.parametrize("uri", ["/srv/models/clv", "relative/model", "file:///srv/models/clv",
                                 "https://example.com/model.tar", "s3://bucket/model", "gs://bucket/model",
                                 "models://profile@other-host/customer-value/3", "runs://other/run/model",
                                 "dbfs:/models/clv"])
def test_anything_else_is_refused_in_one_line_naming_the_uri(uri):
    with pytest.raises(UntrustedModelError) as refused:
        check_model_source(uri)
    message = str(refused.value)
    assert isinstance(refused.value, UserError)  # one line and exit code 2 on the command line
    assert "\n" not in message and repr(uri) in message


def test_a_local_path_names_the_escape_hatch():
    with pytest.raises(UntrustedModelError, match="--trust-model-from"):
        check_model_source("/srv/models/clv")


def test_a_folder_at_or_under_the_trusted_folder_is_accepted(tmp_path):
    (tmp_path / "models" / "clv").mkdir(parents=True)
    assert check_model_source(str(tmp_path / "models" / "clv"), tmp_path / "models") == tmp_path / "models" / "clv"
    assert check_model_source((tmp_path / "models").as_uri(), tmp_path / "models") == tmp_path / "models"


def test_a_folder_beside_the_trusted_folder_is_refused(tmp_path):
    with pytest.raises(UntrustedModelError, match="not under the trusted folder"):
        check_model_source(str(tmp_path / "models-evil"), tmp_path / "models")
    with pytest.raises(UntrustedModelError, match="not under the trusted folder"):
        check_model_source(str(tmp_path / "models" / ".." / "elsewhere"), tmp_path / "models")


def test_a_link_inside_the_trusted_folder_pointing_out_of_it_is_refused(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "models" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UntrustedModelError, match="not under the trusted folder"):
        check_model_source(str(tmp_path / "models" / "link"), tmp_path / "models")


def test_a_remote_url_is_never_trusted(tmp_path):
    with pytest.raises(UntrustedModelError, match="never trusted"):
        check_model_source("s3://bucket/model", tmp_path)


class _Registry:
    """One registered version, logged as model m-1 in an experiment whose artifacts are at ``root``."""

    def __init__(self, root: str, files: str):
        self.root, self.files = root, files

    def get_model_version_by_alias(self, name, alias):
        return SimpleNamespace(version="1", source="models:/m-1", run_id=None)

    def get_model_version_download_uri(self, name, version):
        return self.files

    def get_logged_model(self, model_id):
        return SimpleNamespace(experiment_id="7")

    def get_experiment(self, experiment_id):
        return SimpleNamespace(artifact_location=self.root)


@pytest.mark.parametrize("root, files", [
    ("s3://bucket/clv", "s3://bucket/clv/7/models/m-1/artifacts"),
    ("file:///srv/mlartifacts", "/srv/mlartifacts/7/models/m-1/artifacts"),
    ("mlflow-artifacts:/7", "mlflow-artifacts:/7/models/m-1/artifacts"),
])
def test_a_registered_version_whose_files_are_in_its_experiments_store_is_accepted(root, files):
    check_registered_files(_Registry(root, files), "models:/clv@champion")


@pytest.mark.parametrize("root, files", [
    ("s3://bucket/clv", "s3://bucket/clv-other/model"),
    ("s3://bucket/clv", "s3://evil/clv/model"),
    ("file:///srv/mlartifacts", "/home/someone/model"),
    ("file:///srv/mlartifacts", "https://example.com/model"),
])
def test_a_registered_version_pointing_elsewhere_is_refused(root, files):
    with pytest.raises(UntrustedModelError, match="keeps its files at"):
        check_registered_files(_Registry(root, files), "models:/clv@champion")


def test_a_registered_version_pointing_into_the_trusted_folder_is_accepted(tmp_path):
    registry = _Registry("s3://bucket/clv", str(tmp_path / "models" / "clv"))
    check_registered_files(registry, "models:/clv@champion", trust_model_from=tmp_path / "models")
    with pytest.raises(UntrustedModelError):
        check_registered_files(registry, "models:/clv@champion", trust_model_from=tmp_path / "other")
