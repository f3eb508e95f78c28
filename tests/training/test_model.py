import numpy as np
import pandas as pd
import pytest

from training.config import ModelParams
from training.model import CustomerValueModel, FeatureEncoder, currency_contributions, make_model


def customers(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Spend history drives value; the north region buys twice as much; half of customers buy nothing."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "spend_365d": rng.gamma(2.0, 50.0, n),
            "attr_region": pd.Categorical(rng.choice(["north", "south"], n)),
            "order_count": rng.integers(0, 6, n).astype(np.float64),
        },
        index=pd.Index([f"C{i:05d}" for i in range(n)], name="customer_id"),
    )
    rate = frame["spend_365d"].to_numpy() * np.where(frame["attr_region"] == "north", 2.0, 1.0)
    value = np.where(rng.random(n) < 0.5, 0.0, rng.gamma(2.0, rate / 2.0))
    return frame, value


TRAIN, Y_TRAIN = customers(600, seed=1)
VALID, Y_VALID = customers(300, seed=2)
ENCODER = FeatureEncoder.fit(TRAIN)
PARAMS = ModelParams(max_rounds=40, num_leaves=7, min_child_samples=10, num_threads=1)


def fitted(objective: str) -> CustomerValueModel:
    model = make_model(
        ModelParams(**{**PARAMS.__dict__, "objective": objective}), ENCODER.categorical, seed=0
    )
    model.fit(ENCODER.encode(TRAIN), Y_TRAIN, X_valid=ENCODER.encode(VALID), y_valid=Y_VALID)
    return CustomerValueModel.from_fitted(model, ENCODER)


def test_encoder_maps_levels_to_codes_and_unknown_or_missing_to_nan():
    encoder = FeatureEncoder(("amount", "region"), {"region": ("north", "south")})
    frame = pd.DataFrame({"amount": [1, 2, 3, 4], "region": ["south", "north", "mars", None]})
    expected = pd.DataFrame({"amount": [1.0, 2.0, 3.0, 4.0], "region": [1.0, 0.0, np.nan, np.nan]})
    pd.testing.assert_frame_equal(encoder.encode(frame), expected)


def test_categories_and_plain_strings_encode_identically():
    as_strings = ENCODER.model_input(TRAIN)
    assert str(as_strings["attr_region"].dtype) == "str"
    assert as_strings["order_count"].dtype == np.float64
    pd.testing.assert_frame_equal(ENCODER.encode(as_strings), ENCODER.encode(TRAIN))


def test_encoder_levels_are_the_sorted_text_values_of_the_training_frame():
    assert ENCODER.levels == {"attr_region": ("north", "south")}
    assert ENCODER.categorical == ["attr_region"]


@pytest.mark.parametrize("objective", ["tweedie", "two_part", "log_target"])
def test_currency_contributions_sum_with_baseline_to_the_prediction(objective):
    model = fitted(objective)
    frame = ENCODER.model_input(VALID)
    contributions = model.contributions(frame)
    assert list(contributions.columns) == ["spend_365d", "attr_region", "order_count", "baseline"]
    np.testing.assert_allclose(contributions.sum(axis=1), model.predict(None, frame), rtol=1e-9)


@pytest.mark.parametrize("objective", ["tweedie", "two_part", "log_target"])
def test_every_objective_ranks_higher_spenders_higher(objective):
    model = fitted(objective)
    predicted = model.predict(None, ENCODER.model_input(VALID))
    assert predicted.index.equals(VALID.index)
    assert predicted.corr(VALID["spend_365d"], method="spearman") > 0.5
    assert (predicted >= 0).all() or objective == "log_target"


def test_currency_split_is_proportional_to_log_scale_shap():
    # Baseline exp(1); two features moving the log-score by +0.2 and +0.6: the difference
    # e^1.8 - e^1 is shared 1:3.
    contrib, baseline = currency_contributions("tweedie", np.array([[0.2, 0.6]]), np.array([1.0]))
    total = np.exp(1.8) - np.exp(1.0)
    np.testing.assert_allclose(contrib, [[total / 4, 3 * total / 4]])
    np.testing.assert_allclose(baseline, [np.exp(1.0)])
    # When the features cancel out, each keeps its first-order (derivative) share: exp(base) per unit.
    contrib, _ = currency_contributions("tweedie", np.array([[0.5, -0.5]]), np.array([0.0]))
    np.testing.assert_allclose(contrib, [[0.5, -0.5]])


@pytest.mark.filterwarnings(
    "ignore:Operation with range is deprecated"
)  # inside mlflow.models.utils
def test_pyfunc_round_trip_through_mlflow_predicts_from_plain_strings(tmp_path):
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    model = fitted("tweedie")
    frame = ENCODER.model_input(VALID)
    signature = infer_signature(frame, model.predict(None, frame))
    mlflow.pyfunc.save_model(
        tmp_path / "model",
        python_model=model,
        signature=signature,
        input_example=frame.head(3),
        pip_requirements=["lightgbm", "pandas"],
    )
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    np.testing.assert_allclose(loaded.predict(frame), model.predict(None, frame))
    unseen = frame.head(2).assign(attr_region=["mars", None])
    assert np.isfinite(loaded.predict(unseen)).all()
    inner = loaded.unwrap_python_model()
    np.testing.assert_allclose(inner.contributions(frame).sum(axis=1), model.predict(None, frame))


