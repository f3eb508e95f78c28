"""UserError: a problem the user can fix, reported by the command line in one line with exit code 2;
UserNotice: something the user should know that does not stop the run, one ``warning:`` line.

Every error a user can cause (bad input data, a bad date or option, an unknown model, too little
data) is a UserError or a subclass (features.ingest.contract.ContractError for the data contract).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, options or environment: the run stops before writing anything, with this message."""


class UserNotice(UserWarning):
    """A run goes on but its result may mislead (``warnings.warn``): the command line prints the
    message as one ``warning:`` line on stderr; elsewhere it is an ordinary Python warning."""
