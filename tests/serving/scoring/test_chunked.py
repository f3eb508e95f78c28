"""The batch scorer, end to end: a generated world, a real LightGBM pyfunc in a temporary MLflow registry.

What is specified here: chunked scores equal the whole-table build, whatever the chunk size or file
format; no customer is lost; the output is ranked, tiered and explained; a killed run leaves the
previous output intact, and one told to stop (SIGTERM) cleans up and says so; a model built with
other feature code is refused.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from features.build import FAMILY_NAMES, build_features
from features.config import FeatureConfig
from features.ingest.contract import ContractError
from features.ingest.partition import bucket_of, n_buckets
from features.ingest.source import load_source
from features.labels import label_values
from features.manifest import FeatureManifest, manifest_for
from features.synthetic.world import generate_world
from serving.scoring.chunked import score_customers
from serving.scoring.model import ScoringSkewError, load_scoring_model
from serving.scoring.publish import verify_scores
from serving.scoring.work_dir import WORK_FOLDER
from tests.clv_process import run_clv
from training.model_source import UntrustedModelError
from training.tracking import PIP_REQUIREMENTS

AS_OF = pd.Timestamp("2026-01-01")  # the day after the generated world's last transaction
CONFIG = FeatureConfig(market_topics=("outdoor",))
OUTPUT_COLUMNS = [
    "customer_id", "predicted_value", "value_rank", "value_percentile", "value_tier",
    "value_p10", "value_p90", "p_alive", "expected_orders", "reason_1", "reason_2", "reason_3",
    "model_name", "model_version", "model_run_id", "model_kind", "as_of", "horizon_days", "scored_at",
]
TABLES = ("customers", "transactions", "social_profiles", "social_interactions", "referrals")


# ---------------------------------------------------------------------------------------------
# A world with the awkward cases the chunked path must get right


def make_world(directory: Path, n_customers: int, seed: int) -> Path:
    """A generated world, plus: a re-linked profile, a profile whose newest snapshot lost its link,
    and a postcode attribute that is digits everywhere but in one customer (so chunks disagree on
    whether it is a number)."""
    generate_world(directory, n_customers=n_customers, seed=seed)
    customers = pd.read_parquet(directory / "customers.parquet")
    postcode = pd.Series([f"{10000 + i}" for i in range(len(customers))], dtype="str")
    postcode.iloc[len(customers) // 2] = "EC1A"
    customers["postcode"] = postcode
    customers.to_parquet(directory / "customers.parquet", index=False)

    profiles = pd.read_parquet(directory / "social_profiles.parquet")
    linked = profiles.dropna(subset=["customer_id"])
    counts = linked.groupby("profile_id").size()
    relinked, unlinked = counts[counts >= 3].index[:2]
    other = customers["customer_id"].iloc[-1]
    newest = profiles.loc[profiles["profile_id"] == relinked, "snapshot_date"].idxmax()
    profiles.loc[newest, "customer_id"] = other  # identity resolution moved this profile
    newest = profiles.loc[profiles["profile_id"] == unlinked, "snapshot_date"].idxmax()
    profiles.loc[newest, "customer_id"] = np.nan  # ...and lost this link on the latest read
    profiles.to_parquet(directory / "social_profiles.parquet", index=False)
    return directory


def as_csv(source: Path, target: Path) -> Path:
    """The same source as text files (transactions gzipped), read by the CSV path."""
    target.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        frame = pd.read_parquet(source / f"{table}.parquet")
        name = f"{table}.csv.gz" if table == "transactions" else f"{table}.csv"
        frame.to_csv(target / name, index=False)
    return target


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"), n_customers=400, seed=3)


@pytest.fixture(scope="module")
def big_world(tmp_path_factory) -> Path:
    """Large enough that a run is still under way when a test kills it or tells it to stop (read only)."""
    return make_world(tmp_path_factory.mktemp("big-world"), n_customers=3000, seed=4)


# ---------------------------------------------------------------------------------------------
# A real model, registered as the champion in a temporary MLflow store (with the requirements
# training gives it: MLflow infers them otherwise, loading the model in a new process, 8 s a model)


def fit_pyfunc(world: Path, *, manifest_edit=None, signature_extra: bool = False):
    """A small tweedie LightGBM on the world's features at AS_OF - 365 days, as training wraps it."""
    from mlflow.models import infer_signature

    from training.config import ModelParams
    from training.model import CustomerValueModel, FeatureEncoder, make_model

    tables = load_source(world, reject_threshold=0.05).tables
    cutoff = AS_OF - pd.Timedelta(days=CONFIG.horizon_days)
    features = build_features(tables, cutoff, CONFIG)
    label = label_values(tables, cutoff, CONFIG)
    manifest = manifest_for(features, CONFIG, FAMILY_NAMES)
    encoder = FeatureEncoder.from_manifest(manifest)
    params = ModelParams(num_leaves=7, max_depth=3, min_child_samples=5, num_threads=1)
    model = make_model(params, encoder.categorical, seed=0)
    model.fit(encoder.encode(features), label.to_numpy(), rounds={"value": 25})
    if manifest_edit is not None:
        manifest = manifest_edit(manifest)
    wrapped = CustomerValueModel.from_fitted(model, encoder, manifest_json=manifest.to_json(),
                                             families=dict(manifest.families))
    example = encoder.model_input(features.head(50))
    if signature_extra:
        example = example.assign(not_a_feature=1.0)
    signature = infer_signature(example, wrapped.predict_value(encoder.model_input(features.head(50))))
    return wrapped, signature, example.head(3)


