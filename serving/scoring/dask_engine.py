"""Batch scoring on Dask: ``score_customers`` with chunks as partitions of a cluster.

Same model, features, ranking, reasons, output and manifest as serving.scoring.chunked (the shared
parts are serving.scoring.core); the difference is where it runs:

1. The source is read, validated and partitioned by customer on the cluster
   (features.dask_engine.source.load_source_dask); population-wide families are computed once per
   run and joined to each partition (features.dask_engine.features).
2. Each partition builds its features with build_features and predicts with the pyfunc, loaded once
   per worker process (``worker_model``, cached by model and tracking URI; the client pins an alias
   such as @champion to its version first, so every worker scores with the same model).
3. The client gathers only (customer_id, predicted_value) to rank the whole base (value_ranks),
   sends each partition its ranks, and workers add reasons and write one Parquet part each into a
   folder in the run's work directory (serving.scoring.work_dir), which replaces the output folder
   in one atomic exchange at the end (the output path is never missing); then the JSON manifest,
   naming the folder's checksum (serving.scoring.publish).

Nothing is lost: customers in = scored + not yet customers (signed up on or after as_of) +
rejected, checked before anything is published; rejected rows go to OUT_STEM.rejects/.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.build import build_features
from features.dask_engine.cluster import cluster
from features.dask_engine.features import bucket_tables, population_dask
from features.dask_engine.read import source_files
from features.dask_engine.source import load_source_dask
from features.ingest.mapping import as_mapping
from features.ingest.partition import count_rows, n_buckets, table_columns
from features.ingest.source import write_rejects
from features.run_request import check_cutoff, default_as_of
from serving.scoring import core
from serving.scoring.model import (
    DEFAULT_MODEL_URI,
    MODEL_FILES,
    ScoringModel,
    check_model_features,
    load_scoring_model,
)
from serving.scoring.publish import publish_scores
from serving.scoring.tiers import ranked_order, value_ranks
from serving.scoring.tracked_run import track_and_check
from serving.scoring.work_dir import (
    make_work_directory,
    release_work_directory,
    remove_dead_work_directories,
)
from training import tracking
from training.model_source import parse_model_uri

_MODELS: dict[tuple[str, str, str | None], ScoringModel] = {}
_MODELS_LOCK = threading.Lock()


def worker_model(model_uri: str, tracking_uri: str, trust_model_from: str | None = None) -> ScoringModel:
    """The scoring model, loaded once per worker process (and kept for later runs of the same URI)."""
    key = (tracking_uri, model_uri, trust_model_from)
    with _MODELS_LOCK:
        if key not in _MODELS:
            os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
            model = load_scoring_model(model_uri, trust_model_from=trust_model_from)
            model.close()  # loaded: the worker needs its downloaded files no more
            _MODELS[key] = model
        return _MODELS[key]


def pinned_uri(model: ScoringModel) -> str:
    """A URI that names exactly the loaded version (an alias may move while workers load it)."""
    if model.version is not None and parse_model_uri(model.uri) is not None:
        return f"models:/{model.name}/{model.version}"
    return model.uri


# ---------------------------------------------------------------------------------------------
# Tasks run on the workers


def _score_bucket(customers, transactions, social, social_columns, precomputed, as_of, model_uri,
                  tracking_uri, keep_inputs: bool, trust_model_from: str | None = None) -> dict:
    """One partition: features, skew check, predictions; the model input kept for reasons."""
    model = worker_model(model_uri, tracking_uri, trust_model_from)
    start = time.perf_counter()
    tables = bucket_tables(customers, transactions, social, social_columns)
    features = build_features(tables, as_of, model.config, families=model.families, precomputed=precomputed)
    check_model_features(model, features)
    encoder = model.python_model.encoder
    inputs = encoder.model_input(features)
    feature_seconds = time.perf_counter() - start
    unseen = Counter()
    for name, levels in encoder.levels.items():
        count = int((inputs[name].notna() & ~inputs[name].isin(list(levels))).sum())
        if count:
            unseen[name] += count
    start = time.perf_counter()
    values = (np.asarray(model.pyfunc.predict(inputs), dtype="float64") if len(inputs)
              else np.array([], dtype="float64"))
    predict_seconds = time.perf_counter() - start
    return {
        "not_yet": int((customers["signup_date"] >= as_of).sum()),
        "ids": pa.array(features.index.array, type=pa.string()),
        "values": values,
        "extras": core.customer_extras(model, inputs, values),
        "drift": core.drift_counts(model, inputs, values),
        "inputs": inputs.reset_index(drop=True) if keep_inputs else None,
        "unseen": unseen,
        "feature_seconds": feature_seconds,
        "predict_seconds": predict_seconds,
    }


def _ids_values(scored: dict) -> tuple[pa.Array, np.ndarray]:
    return scored["ids"], scored["values"]


def _stats(scored: dict) -> dict:
    return {k: scored[k] for k in ("not_yet", "unseen", "feature_seconds", "predict_seconds", "drift")}


def _write_bucket(scored: dict, ranked: pd.DataFrame, cut: int, reasons: int, directory: str, b: int,
                  constants: dict, model_uri: str, tracking_uri: str,
                  trust_model_from: str | None = None) -> dict:
    """One Parquet part: the partition's rows sorted by value_rank, with reasons for rank <= cut."""
    rank = ranked["value_rank"].to_numpy()
    model = worker_model(model_uri, tracking_uri, trust_model_from)
    found = core.partition_reasons(model, scored["inputs"], rank, cut, reasons)
    columns = core.output_columns(scored["ids"], scored["values"], ranked, scored["extras"], found.columns)
    schema = core.output_schema(reasons, constants)
    pq.write_table(core.output_table(columns, ranked_order(scored["ids"], rank), constants, schema),
                   Path(directory) / f"part-{b:05d}.parquet")
    return {"rows": len(rank), "reasons_rows": found.rows, "reasons_seconds": found.seconds,
            "tiers": core.tier_counts(ranked["value_tier"])}


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---------------------------------------------------------------------------------------------
# The run


