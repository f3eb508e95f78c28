"""Windows that fit the data: as many as the history holds, sized from the horizon, or a clear refusal."""

import pandas as pd
import pytest

from features.config import FeatureConfig
from features.errors import UserError
from training.config import TrainConfig
from training.plan import MAX_WINDOWS, plan_windows

AS_OF = pd.Timestamp("2026-01-01")


def config(horizon: int, **options) -> TrainConfig:
    return TrainConfig(features=FeatureConfig(horizon_days=horizon), **options)


def test_years_of_history_give_the_most_windows_a_quarter_apart():
    plan = plan_windows(AS_OF, config(365), pd.Timestamp("2021-01-01"))
    assert (plan.n_windows, plan.step_days) == (MAX_WINDOWS, 91)
    assert len(plan.train_cutoffs) + len(plan.validation_cutoffs) == MAX_WINDOWS
    assert all(c + pd.Timedelta(days=365) <= plan.test_cutoff for c in plan.train_cutoffs + plan.validation_cutoffs)
    assert min(plan.train_cutoffs) >= pd.Timestamp("2021-01-31")  # a month of history before the first
    assert "8 windows 91 days apart" in plan.reason


def test_nine_months_of_history_and_a_91_day_horizon_still_train():
    # The case a user met: "need at least 2 training windows"; now three windows three weeks apart.
    plan = plan_windows(AS_OF, config(91), AS_OF - pd.Timedelta(days=274))
    assert (plan.n_windows, plan.step_days) == (3, 21)
    assert plan.test_cutoff == AS_OF - pd.Timedelta(days=91)
    assert max(plan.validation_cutoffs) == plan.test_cutoff - pd.Timedelta(days=91)
    assert min(plan.train_cutoffs) >= AS_OF - pd.Timedelta(days=274 - 30)


def test_windows_are_never_closer_than_a_quarter_of_the_horizon_in_whole_weeks():
    plan = plan_windows(AS_OF, config(182), AS_OF - pd.Timedelta(days=3 * 365))
    assert plan.step_days % 7 == 0 and plan.step_days >= 182 // 4 // 7 * 7


def test_a_history_too_short_for_an_out_of_time_test_says_which_horizon_would_fit():
    with pytest.raises(UserError, match=r"history too short .* 91-day horizon.*use --horizon-days 56 or less"):
        plan_windows(AS_OF, config(91), AS_OF - pd.Timedelta(days=150))


def test_the_configuration_overrides_the_sizing():
    plan = plan_windows(AS_OF, config(365, n_windows=4, step_days=91), pd.Timestamp("2021-01-01"))
    assert (plan.n_windows, plan.step_days) == (4, 91) and plan.reason.endswith("as configured")
    stepped = plan_windows(AS_OF, config(365, step_days=28), pd.Timestamp("2021-01-01"))
    assert stepped.step_days == 28 and stepped.n_windows == MAX_WINDOWS


def test_without_the_historys_start_the_defaults_apply():
    plan = plan_windows(AS_OF, config(365))
    assert (plan.n_windows, plan.step_days) == (MAX_WINDOWS, 91) and "defaults" in plan.reason
