"""Batch scoring on Dask: ``score_customers`` with chunks as partitions of a cluster.

Same model, features, ranking and reasons as serving.scoring.chunked; the difference is where it runs:

1. The source is read, validated and partitioned by customer on the cluster
   (features.dask_engine.engine.load_source_dask); population-wide families are computed once per run and
   joined to each partition.
2. Each partition builds its features with build_features and predicts with the pyfunc, loaded once
   per worker process (``worker_model``, cached by model and tracking URI; the client pins an alias
   such as @champion to its version first, so every worker scores with the same model).
3. The client gathers only (customer_id, predicted_value) to rank the whole base (value_ranks),
   sends each partition its ranks, and workers add reasons and write one Parquet part each into a
   temporary directory beside the output, renamed into place at the end; then the JSON manifest.

Nothing is lost: customers in = scored + not yet customers (signed up on or after as_of) +
rejected, checked before the manifest is written; rejected rows go to OUT_STEM.rejects/.
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.build import as_timestamp, build_features
from features.ingest.contract import ContractError
from features.dask_engine.cluster import cluster
from features.dask_engine.engine import (
    bucket_tables,
    load_source_dask,
    population_dask,
    replace_path,
)
from features.ingest.partition import n_buckets
from features.ingest.source import write_rejects
from serving.scoring.reasons import reason_columns, top_reasons
from serving.scoring.chunked import (
    DEFAULT_MODEL_URI,
    REASONS_FOR,
    ScoringModel,
    check_model_features,
    load_scoring_model,
    manifest_path,
    rejects_path,
    remove_stale_temporaries,
)
from serving.scoring.tiers import tier_sizes, value_ranks

_MODELS: dict[tuple[str, str], ScoringModel] = {}
_MODELS_LOCK = threading.Lock()


def worker_model(model_uri: str, tracking_uri: str) -> ScoringModel:
    """The scoring model, loaded once per worker process (and kept for later runs of the same URI)."""
    key = (tracking_uri, model_uri)
    with _MODELS_LOCK:
        if key not in _MODELS:
            os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
            _MODELS[key] = load_scoring_model(model_uri)
        return _MODELS[key]


def pinned_uri(model: ScoringModel) -> str:
    """A URI that names exactly the loaded version (an alias may move while workers load it)."""
    if model.version is not None and model.uri.startswith("models:/"):
        return f"models:/{model.name}/{model.version}"
    return model.uri


# ---------------------------------------------------------------------------------------------
# Tasks run on the workers


def _score_bucket(
    customers,
    transactions,
    social,
    social_columns,
    precomputed,
    as_of,
    model_uri,
    tracking_uri,
    keep_inputs: bool,
) -> dict:
    """One partition: features, skew check, predictions; the model input kept for reasons."""
    model = worker_model(model_uri, tracking_uri)
    start = time.perf_counter()
    tables = bucket_tables(customers, transactions, social, social_columns)
    features = build_features(
        tables, as_of, model.config, families=model.families, precomputed=precomputed
    )
    check_model_features(model, features)
    encoder = model.python_model.encoder
    inputs = encoder.model_input(features)
    feature_seconds = time.perf_counter() - start
    unseen = Counter()
    for name, levels in encoder.levels.items():
        values = inputs[name]
        count = int((values.notna() & ~values.isin(list(levels))).sum())
        if count:
            unseen[name] += count
    start = time.perf_counter()
    values = (
        np.asarray(model.pyfunc.predict(inputs), dtype="float64")
        if len(inputs)
        else np.array([], dtype="float64")
    )
    return {
        "not_yet": int((customers["signup_date"] >= as_of).sum()),
        "ids": pa.array(features.index.array, type=pa.string()),
        "values": values,
        "inputs": inputs.reset_index(drop=True) if keep_inputs else None,
        "unseen": unseen,
        "feature_seconds": feature_seconds,
        "predict_seconds": time.perf_counter() - start,
    }


def _ids_values(scored: dict) -> tuple[pa.Array, np.ndarray]:
    return scored["ids"], scored["values"]


def _stats(scored: dict) -> dict:
    return {k: scored[k] for k in ("not_yet", "unseen", "feature_seconds", "predict_seconds")}


def _write_bucket(
    scored: dict,
    ranked: pd.DataFrame,
    cut: int,
    reasons: int,
    directory: str,
    b: int,
    constants: dict,
    model_uri: str,
    tracking_uri: str,
) -> dict:
    """One Parquet part: the partition's rows sorted by value_rank, with reasons for rank <= cut."""
    ids, values, m = scored["ids"], scored["values"], len(scored["values"])
    rank = ranked["value_rank"].to_numpy()
    names = reason_columns(reasons)
    wanted = np.flatnonzero(rank <= cut)
    found, seconds = None, 0.0
    if len(wanted):
        start = time.perf_counter()
        model = worker_model(model_uri, tracking_uri)
        inputs = scored["inputs"].iloc[wanted]
        found = top_reasons(model.python_model.contributions(inputs), inputs, reasons)
        seconds = time.perf_counter() - start
    columns = {
        "customer_id": ids,
        "predicted_value": pa.array(values, type=pa.float64()),
        "value_rank": pa.array(rank, type=pa.int64()),
        "value_percentile": pa.array(ranked["value_percentile"].to_numpy(), type=pa.float64()),
        "value_tier": pa.array(ranked["value_tier"].array, type=pa.string()),
    }
    for name in names:
        full = np.full(m, None, dtype=object)
        if found is not None:
            full[wanted] = found[name].to_numpy(dtype=object, na_value=None)
        columns[name] = pa.array(full, type=pa.string())
    schema = pa.schema(
        [(name, col.type) for name, col in columns.items()]
        + [(name, value.type) for name, value in constants.items()]
    )
    order = pa.array(np.argsort(rank, kind="stable"), type=pa.int64())
    arrays = [col.take(order) for col in columns.values()]
    arrays += [pa.repeat(value, m) for value in constants.values()]
    pq.write_table(
        pa.Table.from_arrays(arrays, schema=schema), Path(directory) / f"part-{b:05d}.parquet"
    )
    tiers = ranked["value_tier"].value_counts()
    return {
        "rows": m,
        "reasons_rows": len(wanted),
        "reasons_seconds": seconds,
        "tiers": {str(k): int(v) for k, v in tiers.items()},
    }


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---------------------------------------------------------------------------------------------
# The run