@pytest.fixture(scope="module")
def registry(world, tmp_path_factory, new_mlflow_store):
    """MLFLOW_TRACKING_URI -> a fresh SQLite store holding customer-value@champion."""
    import mlflow

    store = tmp_path_factory.mktemp("mlflow")
    uri = new_mlflow_store(store)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("scoring-tests", artifact_location=(store / "artifacts").as_uri())
    model, signature, example = fit_pyfunc(world)
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=model, signature=signature,
                                       input_example=example, registered_model_name="customer-value",
                                       pip_requirements=PIP_REQUIREMENTS)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("customer-value", "champion", info.registered_model_version)
    yield {"uri": uri, "run_id": run.info.run_id, "version": str(info.registered_model_version)}
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="module")
def scored(world, registry, tmp_path_factory):
    """The champion scoring the world in 8 chunks of ~50 customers: (summary, output frame)."""
    out = tmp_path_factory.mktemp("scores") / "scores.parquet"
    summary = score_customers(world, out=out, chunk_size=50, progress=False)
    assert summary["workers"] == 1
    return summary, pd.read_parquet(out)


def whole_table_predictions(world: Path, model_uri: str) -> pd.Series:
    """What training's code path gives: every table loaded whole, features built at once."""
    model = load_scoring_model(model_uri)
    tables = load_source(world, reject_threshold=0.05).tables
    features = build_features(tables, AS_OF, model.config, families=model.families)
    values = model.pyfunc.predict(model.python_model.encoder.model_input(features))
    return pd.Series(np.asarray(values), index=features.index, name="predicted_value")


def without_scored_at(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["scored_at"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Same scores as the whole-table build, however the source is cut


def test_chunked_scores_equal_the_whole_table_build(world, registry, scored):
    summary, frame = scored
    expected = whole_table_predictions(world, "models:/customer-value@champion")
    got = frame.set_index("customer_id")["predicted_value"].sort_index()
    assert summary["chunks"] == 8
    assert got.index.is_unique
    pd.testing.assert_series_equal(got, expected.sort_index(), check_index_type=False, rtol=0, atol=0)


def test_chunk_size_and_file_format_do_not_change_the_output(world, registry, scored, tmp_path):
    _, chunked = scored
    csv_source = as_csv(world, tmp_path / "csv")
    out = tmp_path / "whole.parquet"
    summary = score_customers(csv_source, out=out, chunk_size=100_000, progress=False)
    assert summary["chunks"] == 1
    pd.testing.assert_frame_equal(without_scored_at(pd.read_parquet(out)), without_scored_at(chunked))


def test_worker_processes_give_the_same_output(world, registry, scored, tmp_path):
    _, in_process = scored
    out = tmp_path / "parallel.parquet"
    summary = score_customers(world, out=out, chunk_size=50, workers=2, progress=False)
    assert summary["workers"] == 2
    pd.testing.assert_frame_equal(without_scored_at(pd.read_parquet(out)), without_scored_at(in_process))


def test_workers_start_importing_before_the_model_loads_when_the_source_size_is_known(
        world, registry, tmp_path, monkeypatch):
    """Parquet footers give the customers' rows before anything is read, so the worker processes
    start (and import MLflow and LightGBM) while this process loads the model; a CSV source is
    counted only by reading it, so its workers start after, as does a source that cannot be read."""
    from serving.scoring import chunked
    from serving.scoring.runner import BucketRunner

    events = []
    real_load, real_warm_up = chunked.load_scoring_model, BucketRunner.warm_up
    monkeypatch.setattr(chunked, "load_scoring_model", lambda *a, **k: events.append("load") or real_load(*a, **k))
    monkeypatch.setattr(BucketRunner, "warm_up",
                        lambda self, step, *a: events.append(step.__name__) or real_warm_up(self, step, *a))
    score_customers(world, out=tmp_path / "parquet.parquet", chunk_size=50, workers=2, progress=False)
    assert events == ["ready_imports", "load", "ready_worker"]

    events.clear()
    score_customers(as_csv(world, tmp_path / "csv"), out=tmp_path / "csv.parquet", chunk_size=50, workers=2,
                    progress=False)
    assert events == ["load", "ready_worker"]
    events.clear()
    with pytest.raises(UntrustedModelError):  # a refused model starts no worker
        score_customers(world, out=tmp_path / "refused.parquet", model_uri=str(tmp_path), chunk_size=50,
                        workers=2, progress=False)
    assert events == []
    assert chunked._early_workers(tmp_path / "nowhere", None, 2, None, 50) == 1
    assert chunked._early_workers(world, None, 2, None, 100_000) == 1  # one chunk: no workers at all


def test_interactions_streamed_in_batches_and_the_graph_built_in_groups_change_nothing(
        world, registry, scored, tmp_path, monkeypatch):
    """The scorer reads the interactions in batches and builds the transition matrix one group of
    target profiles at a time from edges kept in files: the scores are those of the whole graph."""
    import serving.scoring.population_step

    _, whole = scored
    monkeypatch.setattr(serving.scoring.population_step, "INTERACTION_BATCH_ROWS", 1_000)
    monkeypatch.setattr(serving.scoring.population_step, "GRAPH_GROUP_PROFILES", 50)
    out = tmp_path / "grouped.parquet"
    summary = score_customers(world, out=out, chunk_size=50, progress=False)
    assert summary["tables"]["social_interactions"]["rows_in"] > 3_000  # several batches
    got = pd.read_parquet(out)
    # Sums over batches add floats in another order: equal to rounding, same ranks and tiers.
    pd.testing.assert_series_equal(got["predicted_value"], whole["predicted_value"], rtol=1e-9)
    pd.testing.assert_frame_equal(without_scored_at(got).drop(columns="predicted_value"),
                                  without_scored_at(whole).drop(columns="predicted_value"))


def scorer_features(monkeypatch, source: Path, out: Path, **options) -> pd.DataFrame:
    """The feature table the scorer hands the model, chunk by chunk, gathered (in this process)."""
    import serving.scoring.buckets

    seen = []

    def recording(model, features):
        seen.append(features)
        return check_model_features(model, features)

    check_model_features = serving.scoring.buckets.check_model_features
    monkeypatch.setattr(serving.scoring.buckets, "check_model_features", recording)
    summary = score_customers(source, out=out, as_of=AS_OF, progress=False, **options)
    assert summary["workers"] == 1
    return as_values(pd.concat(seen).sort_index())


def as_values(features: pd.DataFrame) -> pd.DataFrame:
    """Text features as plain values: a chunk's categorical levels are its own (the model's
    encoder maps them to training's), so only the values compare."""
    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c].dtype)
            or isinstance(features[c].dtype, pd.CategoricalDtype)]
    return features.astype(dict.fromkeys(text, "object"))


