"""How ``clv`` ends when it is told to stop.

What is specified here: SIGTERM (a scheduler's timeout, ``timeout``, ``kill``) and Ctrl-C (SIGINT)
unwind the command like an error, so every ``finally`` runs (workers stopped, work directories
removed), then ``clv`` prints one ``error:`` line and exits with 128 + the signal's number; the
same signal again during that clean-up ends the process at once; a signal the process was started
ignoring stays ignored; the handlers are put back once the command has ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import typer

from serving.cli_errors import OneLineUsageErrors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def stopping_app(cleaned: list[str]) -> typer.Typer:
    """A command line with one command that signals itself, as a scheduler would, mid-command."""
    app = typer.Typer(cls=OneLineUsageErrors, add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def work(signal_name: str) -> None:
        try:
            os.kill(os.getpid(), signal.Signals[signal_name])
            cleaned.append("not stopped")  # reached only if the signal did not stop the command
        finally:
            cleaned.append("finally ran")

    @app.command()
    def handlers() -> None:
        print(signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))

    return app


@pytest.mark.parametrize(("signal_name", "code", "named"), [
    ("SIGTERM", 143, "SIGTERM"), ("SIGINT", 130, "Ctrl-C (SIGINT)")])
def test_a_stopped_command_cleans_up_then_says_so_in_one_line(signal_name, code, named, capsys, in_a_terminal):
    cleaned: list[str] = []
    handlers_before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as ended:
        stopping_app(cleaned)(["work", signal_name])
    assert ended.value.code == code
    assert cleaned == ["finally ran"]
    assert capsys.readouterr().err == (
        f"error: stopped by {named} before it finished (outputs are published whole or not at all)\n")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers_before


@pytest.fixture
def in_a_terminal():
    """Ctrl-C heeded, as in a terminal (pytest-xdist's workers start ignoring it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_signal_the_process_was_started_ignoring_stays_ignored(capsys):
    """A background job of a shell ignores Ctrl-C; clv must not start heeding it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(SystemExit) as ended:
            stopping_app([])(["handlers"])
        assert ended.value.code == 0
        sigint, sigterm = capsys.readouterr().out.split(maxsplit=1)
        assert sigint == str(signal.SIG_IGN)
        assert "_raise_stopped" in sigterm
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_same_signal_during_the_clean_up_ends_the_process_at_once(tmp_path):
    """A clean-up that hangs must not make the process unkillable by the signal that stopped it."""
    code = """
import os, signal, time, typer
from serving.cli_errors import OneLineUsageErrors
app = typer.Typer(cls=OneLineUsageErrors, add_completion=False, pretty_exceptions_enable=False)

@app.command()
def work() -> None:
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # the scheduler again, while this clean-up runs
        time.sleep(60)

app()
"""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    ended = subprocess.run([sys.executable, "-c", code], check=False, env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=50)
    assert ended.returncode == -signal.SIGTERM
    assert "Traceback" not in ended.stderr
