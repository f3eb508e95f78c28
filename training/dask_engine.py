"""Training on Dask: the windows built on the cluster, the boosters fitted with lightgbm.dask.

The run is training.train's, step for step (same windows, manifest, metrics, baselines, ablation,
attribution, refit, MLflow run and registered CustomerValueModel), so the same scorer serves a model
from either engine. What moves to the cluster:

- Feature windows: every (cutoff, bucket) is a build_features + label_values task
  (features.dask_engine.engine), never gathered whole.
- Fitting: each booster of the objective (tweedie: one; two_part: buy and spend) is a
  DaskLGBMRegressor fit on encoded partitions. X and y are cut from ONE persisted frame, so their
  partitions cannot disagree (a known pitfall of frames straight from read_parquet).
- Early stopping: distributed LightGBM reports each worker's own validation metric, so the rounds
  are chosen from the validation metric of the whole validation window, computed on the workers
  for every round, with lightgbm.early_stopping's rule (best round, stop after
  early_stopping_rounds without improvement). The evaluation model trains all max_rounds rounds.

What stays on the client: the test window (one row per customer), the baselines' inputs (last H
days per customer, computed per partition; BG/NBD needs every purchase before the test cutoff),
SHAP on the attribution sample, and MLflow logging.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from features.build import as_timestamp, select_families
from features.catalog import SOCIAL_FAMILIES
from features.dask_engine.cluster import cluster
from features.dask_engine.engine import (
    ClusterSource,
    check_label_window,
    features_dask,
    latest_transaction_before,
    load_source_dask,
)
from features.manifest import FeatureManifest, manifest_for
from training.attribution import family_shares, shap_sample
from training.baselines import bgnbd_value, last_h_revenue
from training.config import TrainConfig
from training.evaluate import deciles, evaluate_predictions, paired_bootstrap_lift
from training.metrics import value_metrics
from training.model import CustomerValueModel, lgb_params, make_model
from training.progress import Steps
from training.train import (
    NEW_CUSTOMER_TENURE_DAYS,
    Ablation,
    Evaluation,
    TrainSummary,
    attribute,
    describe_source,
    encoder_for,
    frame_digest,
    lift_metrics,
    log_evaluation,
    plan_windows,
    print_summary,
    resolve_config,
)

LABEL = "__clv_label__"
# lgb_params names -> the scikit-learn names DaskLGBMRegressor takes (the rest pass through).
SKLEARN_NAMES = {
    "feature_fraction": "colsample_bytree",
    "bagging_fraction": "subsample",
    "bagging_freq": "subsample_freq",
    "lambda_l2": "reg_lambda",
    "seed": "random_state",
}


# ---------------------------------------------------------------------------------------------
# Windows on the cluster


def windows_dask(cs: ClusterSource, eval_cutoff, config: TrainConfig) -> dict[pd.Timestamp, list]:
    """build_training_set's windows as futures: cutoff -> one frame per bucket (features, cutoff, label).

    Same cutoffs and skipping rule (a cutoff on or before the first transaction has no history) and
    the same label-coverage check, judged on the whole source.
    """
    from features.windows import training_cutoffs

    horizon = config.horizon_days
    eval_cutoff = as_timestamp(eval_cutoff)
    cutoffs = sorted(training_cutoffs(eval_cutoff, horizon, config.n_windows, config.step_days))
    out = {}
    for cutoff in cutoffs:
        if cutoff + pd.Timedelta(days=horizon) > eval_cutoff:
            raise AssertionError(f"label window from {cutoff} passes eval_cutoff {eval_cutoff}")
        if cs.first_tx is None or cutoff <= cs.first_tx:
            continue
        check_label_window(cs, cutoff, horizon)
        out[cutoff] = features_dask(cs, cutoff, config.features, horizon_days=horizon)
    if not out:
        raise ValueError(
            f"no training window has transactions before its cutoff (cutoffs {cutoffs[0].date()}"
            f" .. {cutoffs[-1].date()}); use fewer windows, a smaller step or a later eval_cutoff"
        )
    return out


def _rows(frame: pd.DataFrame) -> int:
    return len(frame)


def _empty(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:0]


def _without(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame.drop(columns=columns)


def _digest(frame: pd.DataFrame) -> str:
    return frame_digest(frame)


def _sample(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    return frame.sample(frac=fraction, random_state=seed) if fraction < 1 else frame


# ---------------------------------------------------------------------------------------------
# Fitting on the cluster


def _encoded(frame: pd.DataFrame, encoder, model_params, seed: int, part: str) -> pd.DataFrame:
    """One partition as LightGBM sees it for booster ``part``: encoded features plus LABEL, the
    part's rows only (ValueModel's own label transform and row mask)."""
    value_model = make_model(model_params, encoder.categorical, seed=seed)
    _objective, mask, label = value_model._parts(frame["label"].to_numpy())[part]
    return encoder.encode(frame.loc[mask]).assign(**{LABEL: label[mask]})


def _sklearn_params(model_params, seed: int, objective: dict) -> dict:
    params = {SKLEARN_NAMES.get(k, k): v for k, v in lgb_params(model_params, seed=seed).items()}
    params.pop("num_threads")  # lightgbm.dask sets each worker's threads itself
    params.update(objective)
    return params


def _curve(
    booster_text: str, frame: pd.DataFrame, objective: dict, rounds: int
) -> tuple[np.ndarray, int]:
    """(sum over the rows of the objective's metric after each round 1..rounds, rows) of one partition.

    The metrics are LightGBM's, per row: tweedie, binary_logloss, gamma (negative log-likelihood)
    and l2; the raw score grows one tree at a time.
    """
    import lightgbm as lgb

    booster = lgb.Booster(model_str=booster_text)
    X, y = frame.drop(columns=[LABEL]), frame[LABEL].to_numpy(dtype="float64")
    sums = np.zeros(rounds)
    if not len(y):
        return sums, 0
    raw = np.zeros(len(y))
    for i in range(rounds):
        raw += booster.predict(
            X, raw_score=True, start_iteration=i, num_iteration=1, validate_features=False
        )
        sums[i] = _metric(objective, y, raw).sum()
    return sums, len(y)


def _metric(objective: dict, y: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """LightGBM's per-row loss for the objective's metric at raw score ``raw``."""
    metric = objective["metric"]
    if metric == "tweedie":
        rho = objective["tweedie_variance_power"]
        return -y * np.exp((1 - rho) * raw) / (1 - rho) + np.exp((2 - rho) * raw) / (2 - rho)
    if metric == "binary_logloss":
        p = np.clip(1.0 / (1.0 + np.exp(-raw)), 1e-15, 1 - 1e-15)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))
    if metric == "gamma":
        return y * np.exp(-raw) + raw  # -log-likelihood with psi = 1, up to a constant in y
    if metric == "l2":
        return (y - raw) ** 2
    raise ValueError(f"no distributed validation metric for {metric!r}")


def early_stopping_rounds(curve: np.ndarray, patience: int) -> int:
    """Rounds lightgbm.early_stopping would keep on this validation curve (lower is better)."""
    best, best_score = 0, np.inf
    for i, score in enumerate(curve):
        if score < best_score:
            best, best_score = i, score
        elif i - best >= patience:
            break
    return best + 1


def fit_dask(
    client,
    frames: list,
    manifest: FeatureManifest,
    config: TrainConfig,
    *,
    validation: list | None = None,
    rounds: dict[str, int] | None = None,
) -> CustomerValueModel:
    """A CustomerValueModel fitted with DaskLGBMRegressor on window futures (features + label).

    With ``validation``: max_rounds rounds, then the early-stopping rounds of the whole validation
    window; with ``rounds``: exactly those rounds per booster (the refit).
    """
    import dask.dataframe as dd
    from lightgbm.dask import DaskLGBMRegressor

    if (validation is None) == (rounds is None):
        raise ValueError("pass either validation windows (early stopping) or fixed rounds")
    encoder = encoder_for(manifest)
    value_model = make_model(config.model, encoder.categorical, seed=config.seed)
    objectives = {part: spec[0] for part, spec in value_model._parts(np.zeros(1)).items()}
    for part, objective in objectives.items():
        encoded = [
            client.submit(_encoded, f, encoder, config.model, config.seed, part) for f in frames
        ]
        meta = client.submit(_empty, encoded[0]).result()
        # One persisted frame; X and y are its columns, so their partitions always agree.
        xy = dd.from_delayed(encoded, meta=meta, verify_meta=False).persist()
        X, y = xy.drop(columns=[LABEL]), xy[LABEL]
        n_rounds = config.model.max_rounds if rounds is None else max(1, int(rounds[part]))
        model = DaskLGBMRegressor(
            client=client,
            n_estimators=n_rounds,
            **_sklearn_params(config.model, config.seed, objective),
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            model.fit(X, y, categorical_feature=encoder.categorical)
        booster = model.to_local().booster_
        if validation is not None:
            text = client.scatter(booster.model_to_string(), broadcast=True)
            valid = [
                client.submit(_encoded, f, encoder, config.model, config.seed, part)
                for f in validation
            ]
            sums = client.gather(
                [
                    client.submit(_curve, text, v, objective, booster.current_iteration())
                    for v in valid
                ]
            )
            total = sum(s for s, _ in sums)
            count = sum(n for _, n in sums)
            chosen = early_stopping_rounds(
                total / max(count, 1), config.model.early_stopping_rounds
            )
        else:
            chosen = n_rounds
        value_model.boosters[part] = booster
        value_model.rounds[part] = int(chosen)
        del xy, X, y
    return CustomerValueModel.from_fitted(
        value_model, encoder, manifest_json=manifest.to_json(), families=dict(manifest.families)
    )


# ---------------------------------------------------------------------------------------------
# Evaluation (training.train.evaluate_pipeline, with the windows and fits on the cluster)


def _last_h(transactions: pd.DataFrame, customers: pd.DataFrame, cutoff, horizon: int) -> pd.Series:
    ids = pd.Index(
        customers.loc[customers["signup_date"] < cutoff, "customer_id"], name="customer_id"
    )
    return last_h_revenue(transactions, ids, cutoff, horizon)


def _purchases(transactions: pd.DataFrame, cutoff) -> pd.DataFrame:
    """What the BG/NBD baseline reads: positive amounts before the cutoff."""
    keep = (transactions["timestamp"] < cutoff) & (transactions["amount"] > 0)
    return transactions.loc[keep, ["customer_id", "timestamp", "amount"]]


def evaluate_dask(
    cs: ClusterSource, as_of, config: TrainConfig, *, steps: Steps | None = None
) -> Evaluation:
    """training.train.evaluate_pipeline on a cluster; returns the same Evaluation."""
    client = cs.client
    steps = steps or Steps(enabled=False)
    fc = config.features
    horizon = fc.horizon_days
    plan = plan_windows(as_of, horizon, config)
    with steps.step("Training windows on the cluster (labels end by the test cutoff)"):
        evaluation = windows_dask(cs, plan.test_cutoff, config)
    with steps.step(
        "Refit windows on the cluster (labels end by as_of; the latest is the test window)"
    ):
        refit = windows_dask(cs, plan.as_of, config)
    if plan.test_cutoff not in refit:
        raise ValueError(f"no customers signed up before the test cutoff {plan.test_cutoff.date()}")
    test = pd.concat(client.gather(refit[plan.test_cutoff])).sort_index(kind="stable")
    if len(test) == 0:
        raise ValueError(f"no customers signed up before the test cutoff {plan.test_cutoff.date()}")
    present = sorted(evaluation)
    validation_cutoffs = [c for c in present if c in set(plan.validation_cutoffs)]
    if not validation_cutoffs or len(present) <= len(validation_cutoffs):
        raise ValueError(
            f"need at least {config.validation_windows + 1} training windows with history before "
            f"{plan.test_cutoff.date()}, found {len(present)}; lower n_windows/step_days or add history"
        )
    train_frames = [f for c in present if c not in validation_cutoffs for f in evaluation[c]]
    valid_frames = [f for c in validation_cutoffs for f in evaluation[c]]
    refit_frames = [f for c in sorted(refit) for f in refit[c]]
    families = select_families()
    meta = client.submit(_empty, train_frames[0]).result()
    manifest = manifest_for(meta, fc, families)
    refit_manifest = manifest_for(client.submit(_empty, refit_frames[0]).result(), fc, families)
    rows = {
        "train": sum(client.gather([client.submit(_rows, f) for f in train_frames])),
        "validation": sum(client.gather([client.submit(_rows, f) for f in valid_frames])),
        "test": len(test),
        "refit": sum(client.gather([client.submit(_rows, f) for f in refit_frames])),
    }
    test_label = test["label"].astype(np.float64)

    with steps.step(
        f"Fitting {config.model.objective} model on the cluster ({rows['train']:,} rows, "
        f"{rows['validation']:,} for early stopping)"
    ):
        model = fit_dask(client, train_frames, manifest, config, validation=valid_frames)
    steps.note(f"boosting rounds: {model.rounds}")
    predicted = model.predict_value(test)

    with steps.step("Baselines on the test window (last H days, BG/NBD + Gamma-Gamma)"):
        last_h = pd.concat(
            client.gather(
                [
                    client.submit(_last_h, t, c, plan.test_cutoff, horizon)
                    for c, t in zip(cs.customers, cs.transactions)
                ]
            )
        ).reindex(test.index, fill_value=0.0)
        last_h = last_h.rename("baseline_last_h")
        everyone = pd.concat(client.gather(cs.slims)).set_index("customer_id")
        customers = everyone.loc[test.index, ["signup_date"]].reset_index()
        purchases = pd.concat(
            client.gather(
                [client.submit(_purchases, t, plan.test_cutoff) for t in cs.transactions]
            ),
            ignore_index=True,
        )
        bg = bgnbd_value(
            purchases, customers, plan.test_cutoff, horizon, penalizer=config.bgnbd_penalizer
        )
        del purchases
    baselines = {"last_h": last_h}
    if bg.prediction is not None:
        baselines["bgnbd"] = bg.prediction
    else:
        steps.note(f"BG/NBD baseline {bg.status}")
    metrics = evaluate_predictions(test_label, predicted, baselines)
    table = deciles(test_label, {"model": predicted, **baselines})

    ablation = None
    if config.social_ablation and any(
        manifest.families[f] in SOCIAL_FAMILIES for f in manifest.features
    ):
        with steps.step(
            "Social ablation on the cluster (same pipeline without the social families)"
        ):
            ablation = _ablate(
                client,
                train_frames,
                valid_frames,
                test,
                test_label,
                predicted,
                everyone["signup_date"],
                plan,
                config,
                families,
                manifest,
            )
        metrics.update(lift_metrics(ablation))

    with steps.step(
        f"Attribution (exact TreeSHAP on at most {config.shap_sample:,} test customers)"
    ):
        _, contributions, importance = attribute(model, test, manifest, config)
    metrics.update(family_shares(importance, tuple(f.name for f in families)))

    with steps.step(
        f"Refit on the cluster on windows ending by as_of ({rows['refit']:,} rows, same rounds)"
    ):
        final_model = fit_dask(client, refit_frames, refit_manifest, config, rounds=model.rounds)

    for name, value in rows.items():
        metrics[f"rows_{name}"] = float(value)
    for part, value in model.rounds.items():
        metrics[f"rounds_{part}"] = float(value)
    train_all = train_frames + valid_frames
    total = rows["train"] + rows["validation"]
    fraction = min(1.0, 1.5 * 10_000 / max(total, 1))
    drawn = client.gather(
        [client.submit(_sample, f, fraction, config.seed + i) for i, f in enumerate(train_all)]
    )
    digests = client.gather([client.submit(_digest, f) for f in train_all])
    return Evaluation(
        plan=replace(
            plan,
            validation_cutoffs=tuple(validation_cutoffs),
            train_cutoffs=tuple(c for c in present if c not in set(validation_cutoffs)),
            refit_cutoffs=tuple(sorted(refit)),
        ),
        config=config,
        rows=rows,
        manifest=manifest,
        refit_manifest=refit_manifest,
        model=model,
        final_model=final_model,
        test_features=test.drop(columns=["cutoff", "label"]),
        test_label=test_label,
        predictions={"model": predicted, **baselines},
        metrics=metrics,
        bgnbd_status=bg.status,
        bgnbd_params=bg.params,
        decile_table=table,
        importance=importance,
        ablation=ablation,
        shap_contributions=contributions,
        train_sample=shap_sample(pd.concat(drawn), 10_000, seed=config.seed),
        # The digest of the partition digests: the same windows give the same value on any cluster.
        train_digest=hashlib.sha256("".join(digests).encode()).hexdigest()[:16],
        seconds=dict(steps.seconds),
    )


def _ablate(
    client,
    train_frames,
    valid_frames,
    test,
    test_label,
    predicted,
    signup,
    plan,
    config,
    families,
    manifest_full: FeatureManifest,
) -> Ablation:
    """training.train's ablation: the same fit without the social families, lift by paired bootstrap."""
    kept = tuple(f for f in families if f.name not in SOCIAL_FAMILIES)
    social = [f for f in manifest_full.features if manifest_full.families[f] in SOCIAL_FAMILIES]
    train_ns = [client.submit(_without, f, social) for f in train_frames]
    valid_ns = [client.submit(_without, f, social) for f in valid_frames]
    manifest = manifest_for(client.submit(_empty, train_ns[0]).result(), config.features, kept)
    model = fit_dask(client, train_ns, manifest, config, validation=valid_ns)
    predicted_ns = model.predict_value(test.drop(columns=social))
    metrics = value_metrics(test_label.to_numpy(), predicted_ns.to_numpy(), prefix="test_")
    actual = test_label.to_numpy()
    lift = paired_bootstrap_lift(
        actual,
        predicted.to_numpy(),
        predicted_ns.to_numpy(),
        resamples=config.bootstrap_resamples,
        interval=config.interval,
        seed=config.seed,
    )
    new = (
        (plan.test_cutoff - signup.reindex(test.index)).dt.days < NEW_CUSTOMER_TENURE_DAYS
    ).to_numpy()
    lift_new = paired_bootstrap_lift(
        actual[new],
        predicted.to_numpy()[new],
        predicted_ns.to_numpy()[new],
        resamples=config.bootstrap_resamples,
        interval=config.interval,
        seed=config.seed + 1,
    )
    return Ablation(model, manifest, metrics, lift, lift_new, dict(model.rounds))


# ---------------------------------------------------------------------------------------------
# Tracked training


def train_dask(
    data,
    *,
    as_of=None,
    horizon_days: int = 365,
    market_topics=(),
    experiment: str = "customer-value",
    model_name: str = "customer-value",
    promote: str = "auto",
    config: TrainConfig | None = None,
    progress: bool = True,
    scheduler=None,
    buckets: int | None = None,
) -> str:
    """training.train.train on a Dask cluster; returns the MLflow run id (prints the summary)."""
    summary = train_run_dask(
        data,
        as_of=as_of,
        horizon_days=horizon_days,
        market_topics=market_topics,
        experiment=experiment,
        model_name=model_name,
        promote=promote,
        config=config,
        progress=progress,
        scheduler=scheduler,
        buckets=buckets,
    )
    if progress:
        print_summary(summary)
    return summary.run_id


def train_run_dask(
    data,
    *,
    as_of=None,
    horizon_days: int = 365,
    market_topics=(),
    experiment: str = "customer-value",
    model_name: str = "customer-value",
    promote: str = "auto",
    config: TrainConfig | None = None,
    progress: bool = True,
    scheduler=None,
    buckets: int | None = None,
) -> TrainSummary:
    """training.train.train_run on a Dask cluster: same run, tags, metrics, artifacts and registry.

    data: a source directory the workers can read. scheduler: ``tcp://host:8786``, a
    distributed.Client, or None for a local cluster sized to the machine.
    """
    import mlflow

    from training import tracking

    started = time.perf_counter()
    if promote not in tracking.PROMOTE_MODES:
        raise ValueError(f"promote must be one of {tracking.PROMOTE_MODES}, got {promote!r}")
    config = resolve_config(config, horizon_days, market_topics)
    steps = Steps(enabled=progress)
    with cluster(scheduler) as client:
        with steps.step("Loading, validating and partitioning the source on the cluster"):
            cs = load_source_dask(
                data, client, buckets=buckets, reject_threshold=config.features.reject_threshold
            )
        if as_of is None:
            if cs.last_tx is None:
                raise ValueError("transactions table is empty: cannot choose as_of")
            as_of = cs.last_tx.normalize() + pd.Timedelta(days=1)
        else:
            # As in train_run, rows dated on or after as_of do not exist for this run: nothing reads
            # them (the latest label window ends at as_of) except the label coverage check.
            as_of = as_timestamp(as_of)
            cs.last_tx = latest_transaction_before(cs, as_of)
        as_of = as_timestamp(as_of)
        fingerprint = {"source": describe_source(data), **cs.fingerprint}
        rejected = int(sum(len(frame) for frame in cs.rejects.values()))

        tracking.quiet_mlflow_warnings()
        uri = tracking.tracking_uri()
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        experiment_id = tracking.experiment_id(experiment, uri)
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=f"train as_of {as_of.date()}"
        ) as run:
            mlflow.set_tags(
                {
                    "git_commit": tracking.git_commit(),
                    "git_dirty": tracking.git_dirty(),
                    "input_fingerprint": tracking.fingerprint_hash(fingerprint),
                    "as_of": str(as_of.date()),
                    "horizon_days": str(config.horizon_days),
                    "test_cutoff": str((as_of - pd.Timedelta(days=config.horizon_days)).date()),
                    "objective": config.model.objective,
                    "rejected_rows": str(rejected),
                    "engine": "dask",
                    "dask_workers": str(len(client.scheduler_info()["workers"])),
                    "dask_partitions": str(cs.buckets),
                }
            )
            mlflow.log_params(config.flat())
            ev = evaluate_dask(cs, as_of, config, steps=steps)
            with steps.step("Logging run, model and registry"):
                summary = log_evaluation(
                    ev, run.info.run_id, data, fingerprint, experiment, model_name, promote, uri
                )
    return replace(summary, seconds=time.perf_counter() - started)