def whole_table_features(source: Path) -> pd.DataFrame:
    model = load_scoring_model("models:/customer-value@champion")
    tables = load_source(source, reject_threshold=0.05).tables
    return as_values(build_features(tables, AS_OF, model.config, families=model.families))


def test_the_scorer_features_are_the_whole_table_features(world, registry, tmp_path, monkeypatch):
    """Population-wide families streamed, routed to owners and summed per chunk: the same features
    as training's whole-table build (float sums in another order: equal to rounding)."""
    monkeypatch.setattr("serving.scoring.population_step.INTERACTION_BATCH_ROWS", 1_000)
    monkeypatch.setattr("serving.scoring.population_step.GRAPH_GROUP_PROFILES", 50)
    got = scorer_features(monkeypatch, world, tmp_path / "out.parquet", chunk_size=50)
    expected = whole_table_features(world)
    assert expected["pagerank"].notna().any() and expected["topical_share"].notna().any()
    assert (expected["referrals_made"] > 0).any()
    pd.testing.assert_frame_equal(got, expected, check_index_type=False, rtol=1e-9)


def test_a_source_without_interactions_or_referrals_gets_unknown_not_zero(world, registry, tmp_path, monkeypatch):
    """Without those tables the population-wide families are unknown (NaN), not FILL, as in training."""
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for table in ("customers", "transactions", "social_profiles"):
        shutil.copy(world / f"{table}.parquet", bare / f"{table}.parquet")
    # The model was trained with both tables: scoring without them is refused unless allowed.
    with pytest.raises(ContractError, match="trained with referrals, social_interactions, which this source lacks"):
        score_customers(bare, out=tmp_path / "refused.parquet", as_of=AS_OF, progress=False)
    assert not (tmp_path / "refused.parquet").exists()
    got = scorer_features(monkeypatch, bare, tmp_path / "bare.parquet", chunk_size=50,
                          allow_missing=("referrals", "social_interactions"))
    manifest = json.loads((tmp_path / "bare.manifest.json").read_text())
    assert manifest["missing_tables_allowed"] == ["referrals", "social_interactions"]
    expected = whole_table_features(bare)
    assert expected["referrals_made"].isna().all() and expected["pagerank"].isna().all()
    # Missing values must match exactly; numbers to rounding (sums in another order).
    pd.testing.assert_frame_equal(got, expected, check_index_type=False, rtol=1e-9)


def test_the_same_inputs_give_the_same_output_apart_from_scored_at(world, registry, scored, tmp_path):
    _, first = scored
    out = tmp_path / "again.parquet"
    score_customers(world, out=out, chunk_size=50, progress=False)
    again = pd.read_parquet(out)
    pd.testing.assert_frame_equal(without_scored_at(again), without_scored_at(first))
    assert again["scored_at"].nunique() == 1


# ---------------------------------------------------------------------------------------------
# What the output says


