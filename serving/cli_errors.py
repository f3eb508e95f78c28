"""How the ``clv`` command line ends on a user's mistake: one ``error:`` line on stderr and exit code 2.

A features.errors.UserError, an OSError about a path the user gave, and click's own usage errors
(a missing, unknown or mistyped option) all end the same way, never with a traceback.
"""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from features.errors import UserError

errors = Console(stderr=True)


def print_error(message: str) -> None:
    """``error: <message>`` as one line on stderr (line breaks inside the message become spaces)."""
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    errors.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True, highlight=False)


# The base of click's usage errors; recent typer versions vendor click under a private module, so
# it is found through a public name.
_ClickException = next(k for k in typer.BadParameter.__mro__ if k.__name__ == "ClickException")


class OneLineUsageErrors(TyperGroup):
    """Usage errors (a missing, unknown or mistyped option) end like every other user error: one
    ``error:`` line on stderr and exit code 2, instead of click's usage block."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            # Non-standalone, click returns the exit code of a typer.Exit (commands return None).
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _ClickException as err:
            if type(err).__name__ != "NoArgsIsHelpError":  # plain `clv`: the help is already printed
                ctx = getattr(err, "ctx", None)
                hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
                print_error(err.format_message().rstrip(".") + hint)
            sys.exit(err.exit_code)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def friendly_errors(command):
    """Bad input ends with one clear line on stderr and exit code 2, not a traceback: a UserError, or
    an OSError about a path (an output folder that cannot be created, a read-only file)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            print_error(str(err))
            raise typer.Exit(code=2) from None
        except OSError as err:  # a path the user gave that cannot be read or written
            if err.filename is None:
                raise
            print_error(f"{err.filename}: {err.strerror or err}")
            raise typer.Exit(code=2) from None

    return wrapper
