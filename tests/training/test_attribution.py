import numpy as np
import pandas as pd

from training.attribution import family_shares, feature_importance, shap_sample


def test_importance_is_mean_absolute_shap_with_shares_family_and_direction():
    shap = pd.DataFrame(
        {
            "spend_90d": [1.0, -1.0, 3.0, -3.0],
            "followers_log": [0.5, 0.5, -0.5, -0.5],
            "attr_region": [0.0, 0.0, 0.0, 0.0],
            "baseline": [9.0, 9.0, 9.0, 9.0],
        }
    )
    values = pd.DataFrame(
        {
            "spend_90d": [20.0, 10.0, 30.0, 0.0],  # SHAP rises with the value: direction +1
            "followers_log": [1.0, 2.0, 3.0, 4.0],  # SHAP falls as the value rises
            "attr_region": [0.0, 1.0, 0.0, 1.0],
        }
    )
    families = {"spend_90d": "history", "followers_log": "social", "attr_region": "attributes"}
    table = feature_importance(shap, values, families, categorical=["attr_region"])
    expected = pd.DataFrame(
        {
            "feature": ["spend_90d", "followers_log", "attr_region"],
            "family": ["history", "social", "attributes"],
            "mean_abs_shap": [2.0, 0.5, 0.0],
            "share": [0.8, 0.2, 0.0],
            "direction": [1.0, -np.sqrt(0.8), np.nan],
        }
    )
    pd.testing.assert_frame_equal(table, expected)
    assert family_shares(table, ["history", "social", "network"]) == {
        "shap_share_history": 0.8,
        "shap_share_social": 0.2,
        "shap_share_network": 0.0,
    }


def test_shap_sample_is_seeded_bounded_and_keeps_order():
    frame = pd.DataFrame({"x": np.arange(100)})
    first = shap_sample(frame, 10, seed=1)
    assert len(first) == 10 and first["x"].is_monotonic_increasing
    pd.testing.assert_frame_equal(first, shap_sample(frame, 10, seed=1))
    assert not first.equals(shap_sample(frame, 10, seed=2))
    assert shap_sample(frame, 1000, seed=1) is frame
