"""The run's cutoff and horizon, resolved once: strict ISO dates, one rule for the default as_of.

The command line turns its text into a RunRequest here; everything below it receives a naive
``pd.Timestamp`` (midnight, UTC like every contract time column) and an ``int`` of days, and never
parses or defaults a date again. Python callers pass the same types (``check_cutoff`` says so
when they do not).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import pandas as pd

from features.errors import UserError

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(text: str, *, option: str = "--as-of") -> pd.Timestamp:
    """``YYYY-MM-DD`` as a naive midnight Timestamp; any other spelling is a UserError.

    Only ISO dates are read: ``01/06/2025`` means June 1st in some countries and January 6th in
    others, and a silent guess would move every cutoff of the run.
    """
    value = str(text).strip()
    if not _ISO_DATE.fullmatch(value):
        raise UserError(f"{option} {text!r} is not a date in the form YYYY-MM-DD (e.g. 2025-06-01)")
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option} {text!r} is not a calendar date (YYYY-MM-DD)") from None
    return pd.Timestamp(day).as_unit("ns")


def parse_horizon(days: int, *, option: str = "--horizon-days") -> int:
    """A positive whole number of days."""
    if isinstance(days, bool) or int(days) != days or days < 1:
        raise UserError(f"{option} must be a positive number of days, not {days!r}")
    return int(days)


def default_as_of(latest_transaction: pd.Timestamp | None, *, today: pd.Timestamp | None = None) -> pd.Timestamp:
    """The day after the latest valid transaction: the first day whose value no data has seen yet.

    The one rule for a run without ``--as-of`` (training, scoring, either engine). A latest
    transaction after today is a data error (one mistyped year would move the run decades ahead),
    so it stops the run rather than silently dating it in the future.
    """
    if latest_transaction is None or pd.isna(latest_transaction):
        raise UserError("transactions: no valid transaction to date the run from; pass --as-of")
    latest = pd.Timestamp(latest_transaction)
    today = pd.Timestamp.now().normalize() if today is None else today
    if latest.normalize() > today:
        raise UserError(f"transactions: the latest transaction is dated {latest.date()}, after today "
                        f"({today.date()}): fix the future-dated rows or pass --as-of")
    return (latest.normalize() + pd.Timedelta(days=1)).as_unit("ns")


def check_cutoff(as_of: pd.Timestamp, *, name: str = "as_of") -> pd.Timestamp:
    """``as_of`` itself when it is a naive Timestamp; a TypeError for a programming mistake otherwise."""
    if not isinstance(as_of, pd.Timestamp) or pd.isna(as_of) or as_of.tzinfo is not None:
        raise TypeError(f"{name} must be a naive pd.Timestamp (e.g. pd.Timestamp('2025-06-01')), "
                        f"not {as_of!r}")
    return as_of


@dataclass(frozen=True)
class RunRequest:
    """What the command line asked for: a cutoff (None: the default rule on the data) and a horizon."""

    as_of: pd.Timestamp | None
    horizon_days: int = 365

    @classmethod
    def from_text(cls, as_of: str | None, horizon_days: int = 365) -> RunRequest:
        return cls(None if as_of is None else parse_date(as_of), parse_horizon(horizon_days))

    def resolve_as_of(self, latest_transaction: pd.Timestamp | None) -> pd.Timestamp:
        """The requested cutoff, or the default one for data whose latest transaction is given."""
        return self.as_of if self.as_of is not None else default_as_of(latest_transaction)
