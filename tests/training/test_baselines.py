import numpy as np
import pandas as pd
import pytest

from training.baselines import bgnbd_value

CUTOFF = pd.Timestamp("2024-01-01")


def ts(*values):
    return pd.to_datetime(list(values)).astype("datetime64[ns]")


def buy_till_you_die_log(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers with Poisson purchases at heterogeneous rates over two years, some dropping out."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2022-01-01")
    rate = rng.gamma(1.0, 6.0, n) / 365.0
    life = np.minimum(rng.exponential(500.0, n), 730.0)
    counts = rng.poisson(rate * life) + 1
    who = np.repeat(np.arange(n), counts)
    day = np.floor(rng.random(len(who)) * life[who])
    day[np.r_[0, np.cumsum(counts)[:-1]]] = 0.0  # the first purchase on signup day
    ids = np.array([f"C{i:04d}" for i in range(n)])
    transactions = pd.DataFrame(
        {
            "customer_id": ids[who],
            "timestamp": (start + pd.to_timedelta(day, unit="D")).astype("datetime64[ns]"),
            "amount": rng.gamma(4.0, 20.0, len(who)),
        }
    )
    customers = pd.DataFrame(
        {"customer_id": ids, "signup_date": np.full(n, start, dtype="datetime64[ns]")}
    )
    return transactions, customers


def test_bgnbd_predicts_more_for_frequent_recent_buyers():
    transactions, customers = buy_till_you_die_log(800, seed=0)
    result = bgnbd_value(transactions, customers, CUTOFF, 365)
    assert result.status.startswith("ok"), result.status
    assert set(result.params) >= {"bgnbd_r", "bgnbd_alpha", "gammagamma_p"}
    prediction = result.prediction
    assert prediction.index.equals(pd.Index(customers["customer_id"], name="customer_id"))
    last = transactions.groupby("customer_id")["timestamp"].max()
    count = transactions.groupby("customer_id").size()
    recent_frequent = (last >= "2023-10-01") & (count >= 5)
    lapsed_single = (last < "2022-06-01") & (count == 1)
    assert prediction[recent_frequent].mean() > 3 * prediction[lapsed_single].mean()
    assert (prediction >= 0).all()


def test_bgnbd_uses_only_purchases_before_the_cutoff_and_scores_non_buyers():
    transactions, customers = buy_till_you_die_log(400, seed=1)
    later = pd.DataFrame(
        {
            "customer_id": ["C0000"] * 50,
            "timestamp": np.full(50, pd.Timestamp("2024-02-01"), dtype="datetime64[ns]"),
            "amount": np.full(50, 1e6),
        }
    )
    newcomer = pd.DataFrame({"customer_id": ["NEW"], "signup_date": ts("2023-12-01")})
    before = bgnbd_value(transactions, customers, CUTOFF, 365).prediction
    after = bgnbd_value(
        pd.concat([transactions, later]), pd.concat([customers, newcomer]), CUTOFF, 365
    ).prediction
    pd.testing.assert_series_equal(after.drop("NEW"), before)
    assert np.isfinite(after["NEW"]) and after["NEW"] > 0


def test_bgnbd_failure_is_reported_not_raised():
    transactions, customers = buy_till_you_die_log(5, seed=2)
    result = bgnbd_value(transactions, customers, CUTOFF, 365)
    assert result.prediction is None
    assert result.status == "failed: 5 customers bought before the cutoff (need 10)"


@pytest.mark.parametrize("horizon", [90, 365])
def test_bgnbd_expected_value_grows_with_the_horizon(horizon):
    transactions, customers = buy_till_you_die_log(400, seed=3)
    short = bgnbd_value(transactions, customers, CUTOFF, horizon).prediction
    long = bgnbd_value(transactions, customers, CUTOFF, horizon * 2).prediction
    assert (long >= short).all() and long.sum() > short.sum()
