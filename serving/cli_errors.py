"""How the ``clv`` command line ends on a user's mistake: one ``error:`` line on stderr and exit code 2.

A features.errors.UserError, an OSError about a path the user gave, and click's own usage errors
(a missing, unknown or mistyped option) all end the same way, never with a traceback.

A features.errors.UserNotice raised as a Python warning (the run goes on) is printed the same way,
as one ``warning:`` line.

And how it ends when told to stop: SIGTERM (a scheduler's timeout, ``timeout``, ``kill``) and
Ctrl-C (SIGINT) unwind the command like an error, so that everything it started is stopped and removed
(worker processes, work directories, MLflow runs) before it exits with 128 + the signal's number.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
import warnings

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from features.errors import UserError, UserNotice

errors = Console(stderr=True)


def print_error(message: str) -> None:
    """``error: <message>`` as one line on stderr (line breaks inside the message become spaces)."""
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    errors.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True, highlight=False)


def print_warning(message: str) -> None:
    """``warning: <message>`` as one line on stderr."""
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    errors.print(Text.assemble(("warning: ", "bold yellow"), line), soft_wrap=True, highlight=False)


def one_line_notices(show):
    """A ``warnings.showwarning`` that prints a UserNotice as one ``warning:`` line (no file, line
    or source, which mean nothing to a user) and hands any other warning to ``show``."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserNotice):
            print_warning(str(message))
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


# The base of click's usage errors; recent typer versions vendor click under a private module, so
# it is found through a public name.
_ClickException = next(k for k in typer.BadParameter.__mro__ if k.__name__ == "ClickException")


class Stopped(BaseException):
    """Raised in the main thread when the process is told to stop (SIGTERM, or Ctrl-C's SIGINT). Not
    an Exception: nothing that handles errors may swallow it; every ``finally`` on the way out runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_SIGNAL_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C (SIGINT)"}
STOPPED_LINE = "stopped by {name} before it finished (outputs are published whole or not at all)"


def _raise_stopped(signum, _frame) -> None:
    signal.signal(signum, signal.SIG_DFL)  # the same signal again, during the clean-up, ends the process at once
    raise Stopped(signum)


def _stop_on_signals() -> dict:
    """Turn SIGTERM and SIGINT into Stopped from now on; returns the handlers to restore. A signal
    this process was started ignoring (SIGINT in a background job) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for signum in _SIGNAL_NAMES:
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            previous[signum] = signal.signal(signum, _raise_stopped)
    return previous


class OneLineUsageErrors(TyperGroup):
    """Usage errors (a missing, unknown or mistyped option) end like every other user error: one
    ``error:`` line on stderr and exit code 2, instead of click's usage block."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        previous = _stop_on_signals()
        shown = warnings.showwarning
        warnings.showwarning = one_line_notices(shown)
        try:
            # Non-standalone, click returns the exit code of a typer.Exit (commands return None).
            code = super().main(*args, standalone_mode=False, **kwargs)
        except Stopped as stop:
            print_error(STOPPED_LINE.format(name=_SIGNAL_NAMES[stop.signum]))
            sys.exit(128 + stop.signum)
        except _ClickException as err:
            if type(err).__name__ != "NoArgsIsHelpError":  # plain `clv`: the help is already printed
                ctx = getattr(err, "ctx", None)
                hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
                print_error(err.format_message().rstrip(".") + hint)
            sys.exit(err.exit_code)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        finally:
            warnings.showwarning = shown
            for signum, handler in previous.items():
                signal.signal(signum, handler)
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