def test_output_is_ranked_tiered_and_names_the_registered_model(registry, scored):
    summary, frame = scored
    n = len(frame)
    assert list(frame.columns) == OUTPUT_COLUMNS
    # Written most valuable first (ties by customer_id); rank = customers valued at least as high.
    assert frame["value_rank"].is_monotonic_increasing
    order = frame.sort_values(["predicted_value", "customer_id"], ascending=[False, True])
    assert order["customer_id"].tolist() == frame["customer_id"].tolist()
    expected_rank = frame["predicted_value"].rank(method="max", ascending=False).astype("int64")
    assert frame["value_rank"].tolist() == expected_rank.tolist()
    assert frame["value_percentile"].iloc[-1] == pytest.approx(100.0 / n)
    # Each tier holds at most its share, less only by customers tied across its boundary.
    sizes = {"top_1pct": -(-n // 100), "top_10pct": -(-n // 10), "top_50pct": -(-n // 2)}
    for tier, size in sizes.items():
        assert (frame.loc[frame["value_tier"] == tier, "value_rank"] <= size).all()
        below = frame["value_rank"] <= size
        assert frame.loc[below, "value_tier"].isin(list(sizes)[: list(sizes).index(tier) + 1]).all()
    assert set(frame["model_name"]) == {"customer-value"}
    assert set(frame["model_version"]) == {registry["version"]}
    assert set(frame["model_run_id"]) == {registry["run_id"]}
    assert set(frame["model_kind"]) == {"lightgbm"}
    assert set(frame["as_of"]) == {AS_OF}
    assert set(frame["horizon_days"]) == {365}
    assert summary["as_of"] == str(AS_OF)  # defaulted to the day after the latest transaction


def test_reasons_explain_the_top_tenth_with_the_model_contributions(world, registry, scored):
    summary, frame = scored
    top = -(-len(frame) // 10)
    reasons = frame[["reason_1", "reason_2", "reason_3"]]
    assert reasons.iloc[:top]["reason_1"].notna().all()
    assert reasons.iloc[top:].isna().all().all()
    assert summary["reasons"]["rows"] == top
    assert all(re.fullmatch(r"\w+=.+: [+-]\d+\.\d\d", text) for text in reasons.iloc[:top].stack())

    # The three largest contributions (in currency) of the whole-table features of the top customer.
    model = load_scoring_model("models:/customer-value@champion")
    tables = load_source(world, reject_threshold=0.05).tables
    features = build_features(tables, AS_OF, model.config, families=model.families)
    best = frame["customer_id"].iloc[0]
    inputs = model.python_model.encoder.model_input(features.loc[[best]])
    money = model.python_model.contributions(inputs).drop(columns="baseline").iloc[0]
    largest = money.abs().sort_values(ascending=False, kind="stable").index[:3]
    for text, name in zip(reasons.iloc[0], largest):
        shown, value, effect = re.fullmatch(r"(\w+)=(.+): ([+-]\d+\.\d\d)", text).groups()
        assert shown == name
        assert float(effect) == pytest.approx(round(money[name], 2), abs=0.006)
        actual = inputs[name].iloc[0]
        if isinstance(actual, str):
            assert value == actual
        elif pd.isna(actual):
            assert value == "missing"
        else:
            assert float(value) == pytest.approx(actual, rel=1e-5)


def test_manifest_accounts_for_every_customer(scored):
    summary, frame = scored
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert manifest["scored"] == len(frame)
    assert manifest["customers_in"] == manifest["scored"] + manifest["rejected_customers"] \
        + manifest["not_yet_customers"]
    assert manifest["model"]["name"] == "customer-value"
    assert set(manifest["inputs"]) == set(TABLES)
    assert manifest["feature_manifest_hash"]
    assert manifest["tables"]["transactions"]["rows_in"] > 0
    assert verify_scores(summary["output"]) == manifest  # the scores and the manifest are one whole pair


def test_the_summary_notes_are_the_whole_table_loaders(world, scored):
    """Largest amounts kept and transactions before signup, summed over the chunks."""
    summary, _ = scored
    assert summary["notes"] == load_source(world, reject_threshold=0.05).notes
    assert summary["notes"][0].startswith("largest amounts kept: ")


# ---------------------------------------------------------------------------------------------
# Nothing lost


def test_planted_bad_rows_are_rejected_and_every_customer_is_accounted_for(world, registry, tmp_path):
    source = as_csv(world, tmp_path / "bad")
    customers = pd.read_csv(source / "customers.csv", dtype="str", keep_default_na=False)
    customers.loc[5, "signup_date"] = "31/02/2024"  # unparsable
    customers.loc[9, "customer_id"] = ""  # missing key
    customers.loc[12, "signup_date"] = "2026-03-01"  # after as_of: not yet a customer
    customers.to_csv(source / "customers.csv", index=False)
    transactions = pd.read_csv(source / "transactions.csv.gz", dtype="str", keep_default_na=False)
    transactions.loc[3, "customer_id"] = "NOBODY"
    transactions.loc[4, "amount"] = "12.50 per unit"  # a number in no style: rejected as unparsable
    transactions.to_csv(source / "transactions.csv.gz", index=False)
    interactions = pd.read_csv(source / "social_interactions.csv", dtype="str", keep_default_na=False)
    interactions.loc[2, "target_profile_id"] = "NO-SUCH-PROFILE"
    interactions.loc[7, "source_profile_id"] = ""  # missing: only the non-null rule names it
    interactions.loc[11, "source_profile_id"] = f" {interactions.loc[11, 'source_profile_id']} "  # padded: kept
    interactions.to_csv(source / "social_interactions.csv", index=False)

    out = tmp_path / "scores.parquet"
    summary = score_customers(source, out=out, as_of=AS_OF, chunk_size=60, progress=False,
                              reject_threshold=0.05)
    frame = pd.read_parquet(out)
    assert summary["customers_in"] == 400
    assert summary["rejected_customers"] == 2
    assert summary["not_yet_customers"] == 1
    assert summary["scored"] == len(frame) == 397
    assert customers.loc[12, "customer_id"] not in set(frame["customer_id"])
    assert customers.loc[5, "customer_id"] not in set(frame["customer_id"])

    # The rejects are exactly those of the whole-table loader, with source row numbers.
    expected = load_source(source, reject_threshold=0.05).rejects
    rejects = Path(summary["output"]).with_name("scores.rejects")
    assert sorted(p.stem for p in rejects.glob("*.csv")) == sorted(expected)
    for table, rows in expected.items():
        got = pd.read_csv(rejects / f"{table}.csv", dtype="str", keep_default_na=False, na_values=[""])
        want = rows.astype("str").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
    got = pd.read_csv(rejects / "social_interactions.csv", dtype="str")
    assert got["row"].tolist() == ["2", "7"]
    assert got["reason"].tolist() == ["target_profile_id refers to an unknown profile 'NO-SUCH-PROFILE'",
                                      "missing source_profile_id"]
    got = pd.read_csv(rejects / "customers.csv", dtype="str")
    assert got["row"].tolist() == ["5", "9"]
    assert "unparsable signup_date" in got["reason"].iloc[0]
    assert got["reason"].iloc[1] == "missing customer_id"


def with_bad_referrals_and_interactions(world: Path, target: Path) -> Path:
    """The world as CSV with rejected rows planted in the referrals and the interactions."""
    source = as_csv(world, target)
    referrals = pd.read_csv(source / "referrals.csv", dtype="str", keep_default_na=False)
    referrals.loc[1, "referrer_id"] = "NOBODY"  # an unknown customer
    referrals.loc[4, "timestamp"] = "yesterday"  # unparsable
    referrals.loc[6, "referred_id"] = ""  # missing
    referrals.to_csv(source / "referrals.csv", index=False)
    interactions = pd.read_csv(source / "social_interactions.csv", dtype="str", keep_default_na=False)
    interactions.loc[2, "target_profile_id"] = "NO-SUCH-PROFILE"
    interactions.to_csv(source / "social_interactions.csv", index=False)
    return source


def score_recording(monkeypatch, source: Path, out: Path, workers: int) -> dict:
    """score_customers with what the population step handed the chunks (read in this process): each
    bucket's precomputed frames and the btyd fit's parameters; and whether the referral and btyd
    tasks went to the worker pool."""
    from serving.scoring import chunked

    seen = {}
    start, compute, score = chunked.start_worker_families, chunked.compute_population, chunked._Run.score

    def recording_start(run, runner, *args):
        handle = start(run, runner, *args)
        seen["in_workers"] = [p.futures is not None for p in (handle.referral, handle.btyd)]
        return handle

    def recording_compute(run, *args):
        compute(run, *args)
        seen["population"] = [pd.read_pickle(run.ctx.population_path(b)) for b in range(run.buckets)]

    def recording_score(run, *args):
        seen["btyd"] = pd.read_pickle(run.ctx.btyd_fit_path()).params  # the workers' fit, waited for
        return score(run, *args)

    with monkeypatch.context() as patch:
        patch.setattr(chunked, "start_worker_families", recording_start)
        patch.setattr(chunked, "compute_population", recording_compute)
        patch.setattr(chunked._Run, "score", recording_score)
        seen["summary"] = score_customers(source, out=out, as_of=AS_OF, chunk_size=60, workers=workers,
                                          progress=False, reject_threshold=0.5)
    seen["scores"] = without_scored_at(pd.read_parquet(out))
    rejects = out.with_name(f"{out.stem}.rejects")
    seen["rejects"] = {p.name: p.read_bytes() for p in sorted(rejects.glob("*.csv"))}
    return seen


def test_referrals_and_the_btyd_fit_in_the_workers_are_those_of_a_run_without_workers(
        world, registry, tmp_path, monkeypatch):
    """With workers, the referral family and the btyd fit run in the worker pool beside the main
    process's interaction pass: the same rows of every family, the same fit, the same rejects (rows,
    order, files) and summary as in one process."""
    source = with_bad_referrals_and_interactions(world, tmp_path / "bad")
    alone = score_recording(monkeypatch, source, tmp_path / "alone" / "scores.parquet", workers=1)
    pooled = score_recording(monkeypatch, source, tmp_path / "pooled" / "scores.parquet", workers=2)
    assert alone["in_workers"] == [False, False] and pooled["in_workers"] == [True, True]
    assert pooled["summary"]["workers"] == 2
    assert alone["btyd"] and pooled["btyd"] == alone["btyd"]
    assert len(pooled["population"]) == len(alone["population"]) == n_buckets(400, 60)
    for got, want in zip(pooled["population"], alone["population"], strict=True):
        assert list(got) == list(want) and "referral" in got
        for name in want:
            pd.testing.assert_frame_equal(got[name], want[name], rtol=0, atol=0)
            assert got[name].attrs == want[name].attrs
    assert sum(len(p["referral"]) for p in pooled["population"]) > 0
    pd.testing.assert_frame_equal(pooled["scores"], alone["scores"])
    assert pooled["summary"]["tables"] == alone["summary"]["tables"]
    assert list(pooled["summary"]["tables"]) == ["customers", "transactions", "social_profiles", "referrals",
                                                 "social_interactions"]  # the order the checks ran in, one process
    assert pooled["summary"]["tables"]["referrals"]["rows_rejected"] == 3
    assert pooled["rejects"] == alone["rejects"] and "referrals.csv" in pooled["rejects"]
    # ... and those of the whole-table loader.
    expected = load_source(source, reject_threshold=0.5).rejects["referrals"]
    got = pd.read_csv(tmp_path / "pooled" / "scores.rejects" / "referrals.csv", dtype="str",
                      keep_default_na=False, na_values=[""])
    pd.testing.assert_frame_equal(got, expected.astype("str").reset_index(drop=True), check_dtype=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_too_many_invalid_referrals_stop_the_run_whether_or_not_in_a_worker(world, registry, tmp_path, workers):
    """The referrals are checked in a worker, beside the interactions: their error still stops the
    run, and still comes first when the interactions are as bad."""
    source = as_csv(world, tmp_path / "bad")
    for table, column in (("referrals", "referrer_id"), ("social_interactions", "target_profile_id")):
        frame = pd.read_csv(source / f"{table}.csv", dtype="str", keep_default_na=False)
        frame.loc[: len(frame) // 5, column] = "NOBODY"
        frame.to_csv(source / f"{table}.csv", index=False)
    out = tmp_path / "scores.parquet"
    with pytest.raises(ContractError, match=r"^referrals: .* rows .* are invalid, more than the reject threshold"):
        score_customers(source, out=out, as_of=AS_OF, chunk_size=60, workers=workers, progress=False,
                        reject_threshold=0.05)
    assert list(tmp_path.glob("scores*")) == []


def test_too_many_invalid_rows_stop_the_run_before_anything_is_written(world, registry, tmp_path):
    source = as_csv(world, tmp_path / "bad")
    transactions = pd.read_csv(source / "transactions.csv.gz", dtype="str", keep_default_na=False)
    transactions.loc[: len(transactions) // 10, "amount"] = "n/a"
    transactions.to_csv(source / "transactions.csv.gz", index=False)
    out = tmp_path / "scores.parquet"
    with pytest.raises(Exception, match=r"transactions: .* rows .* are invalid, more than the reject threshold"):
        score_customers(source, out=out, chunk_size=60, progress=False)
    assert list(tmp_path.glob("scores*")) == []
    assert list(tmp_path.glob(".scores*")) == []


def _quantity_only_for(source: Path, values: dict[str, str]) -> pd.DataFrame:
    """Blank every transaction's quantity except those of the given customers (id -> raw text)."""
    transactions = pd.read_csv(source / "transactions.csv.gz", dtype="str", keep_default_na=False)
    transactions["quantity"] = ""
    for customer, text in values.items():
        transactions.loc[transactions["customer_id"] == customer, "quantity"] = text
    transactions.to_csv(source / "transactions.csv.gz", index=False)
    return transactions


def _customers_in_two_buckets(source: Path, buckets: int) -> tuple[str, str]:
    ids = pd.read_csv(source / "customers.csv", dtype="str")["customer_id"]
    where = bucket_of(ids, buckets)
    first = ids.iloc[0]
    second = ids[where != where[0]].iloc[0]
    return first, second


def test_a_column_is_judged_on_the_whole_table_not_on_one_chunk(world, registry, tmp_path):
    """One chunk's quantities are all unparsable while another chunk's parse: as for the whole
    table, those rows are rejected and the run goes on."""
    source = as_csv(world, tmp_path / "bad")
    garbled, fine = _customers_in_two_buckets(source, n_buckets(400, 60))
    _quantity_only_for(source, {garbled: "lots", fine: "2"})
    out = tmp_path / "scores.parquet"
    summary = score_customers(source, out=out, as_of=AS_OF, chunk_size=60, progress=False,
                              reject_threshold=0.05)
    expected = load_source(source, reject_threshold=0.05).rejects["transactions"]
    got = pd.read_csv(out.with_name("scores.rejects") / "transactions.csv", dtype="str",
                      keep_default_na=False, na_values=[""])
    pd.testing.assert_frame_equal(got, expected.astype("str").reset_index(drop=True), check_dtype=False)
    assert len(got) and set(got["customer_id"]) == {garbled}
    assert summary["scored"] == 400


def test_a_column_that_parses_nowhere_stops_the_run_as_the_loader_does(world, registry, tmp_path):
    source = as_csv(world, tmp_path / "bad")
    garbled, other = _customers_in_two_buckets(source, n_buckets(400, 60))
    _quantity_only_for(source, {garbled: "lots", other: "a few"})
    with pytest.raises(ContractError) as loader:
        load_source(source, reject_threshold=0.05)
    out = tmp_path / "scores.parquet"
    with pytest.raises(ContractError) as scorer:
        score_customers(source, out=out, as_of=AS_OF, chunk_size=60, progress=False, reject_threshold=0.05)
    assert "transactions: column 'quantity' cannot be parsed as number at all" in str(scorer.value)
    assert str(scorer.value) == str(loader.value)
    assert list(tmp_path.glob("scores*")) == []


# ---------------------------------------------------------------------------------------------
# Atomic


def test_a_killed_run_leaves_the_previous_output_intact(world, big_world, registry, tmp_path):
    out = tmp_path / "scores.parquet"
    score_customers(world, out=out, chunk_size=50, progress=False, reasons_for="none")
    before = out.read_bytes()
    manifest_before = out.with_name("scores.manifest.json").read_bytes()

    code = ("from serving.scoring.chunked import score_customers; "
            f"score_customers({str(big_world)!r}, out={str(out)!r}, chunk_size=500, reasons_for='all', progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob(f"{WORK_FOLDER}/*/scores.parquet")):  # the output being written
            assert proc.poll() is None, "the run ended before its output was being written"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert out.read_bytes() == before
    assert out.with_name("scores.manifest.json").read_bytes() == manifest_before
    assert verify_scores(out)["output_sha256"]  # the previous pair, still whole
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert left == [WORK_FOLDER]  # everything the killed run wrote is in its work directory

    score_customers(world, out=out, chunk_size=50, progress=False, reasons_for="none")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert pd.read_parquet(out)["value_rank"].iloc[0] == 1


def test_a_scorer_killed_mid_run_leaves_no_worker_and_no_work_directory_after_the_next_run(
        world, big_world, registry, tmp_path, monkeypatch):
    """SIGKILL gives the scorer no chance to clean up: its workers die with it (they watch it), and
    the next run into the folder deletes its work directory though it writes another output, and its
    fork server's folder in the system's temporary directory."""
    scores = tmp_path / "scores"
    scores.mkdir()
    temporary = Path(tempfile.mkdtemp(prefix="kill-"))  # the session's: short enough for a socket's path
    code = ("from serving.scoring.chunked import score_customers; "
            f"score_customers({str(big_world)!r}, out={str(scores / 'killed.parquet')!r}, chunk_size=300, workers=2, "
            "reasons_for='all', progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(temporary)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:  # mid-run: both workers started, the work directory in use
            assert proc.poll() is None, "the run ended before its workers were busy"
            assert time.monotonic() < deadline, "the workers never started"
            family = psutil.Process(proc.pid).children(recursive=True)
            server = [c for c in family if "multiprocessing.forkserver" in " ".join(_cmdline(c))]
            workers = [c for c in family if server and c.ppid() == server[0].pid]  # forked from it
            if len(workers) == 2 and list(scores.glob(f"{WORK_FOLDER}/*-{proc.pid}-*")):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    deadline = time.monotonic() + 60  # at once for a busy worker; a starting one, once started
    while survivors := [c.pid for c in family if _running(c)]:
        assert time.monotonic() < deadline, f"processes of the killed scorer still running: {survivors}"
        time.sleep(0.05)
    assert list(scores.glob(f"{WORK_FOLDER}/*-{proc.pid}-*"))  # left behind, until the next run
    assert [p.name.split("-")[3] for p in temporary.iterdir()] == [str(proc.pid)]  # clv-mp-HOST-PID-TOKEN

    monkeypatch.setattr(tempfile, "tempdir", str(temporary))  # the next run's system temporary directory
    score_customers(world, out=scores / "next.parquet", chunk_size=50, progress=False, reasons_for="none")
    assert [p.name for p in scores.iterdir() if p.name.startswith(".")] == []
    assert verify_scores(scores / "next.parquet")["scored"] > 0
    assert list(temporary.iterdir()) == []
    temporary.rmdir()


@pytest.mark.parametrize("moment", ["workers starting", "workers busy"])
def test_a_scorer_told_to_stop_stops_its_workers_cleans_up_and_says_so(world, big_world, registry, tmp_path,
                                                                        moment):
    """SIGTERM (a scheduler's timeout), whether the workers are still starting (the fork server
    importing) or busy with chunks: the scorer stops them at once, removes its work directory and
    temporary folders, publishes nothing, and ends with one line (no traceback from any process)
    and exit code 143; no process of the run is left."""
    temporary = Path(tempfile.mkdtemp(prefix="stop-"))  # the session's: short enough for a socket's path
    out = tmp_path / "scores"
    out.mkdir()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("clv")), "score", "--data", str(big_world),
                             "--out", str(out / "scores.parquet"), "--workers", "2", "--chunk-size", "300",
                             "--reasons-for", "all"], env={**os.environ, "TMPDIR": str(temporary)},
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        scorer = psutil.Process(proc.pid)
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"the run ended before the moment ({moment}) came: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"never came: {moment}"
            family = scorer.children(recursive=True)
            server = [c for c in family if "multiprocessing.forkserver" in " ".join(_cmdline(c))]
            workers = [c for c in family if server and c.ppid() == server[0].pid]
            if moment == "workers starting" and server and not workers:  # the server is importing
                break
            if moment == "workers busy" and len(workers) == 2 and list(out.glob(f"{WORK_FOLDER}/*/typed-*")):
                break  # validating the customers' chunks
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()

    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "error: stopped by SIGTERM before it finished (outputs are published whole or not at all)")
    deadline = time.monotonic() + 30
    while survivors := [c.pid for c in family if _running(c)]:
        assert time.monotonic() < deadline, f"processes of the stopped run still running: {survivors}"
        time.sleep(0.05)
    assert list(out.iterdir()) == []  # nothing published, no work directory
    assert list(temporary.iterdir()) == []  # the fork server's folder removed too
    temporary.rmdir()


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # gone, or a zombie whose command line cannot be read
        return []


def _running(process) -> bool:
    """Still running (a zombie, dead but not yet reaped by whoever inherited it, is not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ---------------------------------------------------------------------------------------------
# No training/serving skew


def _saved(model_and_signature, path: Path) -> str:
    """A model folder outside the store: scoring it needs trust_model_from (a folder above it)."""
    import mlflow.pyfunc

    model, signature, example = model_and_signature
    mlflow.pyfunc.save_model(path, python_model=model, signature=signature, input_example=example,
                             pip_requirements=PIP_REQUIREMENTS)
    return str(path)


def _edited(manifest: FeatureManifest, **changes) -> FeatureManifest:
    fields = json.loads(manifest.to_json())
    fields.update(changes, manifest_hash="")
    return FeatureManifest(**fields)


def test_a_model_built_by_other_feature_code_is_refused(world, registry, tmp_path):
    path = _saved(fit_pyfunc(world, manifest_edit=lambda m: _edited(m, code_hash="0" * 64)), tmp_path / "m")
    out = tmp_path / "scores.parquet"
    with pytest.raises(ScoringSkewError, match="different feature code"):
        score_customers(world, out=out, model_uri=path, trust_model_from=tmp_path, progress=False)
    assert not out.exists()


def test_a_model_expecting_other_features_is_refused(world, registry, tmp_path):
    def rename(manifest: FeatureManifest) -> FeatureManifest:
        features = ["spend_366d" if f == "spend_365d" else f for f in manifest.features]
        families = {("spend_366d" if f == "spend_365d" else f): v for f, v in manifest.families.items()}
        dtypes = {("spend_366d" if f == "spend_365d" else f): v for f, v in manifest.dtypes.items()}
        return _edited(manifest, features=features, families=families, dtypes=dtypes)

    path = _saved(fit_pyfunc(world, manifest_edit=rename), tmp_path / "m")
    with pytest.raises(ScoringSkewError, match=r"missing features: \['spend_366d'\]"):
        score_customers(world, out=tmp_path / "scores.parquet", model_uri=path, trust_model_from=tmp_path, progress=False)
    assert not (tmp_path / "scores.parquet").exists()


def test_the_model_signature_is_enforced(world, registry, tmp_path):
    path = _saved(fit_pyfunc(world, signature_extra=True), tmp_path / "m")
    with pytest.raises(Exception, match="not_a_feature"):
        score_customers(world, out=tmp_path / "scores.parquet", model_uri=path, trust_model_from=tmp_path, progress=False)
    assert not (tmp_path / "scores.parquet").exists()


def test_a_model_logged_with_other_package_versions_scores_with_one_warning_line_naming_them(
        world, registry, tmp_path):
    """Not refused (the features are the same) but not silent: `clv score` says which packages
    differ from those the model was logged with, in one line naming the model."""
    path = Path(_saved(fit_pyfunc(world), tmp_path / "m"))
    requirements = path / "requirements.txt"
    requirements.write_text(requirements.read_text().rstrip("\n") + "\nlightgbm==0.0.1\n")
    result = run_clv(["score", "--data", str(world), "--out", str(tmp_path / "scores.parquet"),
                      "--model", str(path), "--trust-model-from", str(tmp_path), "--as-of", "2026-01-01"],
                     env=dict(os.environ), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "ModelEnvironmentWarning" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "another environment" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"warning: model {path} was logged in another environment: lightgbm (installed ")
    assert "required ==0.0.1)" in lines[0]
    assert verify_scores(tmp_path / "scores.parquet")["scored"] > 0


# ---------------------------------------------------------------------------------------------
# A database source


@pytest.mark.slow
def test_a_postgresql_source_scores_like_its_files(world, registry, scored, postgres_url, tmp_path):
    from features.ingest.database_load import load_source_to_database

    _, from_files = scored
    load_source_to_database(world, postgres_url)
    out = tmp_path / "scores.parquet"
    summary = score_customers(postgres_url, out=out, chunk_size=50, progress=False)
    pd.testing.assert_frame_equal(without_scored_at(pd.read_parquet(out)), without_scored_at(from_files))
    assert summary["scored"] == len(from_files)


def as_styled_export(source: Path, target: Path) -> Path:
    """The source as a CRM export writes it: customer ids as zero-padded digits, amounts and margins
    as ``$1,380.19``, quantities as ``1,000``-style text."""
    as_csv(source, target)
    digits = {f"C{n:07d}": f"{n:07d}" for n in range(100_000)}
    for table, columns in {"customers": ["customer_id"], "social_profiles": ["customer_id"],
                           "transactions": ["customer_id"], "referrals": ["referrer_id", "referred_id"]}.items():
        name = f"{table}.csv.gz" if table == "transactions" else f"{table}.csv"
        frame = pd.read_csv(target / name, dtype="str", keep_default_na=False)
        for column in columns:
            frame[column] = frame[column].map(lambda v: digits.get(v, v))
        if table == "transactions":
            for column in ("amount", "margin"):
                if column in frame:
                    values = pd.to_numeric(frame[column])
                    frame[column] = [f"-${-v:,.2f}" if v < 0 else f"${v:,.2f}" for v in values]
        frame.to_csv(target / name, index=False)
    return target


def test_an_export_with_zero_padded_ids_and_dollar_amounts_scores_like_its_plain_copy(world, registry, tmp_path):
    """Ids are text from the file to the scores ('0000007' stays '0000007'); '$1,380.19' is read as
    1380.19 in every chunk, so the predictions are those of the plain copy."""
    plain = as_csv(world, tmp_path / "plain")
    styled = as_styled_export(world, tmp_path / "styled")
    assert pd.read_csv(styled / "transactions.csv.gz", dtype="str")["amount"].str.contains(r"^-?\$\d{1,3}(?:,\d{3})+\.").any()
    score_customers(plain, out=tmp_path / "plain.parquet", chunk_size=50, progress=False)
    score_customers(styled, out=tmp_path / "styled.parquet", chunk_size=50, progress=False)
    expected = pd.read_parquet(tmp_path / "plain.parquet")
    got = pd.read_parquet(tmp_path / "styled.parquet")
    assert got["customer_id"].str.fullmatch(r"\d{7}").all()
    assert got["customer_id"].tolist() == [cid[1:] for cid in expected["customer_id"]]
    np.testing.assert_allclose(got["predicted_value"], expected["predicted_value"], rtol=1e-12)
    assert got["value_tier"].tolist() == expected["value_tier"].tolist()


def test_ids_written_differently_per_table_are_named_with_the_normalisation_that_would_match(
        world, registry, tmp_path):
    """The chunked scorer checks transactions bucket by bucket, yet names the unknown ids against every
    customer, as the whole-table loader does."""
    styled = as_styled_export(world, tmp_path / "styled")
    tx = pd.read_csv(styled / "transactions.csv.gz", dtype="str", keep_default_na=False)
    tx["customer_id"] = tx["customer_id"].str.lstrip("0")  # '7' where customers say '0000007'
    tx.to_csv(styled / "transactions.csv.gz", index=False)
    with pytest.raises(ContractError, match=r"customer_id values not in customers: '\d+'.* the customers table "
                                            r"writes ids like '\d{7}'.*leading zeros, a trailing \.0 and blanks"):
        score_customers(styled, out=tmp_path / "scores.parquet", chunk_size=50, progress=False)
    assert not (tmp_path / "scores.parquet").exists()


def test_a_source_without_an_optional_column_the_model_was_trained_with_is_refused_unless_allowed(
        world, registry, tmp_path):
    model, signature, example = fit_pyfunc(world)
    model.source_columns = {"transactions": ["category", "channel"]}  # as training records them
    path = _saved((model, signature, example), tmp_path / "m")
    source = as_csv(world, tmp_path / "csv")
    tx = pd.read_csv(source / "transactions.csv.gz", dtype="str", keep_default_na=False)
    tx.drop(columns=["category"]).to_csv(source / "transactions.csv.gz", index=False)
    out = tmp_path / "scores.parquet"
    with pytest.raises(ContractError, match=r"trained with column transactions\.category, which this source lacks"):
        score_customers(source, out=out, model_uri=path, trust_model_from=tmp_path, progress=False)
    assert not out.exists()
    summary = score_customers(source, out=out, model_uri=path, trust_model_from=tmp_path, progress=False,
                              allow_missing=("transactions.category",))
    assert summary["missing_tables_allowed"] == ["transactions.category"]
    assert json.loads((tmp_path / "scores.manifest.json").read_text())["missing_tables_allowed"] == [
        "transactions.category"]


def test_a_date_before_anyone_signed_up_is_an_error_not_an_empty_file(world, registry, tmp_path):
    out = tmp_path / "scores.parquet"
    with pytest.raises(ContractError, match=r"no customer had signed up before as_of 1990-01-01 \(400 not yet"):
        score_customers(world, out=out, as_of=pd.Timestamp("1990-01-01"), progress=False)
    assert not out.exists() and not list(tmp_path.iterdir())
