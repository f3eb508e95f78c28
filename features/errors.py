"""UserError: a problem the user can fix, reported by the command line in one line with exit code 2.

Every error a user can cause (bad input data, a bad date or option, an unknown model, too little
data) is a UserError or a subclass (features.ingest.contract.ContractError for the data contract).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, options or environment: the run stops before writing anything, with this message."""