def score_customers_dask(data, *, out, as_of: pd.Timestamp | None = None, model_uri: str = DEFAULT_MODEL_URI,
                         reasons: int = 3, reasons_for: str = "top10", chunk_size: int = 100_000,
                         scheduler=None, rejects=None, reject_threshold: float | None = None,
                         model: ScoringModel | None = None, allow_missing=(), decimal: str | None = None,
                         max_amount: float | None = None, mapping=None, trust_model_from=None,
                         currency: str | None = None, drift_threshold: float | None = None,
                         fail_on_drift: bool = False, track: bool = True) -> dict:
    """score_customers on a Dask cluster; ``out`` becomes a partitioned Parquet dataset (a folder).

    Same arguments and manifest as serving.scoring.chunked.score_customers, plus ``scheduler``
    (``tcp://host:8786``, a distributed.Client, or None for a local cluster sized to the machine).
    ``chunk_size`` is the number of customers per partition (at least one partition per worker).
    ``out``, the rejects folder and the source must be on storage the workers share, and the
    MLflow tracking URI (MLFLOW_TRACKING_URI) reachable from them; a trusted local model
    (``trust_model_from``) must be at the same path on every worker.
    """
    started = time.perf_counter()
    scored_at = pd.Timestamp.now(tz="UTC").tz_localize(None).as_unit("ns")
    core.check_options(reasons, reasons_for, chunk_size, drift_threshold, currency)
    if as_of is not None:
        check_cutoff(as_of)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    core.remove_stale_temporaries(out)
    remove_dead_work_directories(out)
    work = make_work_directory(out)  # on storage the workers share, as ``out`` is
    tmp = work / out.name  # the parts, until the folder is published whole
    tmp.mkdir()
    try:
        # The model's files go into the work directory: removed with it, even after a kill.
        model = model if model is not None else load_scoring_model(
            model_uri, trust_model_from=trust_model_from, files_in=work / MODEL_FILES)
        trusted = None if trust_model_from is None else str(Path(trust_model_from).expanduser().resolve())
        threshold = model.config.reject_threshold if reject_threshold is None else float(reject_threshold)
        worker_uri, tracking_uri = pinned_uri(model), tracking.tracking_uri()
        stage: dict[str, float] = {}
        with cluster(scheduler) as client:
            workers = max(1, len(client.scheduler_info()["workers"]))
            start = time.perf_counter()
            mapping = as_mapping(mapping)
            files = source_files(data, mapping)
            missing = core.check_model_tables(model, set(files), allow_missing)
            missing += core.check_model_columns(
                model, {t: table_columns(p, mapping.renaming(t)) for t, p in files.items()}, allow_missing)
            buckets = max(workers, n_buckets(count_rows(files["customers"]), chunk_size))
            cs = load_source_dask(data, client, buckets=buckets, reject_threshold=threshold,
                                  rules=core.export_rules(model, decimal, max_amount), mapping=mapping)
            stage["load_validate_partition"] = time.perf_counter() - start
            as_of = as_of if as_of is not None else default_as_of(cs.last_tx)

            start = time.perf_counter()
            population = population_dask(cs, as_of, model.config, model.families)
            cs.release_population_inputs()
            keep_inputs = reasons > 0 and reasons_for != "none"
            scored = [client.submit(_score_bucket, *cs.bucket_tables(b), cs.social_columns, population[b], as_of,
                                    worker_uri, tracking_uri, keep_inputs, trusted) for b in range(cs.buckets)]
            pairs = client.gather([client.submit(_ids_values, s) for s in scored])
            stats = client.gather([client.submit(_stats, s) for s in scored])
            del population
            cs.release()  # the reasons need only the kept model inputs
            stage["features_predict"] = time.perf_counter() - start

            # Ranks need the whole base: two columns per customer meet on the client.
            start = time.perf_counter()
            sizes = [len(values) for _, values in pairs]
            ids = pa.chunked_array([i for i, _ in pairs], type=pa.string()).combine_chunks()
            values = np.concatenate([v for _, v in pairs]) if pairs else np.array([], dtype="float64")
            n = len(values)
            tables = _tables(cs.summary)
            not_yet = int(sum(st["not_yet"] for st in stats))
            core.check_run(tables, n, not_yet, as_of)  # before anything is written
            ranked = value_ranks(ids, values)
            economics = core.tier_economics(values, ranked["value_tier"].to_numpy(dtype=object))
            cut = core.reason_cut(n, reasons, reasons_for)
            constants = core.lineage(model, as_of, scored_at)
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype("int64")
            written = client.gather([
                client.submit(_write_bucket, s, ranked.iloc[offsets[b]: offsets[b + 1]].reset_index(drop=True),
                              cut, reasons, str(tmp), b, constants, worker_uri, tracking_uri, trusted)
                for b, s in enumerate(scored)])
            del pairs
            stage["rank_reasons_write"] = time.perf_counter() - start
            worker_peaks = client.run(_peak_rss_mb)
            del scored
        published = write_rejects(cs.rejects, Path(rejects) if rejects is not None else core.rejects_path(out))
        tiers: Counter = Counter()
        unseen: Counter = Counter()
        for w in written:
            tiers.update(w["tiers"])
        for st in stats:
            unseen.update(st["unseen"])
        manifest = core.scoring_manifest(core.ScoredRun(
            out=out, model=model, tables=tables, scored=n, not_yet=not_yet, tiers=core.tier_counts(tiers),
            as_of=as_of, scored_at=scored_at, rejects=published, fingerprint=cs.fingerprint, chunks=cs.buckets,
            chunk_size=chunk_size, reasons=reasons, reasons_for=reasons_for,
            reasons_rows=int(sum(w["reasons_rows"] for w in written)),
            reasons_seconds=float(sum(w["reasons_seconds"] for w in written)), unseen_levels=unseen,
            features_seconds=sum(st["feature_seconds"] for st in stats),
            predict_seconds=sum(st["predict_seconds"] for st in stats), missing_tables=missing,
            notes=cs.notes, economics=economics, currency=core.currency_of(model, currency),
            drift=core.drift_of(model, [st["drift"] for st in stats], drift_threshold)))
        seconds = time.perf_counter() - started
        manifest.update({
            "engine": "dask",
            "seconds": round(seconds, 3),
            "customers_per_second": round(n / seconds, 1) if seconds else None,
            "stage_seconds": {k: round(v, 3) for k, v in stage.items()},
            "load_seconds": cs.seconds,
            "workers": len(worker_peaks),
            "worker_peak_rss_mb": worker_peaks,
        })
        track_and_check(manifest, model, track=track, fail_on_drift=fail_on_drift)
        return publish_scores(tmp, out, manifest)
    finally:
        release_work_directory(work)


def _tables(summary: pd.DataFrame) -> dict:
    """The load summary as the manifest's per-table counts."""
    return {row["table"]: {"rows_in": int(row["rows_in"]), "rows_kept": int(row["rows_kept"]),
                           "rows_rejected": int(row["rows_rejected"]), "top_reason": row["top_reason"]}
            for row in summary.to_dict("records")}
