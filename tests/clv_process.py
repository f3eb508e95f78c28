"""Runs the ``clv`` command line in a process of its own, as a user does, without paying its imports each time.

A test that checks what a user sees (one ``error:`` line, exit code 2, no password) must run ``clv``
in its own process: its own environment, working folder, stdout, stderr and exit. A fresh process
spends 2-8 s of CPU importing MLflow, LightGBM, scikit-learn and pandas, and the suite runs about
sixty of them. So a *zygote* process imports those libraries and this project's engines once; each
run forks from it, takes its arguments, environment and folder, points stdout and stderr at files,
imports the command line fresh (its consoles read ``COLUMNS`` when they are made) and calls the
console script's entry point, ``serving.cli:app``, then exits as a ``clv`` process exits (threads
joined, atexit handlers run). tests/serving/test_user_errors.py checks that the installed console script answers
as the forked process does. ``CLV_TEST_FRESH_PROCESSES=1`` runs every case in a new ``clv`` process.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from serving.collector import frozen_imports

CLV = str(Path(sys.executable).with_name("clv"))  # the console script pyproject.toml installs
ROOT = Path(__file__).resolve().parents[1]
# The libraries and this project's engines; not the command line itself: serving.cli and
# serving.cli_errors make their consoles at import, from the run's COLUMNS. Not Dask (only
# `--engine dask` imports it).
PRELOAD = ("numpy", "pandas", "pyarrow.parquet", "scipy.stats", "sklearn.base", "lightgbm", "mlflow",
           "mlflow.pyfunc", "sqlalchemy", "typer", "rich.console",
           "features.build", "features.ingest.database_load", "features.ingest.mapping", "features.ingest.source",
           "features.labels", "features.manifest", "features.synthetic.world", "serving.contact_list",
           "serving.report.build", "serving.scoring.chunked", "serving.scoring.printed_summary",
           "serving.scoring.tracked_run", "training.pandas_engine", "training.train")


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def run_clv(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 150) -> Outcome:
    """``clv <args>`` with exactly ``env`` as its environment, in ``cwd``; its exit code and output."""
    if os.environ.get("CLV_TEST_FRESH_PROCESSES") == "1":
        return run_installed_clv(args, env=env, cwd=cwd, timeout=timeout)
    return _zygote().run(list(args), env=env, cwd=cwd, timeout=timeout)


def run_installed_clv(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 150) -> Outcome:
    """The installed console script in a new process (what a user's shell runs)."""
    try:
        proc = subprocess.run([CLV, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as err:
        return Outcome(-1, str(err.stdout or ""), f"timed out after {err.timeout}s: {err.stderr or ''}")
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


# ---------------------------------------------------------------------------------------------
# The test side: one zygote per test process, started on first use, stopped when the process ends


class Zygote:
    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="clv-zygote-"))
        self.address = str(self.folder / "socket")
        self.log = open(self.folder / "zygote.log", "wb")  # noqa: SIM115 (closed in stop)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen([sys.executable, "-m", "tests.clv_process", self.address], env=env,
                                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the clv zygote ended: {(self.folder / 'zygote.log').read_text()[-2000:]}")
            try:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(self.address)
                return conn
            except (FileNotFoundError, ConnectionRefusedError):
                conn.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def run(self, args: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> Outcome:
        fd, out = tempfile.mkstemp(dir=self.folder, suffix=".out")
        os.close(fd)
        err = out[:-4] + ".err"
        conn = self._connect()
        try:
            request = {"args": args, "env": dict(env), "cwd": str(cwd), "stdout": out, "stderr": err}
            conn.sendall(json.dumps(request).encode() + b"\n")
            conn.settimeout(timeout)
            reply, started = b"", time.monotonic()
            try:
                while chunk := conn.recv(4096):  # the run's pid, its exit code, then EOF when it has ended
                    reply += chunk
            except TimeoutError:
                lines = reply.decode().split()
                if lines:
                    _kill_group(int(lines[0]))
                return Outcome(-1, _read(out), f"timed out after {time.monotonic() - started:.0f}s: {_read(err)}")
        finally:
            conn.close()
        lines = reply.decode().split("\n")
        code = int(lines[1]) if len(lines) > 2 and lines[1] else -1  # -1: it died without saying
        outcome = Outcome(code, _read(out), _read(err))
        Path(out).unlink(missing_ok=True)
        Path(err).unlink(missing_ok=True)
        return outcome

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


_ZYGOTE: Zygote | None = None
_ZYGOTE_LOCK = threading.Lock()


def _zygote() -> Zygote:
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None:
            _ZYGOTE = Zygote()
            atexit.register(stop_zygote)
        return _ZYGOTE


def stop_zygote() -> None:
    """End this process's zygote, if it started one, and remove its folder."""
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is not None:
            _ZYGOTE.stop()
            _ZYGOTE = None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the run and anything it started (it leads its own group)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------
# The zygote side: `python -m tests.clv_process SOCKET`. No try/finally or with-block encloses the
# fork, so a run unwinds through nothing of the zygote's and exits as a clv process does.


def _serve(address: str) -> None:
    _end_with_parent()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # as the command line sets it before importing MLflow
    with frozen_imports():  # every run forked from here starts with these objects frozen
        for name in PRELOAD:
            __import__(name)
    assert threading.active_count() == 1, f"a preloaded library started threads: {threading.enumerate()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    server.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # runs are reaped by the kernel
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            _run_in_child(conn)  # raises SystemExit: the process ends as `clv` would
        conn.close()


def _end_with_parent() -> None:
    """SIGKILL this zygote when the test process that started it ends, however it ends (Linux)."""
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG; not inherited by runs
    if os.getppid() != parent:
        os._exit(0)


def _run_in_child(conn: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the run waits for its own children (scorer workers)
    os.setsid()  # its own process group, so a timed-out run is killed with what it started
    request = json.loads(conn.makefile("r").readline())
    conn.sendall(f"{os.getpid()}\n".encode())
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    os.chdir(request["cwd"])  # after the redirection: a failure here shows in the run's stderr
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # chosen again from this environment's TMPDIR, as a new process does
    sys.argv = [CLV, *request["args"]]
    try:
        from serving.cli import app

        app()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 (printed and exit 1: what Python does with an uncaught one)
        traceback.print_exc()
        code = 1
    # The connection stays open until this process has ended: EOF tells the test it has.
    conn.sendall(f"{code}\n".encode())
    raise SystemExit(code)


if __name__ == "__main__":
    _serve(sys.argv[1])
