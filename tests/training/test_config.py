"""The training configuration: any field from a TOML file, checked; no typo trains with a default."""

import pytest

from features.errors import UserError
from training.config import ModelParams, TrainConfig, replace_fields


def write(tmp_path, text: str):
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


def test_a_file_sets_top_level_and_nested_fields(tmp_path):
    config = TrainConfig.from_file(write(tmp_path, """
n_windows = 6
step_days = 28
shap_sample = 500

[features]
horizon_days = 91
label = "net"
market_topics = ["running", "trail"]

[model]
learning_rate = 0.05
num_leaves = 15
"""))
    assert (config.n_windows, config.step_days, config.shap_sample) == (6, 28, 500)
    assert config.features.horizon_days == 91 and config.features.label == "revenue"
    assert config.features.market_topics == ("running", "trail")
    assert config.model.learning_rate == 0.05 and config.model.num_leaves == 15
    assert config.model.max_depth == ModelParams().max_depth  # untouched fields keep their defaults


@pytest.mark.parametrize("text, message", [
    ("n_window = 6", r"unknown setting 'n_window' \(known: .*n_windows"),
    ("[model]\nleaves = 3", r"\[model\]: unknown setting 'leaves'"),
    ("[model]\nlearning_rate = 'fast'", r"\[model\] learning_rate must be a number, not 'fast'"),
    ("[model]\nlearning_rate = 2.0", r"model.learning_rate must be in \(0, 1\]"),
    ("[model]\nobjective = 'poisson'", r"objective must be one of tweedie, two_part, log_target"),
    ("[features]\nlabel = 'profit'", r"label must be net or margin, not 'profit'"),
    ("n_windows = 1", r"n_windows \(1\) must exceed validation_windows \(1\)"),
    ("social_ablation = 'yes'", r"social_ablation must be true or false"),
    ("features = 3", r"\[features\] must be a table"),
    ("n_windows = ", r"not valid TOML"),
])
def test_unknown_keys_and_bad_values_are_one_line_user_errors(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        TrainConfig.from_file(write(tmp_path, text))


def test_the_attribute_allow_list_and_the_customer_id_opt_in_come_from_the_file(tmp_path):
    config = TrainConfig.from_file(write(tmp_path, """
log_customer_ids = true

[features]
attributes = ["region", "age"]
"""))
    assert config.features.attributes == ("region", "age") and config.log_customer_ids is True
    assert TrainConfig().features.attributes is None and TrainConfig().log_customer_ids is False
    assert config.flat()["features.attributes"] == ["region", "age"]


def test_an_allow_list_must_be_a_list_of_names(tmp_path):
    with pytest.raises(UserError, match=r"\[features\] attributes must be a list"):
        TrainConfig.from_file(write(tmp_path, '[features]\nattributes = "region"'))


def test_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read it"):
        TrainConfig.from_file(tmp_path / "nowhere.toml")


def test_overrides_apply_on_top_of_a_config():
    config = replace_fields(TrainConfig(), {"n_windows": 5, "features": {"horizon_days": 30}})
    assert config.n_windows == 5 and config.features.horizon_days == 30


def test_small_bases_get_leaves_they_can_fill():
    params = ModelParams()
    assert params.for_rows(600_000).min_child_samples == 50
    assert params.for_rows(600).min_child_samples == 6
    assert params.for_rows(100).min_child_samples == 5
