"""Buy-till-you-die: each customer's chance of still buying, expected purchases and spend, fitted before as_of.

The BG/NBD model (Fader, Hardie and Lee 2005) and the Gamma-Gamma spend model are fitted with
``lifetimes`` on the purchases dated before as_of, exactly as an analyst would fit them: purchase
occasions are days with a positive amount, the observation ends the day before as_of, Gamma-Gamma
sees repeat buyers only, and a customer who never bought is a new customer born at signup. Their
conditional expectations become features, so the value model can use them beside everything else
and start from what buy-till-you-die already knows. The same numbers are the BG/NBD + Gamma-Gamma
baseline a training run compares against (training.baselines).

Population-wide: the models' parameters are fitted over every buyer (at most FIT_MAX_BUYERS,
chosen by a hash of customer_id so any engine picks the same ones), so engines that never hold a
whole table gather each chunk's ``purchase_summary`` and fit once (``BtydSums``). NaN for every
customer when too few customers bought to fit (the reason is in ``BtydFit.status``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.catalog import empty_features
from features.config import FeatureConfig
from features.encoding import (
    DAY_NS,
    customer_codes,
    customer_index,
    eligible_customers,
    sorted_unique,
    timestamps_ns,
)
from features.tables import Tables

FAMILY = "btyd"
POPULATION_WIDE = True
FEATURES = {
    "btyd_p_alive": "probability that the customer is still an active buyer at as_of (BG/NBD; 1 for "
    "customers who never bought, whom BG/NBD cannot have seen drop out)",
    "btyd_expected_orders": "expected purchase days in the horizon after as_of (BG/NBD)",
    "btyd_expected_order_value": "expected spend per purchase day (Gamma-Gamma; its population mean "
    "for customers without a repeat purchase)",
    "btyd_expected_value": "btyd_expected_orders x btyd_expected_order_value: the BG/NBD + "
    "Gamma-Gamma forecast of gross spend over the horizon",
}
FILL: dict[str, float] = {}

# The four BG/NBD and two Gamma-Gamma parameters are pinned down long before this many buyers; the
# fit costs about 3 s at 200k on one core (lifetimes 0.11, scipy's BFGS).
FIT_MAX_BUYERS = 200_000
MIN_BUYERS = 10
FIT_TOLERANCES = (1e-7, 1e-5, 1e-3)  # lifetimes' default first
MIN_REPEAT_BUYERS = 10
SUMMARY_COLUMNS = ("frequency", "recency", "T", "monetary")
# A fit is a pure function of the numbers it fits (BFGS from lifetimes' fixed start), and a process
# often fits the same numbers again: a training run's BG/NBD baseline fits the summary its last
# refit window fitted, and a notebook or a test trains again on the same data. The parameters of
# the latest FIT_CACHE_SIZE fits are kept, keyed by those exact numbers; a cached fit predicts what
# the first did (BtydFit.from_params), at 0.3-3 s a fit saved.
FIT_CACHE_SIZE = 64
_FITS: OrderedDict[bytes, tuple[str, dict[str, float]]] = OrderedDict()
_FITS_LOCK = threading.Lock()  # a threaded Dask worker may fit in several threads


def purchase_summary(customers: pd.DataFrame, transactions: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Per customer who signed up before as_of (sorted customer_id index): frequency (repeat purchase
    days), recency (days from the first to the last purchase day), T (days from the first purchase,
    or from signup without one, to the day before as_of) and monetary (mean spend of the repeat
    purchase days; 0 without), from positive amounts dated before as_of: lifetimes'
    summary_data_from_transaction_data with freq="D", plus the customers who never bought."""
    as_of = pd.Timestamp(as_of).as_unit("ns")
    eligible = eligible_customers(customers, as_of)
    ids = customer_index(eligible["customer_id"])
    n = len(ids)
    end_day = as_of.value // DAY_NS - 1
    t = timestamps_ns(transactions["timestamp"])
    amount = transactions["amount"].to_numpy(dtype="float64")
    bought = (t < as_of.value) & (amount > 0)
    code = customer_codes(ids, transactions["customer_id"][bought])
    known = code >= 0
    code, day, spend = code[known], t[bought][known] // DAY_NS, amount[bought][known]

    frequency = np.zeros(n)
    recency = np.zeros(n)
    monetary = np.zeros(n)
    buyer = np.zeros(n, dtype=bool)
    signup_day = timestamps_ns(eligible["signup_date"]) // DAY_NS
    T = np.maximum(end_day - signup_day, 0).astype("float64")
    if len(code):
        first = int(day.min())
        span = int(day.max()) - first + 1
        occasion, per_occasion = sorted_unique(code * span + (day - first))
        occasion_spend = np.bincount(per_occasion, weights=spend, minlength=len(occasion))
        who, when = occasion // span, occasion % span + first
        days = np.bincount(who, minlength=n)
        buyer = days > 0
        first_day = np.full(n, np.iinfo(np.int64).max)
        last_day = np.full(n, np.iinfo(np.int64).min)
        np.minimum.at(first_day, who, when)
        np.maximum.at(last_day, who, when)
        repeat_spend = np.bincount(who, weights=np.where(when > first_day[who], occasion_spend, 0.0), minlength=n)
        frequency = np.where(buyer, days - 1, 0).astype("float64")
        recency = np.where(buyer, last_day - first_day, 0).astype("float64")
        T = np.where(buyer, end_day - first_day, T).astype("float64")
        with np.errstate(invalid="ignore", divide="ignore"):
            monetary = np.where(frequency > 0, repeat_spend / np.maximum(frequency, 1), 0.0)
    return pd.DataFrame({"frequency": frequency, "recency": recency, "T": T, "monetary": monetary,
                         "buyer": buyer}, index=ids)