def test_fixed_rounds_refit_reproduces_the_same_booster():
    first = make_model(PARAMS, ENCODER.categorical, seed=3).fit(
        ENCODER.encode(TRAIN), Y_TRAIN, rounds={"value": 15}
    )
    second = make_model(PARAMS, ENCODER.categorical, seed=3).fit(
        ENCODER.encode(TRAIN), Y_TRAIN, rounds={"value": 15}
    )
    assert first.booster_strings() == second.booster_strings()
    assert first.rounds == {"value": 15}


def test_fit_needs_either_validation_or_rounds():
    with pytest.raises(ValueError, match="either a validation set"):
        make_model(PARAMS, [], seed=0).fit(ENCODER.encode(TRAIN), Y_TRAIN)


def test_a_fallback_serves_its_baselines_feature_levelled_to_realised_value():
    from training.model import BaselineValueModel, calibration_scale

    frame = pd.DataFrame({"btyd_expected_value": [100.0, 50.0, np.nan], "spend_horizon": [10.0, 0.0, 5.0],
                          "label": [60.0, 15.0, 0.0]}, index=pd.Index(list("abc"), name="customer_id"))
    # BG/NBD forecast 150 in all, 75 was realised: its level is halved, its order kept.
    assert calibration_scale(frame, "bgnbd") == 0.5
    assert calibration_scale(frame.assign(label=0.0), "bgnbd") == 1.0  # nothing realised: left as is
    features = frame.drop(columns="label")
    model = BaselineValueModel("bgnbd", FeatureEncoder.fit(features), scale=0.5)
    assert model.kind == "fallback:bgnbd"
    # A customer without the feature is valued at 0, never NaN (ranks need numbers).
    assert model.predict(None, features).tolist() == [50.0, 25.0, 0.0]
    contributions = model.contributions(features)
    assert contributions.sum(axis=1).tolist() == [50.0, 25.0, 0.0]
    assert (contributions["spend_horizon"] == 0).all()
    with pytest.raises(ValueError, match="no fallback for baseline 'oracle'"):
        BaselineValueModel("oracle", FeatureEncoder.fit(features))


def save_both_ways(model, folder, frame):
    """The model saved as MLflow used to keep it (a cloudpickle) and as data files plus the wrapper's code."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from training.model_files import PYFUNC_CODE, write_model_files

    signature = infer_signature(frame, model.predict(None, frame))
    kwargs = {"signature": signature, "input_example": frame.head(3), "pip_requirements": ["lightgbm", "pandas"]}
    mlflow.pyfunc.save_model(folder / "pickled", python_model=model, **kwargs)
    (folder / "files").mkdir()
    artifacts = write_model_files(model, folder / "files")
    mlflow.pyfunc.save_model(folder / "code", python_model=str(PYFUNC_CODE), artifacts=artifacts, **kwargs)
    return (mlflow.pyfunc.load_model(str(folder / "pickled")), mlflow.pyfunc.load_model(str(folder / "code")))


@pytest.mark.filterwarnings("ignore:Operation with range is deprecated")  # inside mlflow.models.utils
@pytest.mark.parametrize("objective", ["tweedie", "two_part", "log_target"])
def test_the_model_is_stored_as_booster_text_and_json_and_predicts_as_the_pickle_did(tmp_path, objective):
    model = fitted(objective)
    model.manifest_json = '{"features": []}'
    model.families = {"spend_365d": "history"}
    model.source_columns = {"transactions": ["channel"]}
    frame = ENCODER.model_input(VALID)
    pickled, stored = save_both_ways(model, tmp_path, frame)
    files = sorted(p.relative_to(tmp_path / "code").as_posix() for p in (tmp_path / "code").rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(".pkl")]
    assert {f"artifacts/booster_{part}.txt" for part in model.booster_strings} | {
        "artifacts/value_model.json", "pyfunc_code.py"} <= set(files)
    np.testing.assert_allclose(stored.predict(frame), pickled.predict(frame), rtol=1e-12, atol=0)
    inner, old = stored.unwrap_python_model(), pickled.unwrap_python_model()
    assert type(inner) is CustomerValueModel and inner.kind == "lightgbm"
    for name in ("objective", "features", "levels", "rounds", "manifest_json", "families", "source_columns",
                 "booster_strings"):
        assert getattr(inner, name) == getattr(old, name), name
    assert inner.encoder == model.encoder
    pd.testing.assert_frame_equal(inner.contributions(frame), old.contributions(frame), rtol=1e-12)


@pytest.mark.filterwarnings("ignore:Operation with range is deprecated")  # inside mlflow.models.utils
def test_a_stored_fallback_comes_back_as_a_fallback(tmp_path):
    from training.model import BaselineValueModel

    features = pd.DataFrame({"btyd_expected_value": [100.0, 50.0, np.nan], "region": ["a", "b", "a"]},
                            index=pd.Index(list("abc"), name="customer_id"))
    model = BaselineValueModel("bgnbd", FeatureEncoder.fit(features), manifest_json="{}", scale=0.3)
    frame = model.encoder.model_input(features)
    pickled, stored = save_both_ways(model, tmp_path, frame)
    inner = stored.unwrap_python_model()
    assert type(inner) is BaselineValueModel and inner.kind == "fallback:bgnbd" and inner.scale == 0.3
    assert stored.predict(frame).tolist() == pickled.predict(frame).tolist() == [30.0, 15.0, 0.0]
    assert not list((tmp_path / "code").rglob("*.pkl"))