def score_customers_dask(
    data,
    *,
    out,
    as_of=None,
    model_uri: str = DEFAULT_MODEL_URI,
    reasons: int = 3,
    reasons_for: str = "top10",
    chunk_size: int = 100_000,
    scheduler=None,
    rejects=None,
    reject_threshold: float | None = None,
    model: ScoringModel | None = None,
) -> dict:
    """score_customers on a Dask cluster; ``out`` becomes a partitioned Parquet dataset (a directory).

    Same arguments and manifest as serving.scoring.chunked.score_customers, plus ``scheduler``
    (``tcp://host:8786``, a distributed.Client, or None for a local cluster sized to the machine).
    ``chunk_size`` is the number of customers per partition (at least one partition per worker).
    ``out``, the rejects directory and the source must be on storage the workers share, and the
    MLflow tracking URI (MLFLOW_TRACKING_URI) reachable from them.
    """
    from training import tracking

    started = time.perf_counter()
    scored_at = pd.Timestamp.now(tz="UTC").tz_localize(None).as_unit("ns")
    if reasons_for not in REASONS_FOR:
        raise ValueError(f"reasons_for must be one of {REASONS_FOR}, got {reasons_for!r}")
    if reasons < 0:
        raise ValueError(f"reasons must be >= 0, got {reasons}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    model = model if model is not None else load_scoring_model(model_uri)
    threshold = (
        model.config.reject_threshold if reject_threshold is None else float(reject_threshold)
    )
    worker_uri, tracking_uri = pinned_uri(model), tracking.tracking_uri()
    stage: dict[str, float] = {}
    tmp = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.parquet.tmp"
    tmp.mkdir()
    try:
        with cluster(scheduler) as client:
            workers = max(1, len(client.scheduler_info()["workers"]))
            start = time.perf_counter()
            customers_in = _customer_rows(data)
            buckets = max(workers, n_buckets(customers_in, chunk_size))
            cs = load_source_dask(data, client, buckets=buckets, reject_threshold=threshold)
            stage["load_validate_partition"] = time.perf_counter() - start
            if as_of is None:
                if cs.last_tx is None:
                    raise ContractError(
                        "transactions: no valid transaction to date the run from; pass as_of"
                    )
                as_of = cs.last_tx.normalize() + pd.Timedelta(days=1)
            as_of = as_timestamp(as_of)

            start = time.perf_counter()
            population = population_dask(cs, as_of, model.config, model.families)
            cs.release_population_inputs()
            keep_inputs = reasons > 0 and reasons_for != "none"
            scored = []
            for b in range(cs.buckets):
                customers, transactions, social = cs.bucket_tables(b)
                scored.append(
                    client.submit(
                        _score_bucket,
                        customers,
                        transactions,
                        social,
                        cs.social_columns,
                        population[b],
                        as_of,
                        worker_uri,
                        tracking_uri,
                        keep_inputs,
                    )
                )
            pairs = client.gather([client.submit(_ids_values, s) for s in scored])
            stats = client.gather([client.submit(_stats, s) for s in scored])
            del population
            cs.release()  # the reasons need only the kept model inputs
            stage["features_predict"] = time.perf_counter() - start

            # Ranks need the whole base: two columns per customer meet on the client.
            start = time.perf_counter()
            sizes = [len(values) for _, values in pairs]
            ids = pa.chunked_array([i for i, _ in pairs], type=pa.string()).combine_chunks()
            values = (
                np.concatenate([v for _, v in pairs]) if pairs else np.array([], dtype="float64")
            )
            n = len(values)
            check_accounted(cs, n, sum(st["not_yet"] for st in stats))  # before anything is written
            ranked = value_ranks(ids, values)
            cut = (
                {"top10": tier_sizes(n)["top_10pct"], "all": n, "none": 0}[reasons_for]
                if reasons
                else 0
            )
            constants = {
                "model_name": pa.scalar(model.name, pa.string()),
                "model_version": pa.scalar(model.version, pa.string()),
                "model_run_id": pa.scalar(model.run_id, pa.string()),
                "as_of": pa.scalar(as_of.to_datetime64(), pa.timestamp("ns")),
                "horizon_days": pa.scalar(model.horizon_days, pa.int64()),
                "scored_at": pa.scalar(scored_at.to_datetime64(), pa.timestamp("ns")),
            }
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype("int64")
            written = client.gather(
                [
                    client.submit(
                        _write_bucket,
                        s,
                        ranked.iloc[offsets[b] : offsets[b + 1]].reset_index(drop=True),
                        cut,
                        reasons,
                        str(tmp),
                        b,
                        constants,
                        worker_uri,
                        tracking_uri,
                    )
                    for b, s in enumerate(scored)
                ]
            )
            del pairs
            stage["rank_reasons_write"] = time.perf_counter() - start
            worker_peaks = client.run(_peak_rss_mb)
            del scored
        replace_path(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    published = write_rejects(
        cs.rejects, Path(rejects) if rejects is not None else rejects_path(out)
    )
    seconds = time.perf_counter() - started
    summary = _summary(
        out,
        model,
        cs,
        written,
        stats,
        as_of,
        scored_at,
        seconds,
        published,
        chunk_size,
        reasons,
        reasons_for,
    )
    summary["stage_seconds"] = {k: round(v, 3) for k, v in stage.items()}
    summary["load_seconds"] = cs.seconds
    summary["workers"] = len(worker_peaks)
    summary["worker_peak_rss_mb"] = worker_peaks
    _write_json_atomic(summary, manifest_path(out))
    return summary


def check_accounted(cs, scored: int, not_yet: int) -> None:
    """Every customer row of the source is scored, not yet a customer at as_of, or rejected.

    The three counts come from different places (predictions, signup dates, the contract check),
    so a customer lost or duplicated anywhere between the source and the output stops the run.
    """
    customers = cs.summary.set_index("table").loc["customers"]
    if scored + not_yet + customers["rows_rejected"] != customers["rows_in"]:
        raise AssertionError(
            f"customers unaccounted for: {customers['rows_in']} in, {scored} scored, "
            f"{not_yet} not yet customers, {customers['rows_rejected']} rejected"
        )


def _customer_rows(data) -> int:
    """Rows of the source's customers table (Parquet footers or one pass over a CSV)."""
    from features.dask_engine.engine import source_files
    from features.ingest.partition import count_rows

    return count_rows(source_files(data)["customers"])


def _write_json_atomic(value: dict, path: Path) -> Path:
    import json

    tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _summary(
    out: Path,
    model: ScoringModel,
    cs,
    written: list[dict],
    stats: list[dict],
    as_of: pd.Timestamp,
    scored_at: pd.Timestamp,
    seconds: float,
    rejects: list[Path],
    chunk_size: int,
    reasons: int,
    reasons_for: str,
) -> dict:
    """The run's manifest (the keys of serving.scoring.chunked's, plus the engine's); checks the accounting again."""
    tables = {
        row["table"]: {k: row[k] for k in ("rows_in", "rows_kept", "rows_rejected", "top_reason")}
        for row in cs.summary.to_dict("records")
    }
    tables = {
        t: {k: (int(v) if k != "top_reason" else v) for k, v in d.items()}
        for t, d in tables.items()
    }
    customers_in = tables["customers"]["rows_in"]
    rejected = tables["customers"]["rows_rejected"]
    scored = int(sum(w["rows"] for w in written))
    not_yet = int(sum(s["not_yet"] for s in stats))
    check_accounted(cs, scored, not_yet)
    tiers: Counter = Counter()
    unseen: Counter = Counter()
    for w in written:
        tiers.update(w["tiers"])
    for s in stats:
        unseen.update(s["unseen"])
    reasons_rows = int(sum(w["reasons_rows"] for w in written))
    reasons_seconds = float(sum(w["reasons_seconds"] for w in written))
    return {
        "output": str(out),
        "manifest": str(manifest_path(out)),
        "rejects": [str(p) for p in rejects],
        "customers_in": customers_in,
        "scored": scored,
        "rejected_customers": rejected,
        "not_yet_customers": not_yet,
        "tables": tables,
        "tiers": {
            name: tiers[name]
            for name in ("top_1pct", "top_10pct", "top_50pct", "rest")
            if name in tiers
        },
        "as_of": str(as_of),
        "horizon_days": model.horizon_days,
        "scored_at": str(scored_at),
        "model": model.describe(),
        "feature_manifest_hash": model.manifest.manifest_hash,
        "unseen_category_levels": dict(unseen),
        "inputs": cs.fingerprint,
        "chunks": cs.buckets,
        "chunk_size": chunk_size,
        "engine": "dask",
        "reasons": {
            "per_customer": reasons,
            "for": reasons_for,
            "rows": reasons_rows,
            "seconds": round(reasons_seconds, 3),
            "rows_per_second": round(reasons_rows / reasons_seconds, 1)
            if reasons_seconds
            else None,
        },
        "seconds": round(seconds, 3),
        "features_seconds": round(sum(s["feature_seconds"] for s in stats), 3),
        "predict_seconds": round(sum(s["predict_seconds"] for s in stats), 3),
        "customers_per_second": round(scored / seconds, 1) if seconds else None,
    }


__all__ = ["score_customers_dask", "worker_model"]