@dataclass
class BtydFit:
    """The fitted BG/NBD and Gamma-Gamma models (None when they could not be fitted) and why."""

    bgnbd: object | None
    gamma_gamma: object | None
    status: str
    params: dict[str, float] = field(default_factory=dict)

    def __getstate__(self) -> dict:
        """Pickled as its parameters (lifetimes' fitted models hold lambdas, which do not pickle)."""
        return {"status": self.status, "params": dict(self.params)}

    def __setstate__(self, state: dict) -> None:
        """The models rebuilt from their parameters: the methods btyd_predictions calls read
        ``params_`` only, so they predict exactly what the fitted ones do."""
        self.status, self.params = state["status"], dict(state["params"])
        self.bgnbd = self.gamma_gamma = None
        if self.params:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from lifetimes import BetaGeoFitter, GammaGammaFitter
            self.bgnbd, self.gamma_gamma = BetaGeoFitter(), GammaGammaFitter()
            for model, prefix in ((self.bgnbd, "bgnbd_"), (self.gamma_gamma, "gammagamma_")):
                model.params_ = pd.Series({k[len(prefix):]: v for k, v in self.params.items() if k.startswith(prefix)},
                                          dtype="float64")

    @classmethod
    def from_params(cls, status: str, params: dict[str, float]) -> BtydFit:
        """The fit whose parameters (and status) these are, as if unpickled."""
        fit = cls.__new__(cls)
        fit.__setstate__({"status": status, "params": params})
        return fit


