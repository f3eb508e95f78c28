import json
import sys

import numpy as np
import pandas as pd
import pytest

from features.build import build_features
from features.config import FeatureConfig
from features.manifest import (
    FeatureManifest,
    FeatureSkewError,
    check_compatible,
    code_hash,
    feature_code_modules,
    manifest_for,
)
from features.tables import Tables

CONFIG = FeatureConfig(horizon_days=90)
FAMILIES = ["history", "attributes", "referral"]
AS_OF = pd.Timestamp("2025-01-01")

CUSTOMERS = pd.DataFrame({
    "customer_id": ["a", "b"],
    "signup_date": pd.to_datetime(["2024-01-01", "2024-02-01"]).astype("datetime64[ns]"),
    "tier": pd.Categorical(["gold", "silver"], categories=["gold", "silver", "bronze"]),
    "age": [30.0, np.nan],
})
TX = pd.DataFrame({"customer_id": ["a"], "amount": [10.0],
                   "timestamp": pd.to_datetime(["2024-06-01"]).astype("datetime64[ns]")})
FRAME = build_features(Tables(CUSTOMERS, TX), AS_OF, CONFIG, families=FAMILIES)


def manifest(frame=FRAME, config=CONFIG, families=FAMILIES):
    return manifest_for(frame, config, families)


def test_records_names_families_dtypes_levels_and_config():
    m = manifest()
    assert m.features == tuple(FRAME.columns)
    assert m.families["spend_90d"] == "history"
    assert m.families["attr_tier"] == "attributes"
    assert m.families["was_referred"] == "referral"
    assert m.dtypes["attr_tier"] == "category" and m.dtypes["attr_age"] == "float64"
    assert m.categories == {"attr_tier": ("gold", "silver", "bronze")}
    assert m.config == CONFIG.to_dict()
    assert len(m.code_hash) == len(m.config_hash) == len(m.manifest_hash) == 64


def test_training_set_columns_cutoff_and_label_are_not_features():
    training = FRAME.assign(cutoff=AS_OF, label=1.0)
    assert manifest(training) == manifest()


def test_json_round_trip_is_exact_and_stable():
    m = manifest()
    text = m.to_json()
    assert FeatureManifest.from_json(text) == m
    assert FeatureManifest.from_json(text).to_json() == text
    assert json.loads(text)["manifest_hash"] == m.manifest_hash


def test_edited_manifest_is_refused_on_load():
    data = json.loads(manifest().to_json())
    data["dtypes"]["spend_90d"] = "int64"
    with pytest.raises(ValueError, match="corrupt"):
        FeatureManifest.from_json(json.dumps(data))


def test_save_is_atomic_and_load_reads_it_back(tmp_path):
    m = manifest()
    path = m.save(tmp_path / "models" / "features.json")
    assert FeatureManifest.load(path) == m
    assert [p.name for p in path.parent.iterdir()] == ["features.json"]  # no temporary left


def test_identical_builds_are_compatible():
    check_compatible(manifest(), manifest())


def test_config_change_is_reported_with_the_key():
    with pytest.raises(FeatureSkewError, match=r"horizon_days: 90 -> 365"):
        check_compatible(manifest(), manifest(config=FeatureConfig()))


def test_missing_and_extra_features_are_named():
    with pytest.raises(FeatureSkewError, match=r"missing features: \['attr_age'\].*"
                                               r"extra features: \['attr_height'\]"):
        check_compatible(manifest(), manifest(FRAME.rename(columns={"attr_age": "attr_height"})))


def test_reordered_features_are_reported():
    reordered = FRAME[list(FRAME.columns[::-1])]
    with pytest.raises(FeatureSkewError, match="different order"):
        check_compatible(manifest(), manifest(reordered))


def test_dtype_and_category_level_changes_are_named():
    as_text = FRAME.assign(attr_age=FRAME["attr_age"].astype("category"))
    with pytest.raises(FeatureSkewError, match="attr_age: dtype float64 -> category"):
        check_compatible(manifest(), manifest(as_text))
    new_level = FRAME.assign(attr_tier=FRAME["attr_tier"].cat.add_categories("platinum"))
    with pytest.raises(FeatureSkewError, match=r"attr_tier: category levels differ \(new "
                                               r"\['platinum'\]"):
        check_compatible(manifest(), manifest(new_level))


def test_code_hash_difference_is_reported():
    other = FeatureManifest(**{**manifest().__dict__, "code_hash": "0" * 64, "manifest_hash": ""})
    with pytest.raises(FeatureSkewError, match="feature code differs"):
        check_compatible(manifest(), other)


def test_code_hash_covers_core_family_and_helper_modules_but_not_tests_or_tools():
    names = [m.__name__ for m in feature_code_modules(["referral"])]
    # referral imports its helpers from features.encoding (which reads ids with features.digit_ids
    # and numbers them with features.first_appearance) and its id sets from features.ingest.id_sets,
    # so their source is part of the hash.
    assert names == ["features.build", "features.catalog", "features.config", "features.digit_ids",
                     "features.encoding", "features.families.referral", "features.first_appearance",
                     "features.ingest.id_sets", "features.tables"]
    assert code_hash(["referral"]) != code_hash(["referral", "network"])
    assert code_hash() == code_hash(None)
    assert not any(n.startswith("tests") or n in ("features.manifest", "features.docs")
                   for n in (m.__name__ for m in feature_code_modules()))
    assert "features.families.network" in sys.modules and "features.families.network" in [
        m.__name__ for m in feature_code_modules()]


def test_conform_restores_order_and_training_levels():
    m = manifest()
    scoring = FRAME[list(FRAME.columns[::-1])].assign(
        attr_tier=pd.Categorical(["platinum", "gold"]))
    out = m.conform(scoring)
    assert list(out.columns) == list(m.features)
    assert out["attr_tier"].dtype == pd.CategoricalDtype(["gold", "silver", "bronze"])
    assert out["attr_tier"].isna().tolist() == [True, False]  # unseen level: unknown
    with pytest.raises(FeatureSkewError, match="missing"):
        m.conform(FRAME.drop(columns="spend_30d"))