def fit_btyd(summary: pd.DataFrame, penalizer: float) -> BtydFit:
    """BG/NBD on the buyers of a purchase_summary and Gamma-Gamma on its repeat buyers (positive
    mean spend), with lifetimes; at most FIT_MAX_BUYERS buyers, those whose customer_id hashes
    lowest, in customer_id order (so every engine fits exactly the same numbers)."""
    with warnings.catch_warnings():
        # lifetimes sets a pandas option at import that pandas 3 deprecates; harmless.
        warnings.simplefilter("ignore")
        from lifetimes import BetaGeoFitter, GammaGammaFitter

    buyers = summary.loc[summary["buyer"].to_numpy()]
    if len(buyers) < MIN_BUYERS:
        return BtydFit(None, None, f"failed: {len(buyers)} customers bought before the cutoff (need {MIN_BUYERS})")
    if len(buyers) > FIT_MAX_BUYERS:
        keep = np.sort(np.argsort(id_hashes(buyers.index), kind="stable")[:FIT_MAX_BUYERS])
        buyers = buyers.iloc[keep]
    repeat = buyers.loc[(buyers["frequency"] > 0).to_numpy() & (buyers["monetary"] > 0).to_numpy()]
    if len(repeat) < MIN_REPEAT_BUYERS:
        return BtydFit(None, None, f"failed: {len(repeat)} repeat buyers for Gamma-Gamma (need {MIN_REPEAT_BUYERS})")
    bgnbd_data = [buyers[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T")]
    gamma_gamma_data = [repeat[c].to_numpy(dtype="float64") for c in ("frequency", "monetary")]
    key = _fit_key(penalizer, bgnbd_data, gamma_gamma_data)
    with _FITS_LOCK:
        cached = _FITS.get(key)
        if cached is not None:
            _FITS.move_to_end(key)
    if cached is not None:
        return BtydFit.from_params(*cached)
    try:
        bgf = _fitted(BetaGeoFitter, penalizer, *bgnbd_data)
        ggf = _fitted(GammaGammaFitter, penalizer, *gamma_gamma_data)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be fitted leaves its features unknown
        fit = BtydFit(None, None, f"failed: {type(exc).__name__}: {' '.join(str(exc).split())}"[:300])
    else:
        params = {f"bgnbd_{k}": float(v) for k, v in bgf.params_.items()}
        params.update({f"gammagamma_{k}": float(v) for k, v in ggf.params_.items()})
        fit = BtydFit(bgf, ggf, f"ok: {len(buyers)} buyers, {len(repeat)} repeat", params)
    with _FITS_LOCK:
        _FITS[key] = (fit.status, dict(fit.params))
        while len(_FITS) > FIT_CACHE_SIZE:
            _FITS.popitem(last=False)
    return fit


def _fit_key(penalizer: float, *datasets: list[np.ndarray]) -> bytes:
    """A digest of exactly what the two models are fitted to."""
    digest = hashlib.blake2b(np.float64(penalizer).tobytes(), digest_size=32)
    for columns in datasets:
        for column in columns:
            digest.update(np.int64(len(column)).tobytes())
            digest.update(np.ascontiguousarray(column).tobytes())
    return digest.digest()


def id_hashes(ids) -> np.ndarray:
    """The hash of each customer_id by which fit_btyd picks the buyers it fits on."""
    return pd.util.hash_array(np.asarray(ids, dtype=object), categorize=False)


def _fitted(fitter, penalizer: float, *columns):
    """A lifetimes fitter fitted to ``columns``. BFGS often stops with "precision loss" a hair from
    the optimum (gradient about 1e-7), which lifetimes reports as not converged: the fit is retried
    with looser tolerances before giving up. lifetimes prints the optimiser's report on failure;
    that goes nowhere."""
    error = None
    for tol in FIT_TOLERANCES:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                # The optimiser probes invalid regions (log/sqrt of negatives) on its way to the optimum.
                warnings.simplefilter("ignore", RuntimeWarning)
                return fitter(penalizer_coef=penalizer).fit(*columns, tol=tol)
        except Exception as exc:  # noqa: BLE001 - lifetimes' ConvergenceError, or a numerical failure
            error = exc
    raise error


def btyd_predictions(summary: pd.DataFrame, fit: BtydFit, horizon_days: int) -> pd.DataFrame:
    """The family's features for the customers of a purchase_summary (empty when not fitted)."""
    if fit.bgnbd is None or not len(summary):
        return empty_features(FEATURES)
    f, r, T = (summary[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T"))
    monetary = summary["monetary"].to_numpy(dtype="float64")
    repeat = (f > 0) & (monetary > 0)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        orders = expected_orders(fit.bgnbd, float(horizon_days), f, r, T)
        alive = np.asarray(fit.bgnbd.conditional_probability_alive(f, r, T), dtype="float64")
        order_value = np.asarray(fit.gamma_gamma.conditional_expected_average_profit(
            np.where(repeat, f, 0.0), np.where(repeat, monetary, 0.0)), dtype="float64")
    out = pd.DataFrame({"btyd_p_alive": alive, "btyd_expected_orders": orders,
                        "btyd_expected_order_value": order_value,
                        "btyd_expected_value": orders * order_value}, index=summary.index)
    return out.where(np.isfinite(out))


def expected_orders(bgnbd, t: float, f: np.ndarray, r: np.ndarray, T: np.ndarray) -> np.ndarray:
    """BG/NBD expected purchases in the next ``t`` days (Fader, Hardie and Lee 2005, eq. 10).

    lifetimes evaluates the hypergeometric term through its logarithm, which is NaN when the term is
    negative, as it is for customers without a repeat purchase whenever a + b < 1 (a young business
    or a short history fits such parameters). Those customers get the same equation evaluated
    directly; the logarithm is kept elsewhere because it does not overflow for frequent buyers.
    """
    from scipy.special import hyp2f1

    orders = np.asarray(bgnbd.conditional_expected_number_of_purchases_up_to_time(t, f, r, T), dtype="float64")
    redo = ~np.isfinite(orders)
    if redo.any():
        ra, alpha, a, b = (float(bgnbd.params_[k]) for k in ("r", "alpha", "a", "b"))
        x, rec, age = f[redo], r[redo], T[redo]
        term = hyp2f1(ra + x, b + x, a + b + x - 1, t / (alpha + age + t)) * ((alpha + age) / (alpha + age + t)) ** (ra + x)
        numerator = (a + b + x - 1) / (a - 1) * (1 - term)
        denominator = 1 + (x > 0) * (a / (b + x - 1)) * ((alpha + age) / (alpha + rec)) ** (ra + x)
        orders[redo] = numerator / denominator
    return orders


def btyd_features(tables: Tables, as_of: pd.Timestamp, config: FeatureConfig) -> pd.DataFrame:
    """P(alive), expected purchases and spend per eligible customer, from models fitted before as_of."""
    summary = purchase_summary(tables.customers, tables.transactions, as_of)
    return btyd_predictions(summary, fit_btyd(summary, config.btyd_penalizer), config.horizon_days)


class BtydSums:
    """The family from batches: each chunk's purchase_summary (a customer's transactions all in one
    chunk), then one fit over them and every summarised customer's features.

    fit_only: only the fit is wanted (``fitted``, not ``finish``), so only the buyers it may read
    are kept: at most FIT_MAX_BUYERS and one chunk's, whatever the number of chunks.
    """

    def __init__(self, as_of: pd.Timestamp, *, fit_only: bool = False):
        self.as_of, self.fit_only = as_of, fit_only
        self._summaries: list[pd.DataFrame] = []
        self._hashes = np.array([], dtype=np.uint64)  # id_hashes of the kept rows (fit_only)
        self.fit: BtydFit | None = None

    def add(self, summary: pd.DataFrame) -> None:
        if self.fit_only:
            self._keep_fit_candidates(summary.loc[summary["buyer"].to_numpy()])
        else:
            self._summaries.append(summary)

    def _keep_fit_candidates(self, buyers: pd.DataFrame) -> None:
        """Keep the buyers whose hash is at most the FIT_MAX_BUYERS-th lowest so far: every buyer
        fit_btyd would pick among all of them is among these (its lower hashes are fewer than
        FIT_MAX_BUYERS in any subset), and fit_btyd picks the same ones again from these alone."""
        kept = pd.concat([*self._summaries, buyers]) if self._summaries else buyers
        hashes = np.concatenate([self._hashes, id_hashes(buyers.index)])
        if len(hashes) > FIT_MAX_BUYERS:
            keep = hashes <= np.partition(hashes, FIT_MAX_BUYERS - 1)[FIT_MAX_BUYERS - 1]
            kept, hashes = kept.iloc[np.flatnonzero(keep)], hashes[keep]
        self._summaries, self._hashes = [kept], hashes

    def finish(self, config: FeatureConfig) -> pd.DataFrame:
        if self.fit_only:
            raise ValueError("a fit-only BtydSums keeps the buyers the fit reads, not every customer")
        if not self._summaries:
            return empty_features(FEATURES)
        summary = pd.concat(self._summaries).sort_index(kind="stable")
        self._summaries = []
        self.fit = fit_btyd(summary, config.btyd_penalizer)
        return btyd_predictions(summary, self.fit, config.horizon_days)

    def fitted(self, config: FeatureConfig) -> BtydFit:
        """The fit alone, for an engine that applies it chunk by chunk (btyd_predictions is row by
        row, so a chunk's rows are the whole frame's). The summaries may hold the buyers only: the
        fit reads no one else."""
        summary = (pd.concat(self._summaries).sort_index(kind="stable") if self._summaries
                   else pd.DataFrame({"buyer": pd.Series([], dtype=bool)}))
        self._summaries = []
        self.fit = fit_btyd(summary, config.btyd_penalizer)
        return self.fit
