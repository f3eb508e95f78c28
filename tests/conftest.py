"""Shared pytest fixtures. Each block is owned by one area; keep blocks self-contained."""

from __future__ import annotations

# ================================================================ Threads (the whole suite)
# pytest-xdist runs two processes on two cores and each trains with LightGBM's OpenMP threads:
# threads spinning at a barrier (libgomp spins a while before it sleeps) take the CPU the other
# process needs. Passive waiting, set before anything loads OpenMP, here and in every process the
# tests start (Makefile sets it too).
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# ================================================================ Garbage collection (the whole suite)
# Each process that runs tests imports MLflow, pandas, LightGBM and this project with the collector
# paused, then freezes them out of its scans (serving.collector), as tests/clv_process.py's zygote
# does for every `clv` run: a test process ran a dozen full collections while importing them, then
# scanned their half a million objects in every later one (docs/performance.md, "Session 17").
# pytest-xdist's controller runs no test: it does not import them.
from serving.collector import frozen_imports
from tests.clv_process import PRELOAD


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        with frozen_imports():
            for name in PRELOAD:
                __import__(name)


# ================================================================ Order (the whole suite)
# pytest-xdist hands whole modules to its processes (--dist loadscope), in collection order with
# --no-loadscope-reorder (its default order is most tests first, which put one-test modules of a
# minute or more last). The suite ends when the last module does, so the slow modules go first and
# the many short ones fill the end.
def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: in-module order kept


# ================================================================ PostgreSQL (features/ingest/database.py)
# A throwaway PostgreSQL cluster for the whole session: initdb in a temporary directory, a free
# loopback port, trust on the unix socket (for set-up) and scram-sha-256 over TCP (so a wrong
# password really fails). Where the server binaries are missing they are installed with apt as
# root; under CI=true these tests never skip.
import fnmatch
import gc
import glob
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.clv_process import stop_zygote

PG_USER = "clv"
# The machine's temporary directory, read before the session points TMPDIR at its own folder (the
# "Temporary files" block below): the apt lock must be shared by the pytest-xdist workers, and the
# `postgres` user cannot enter pytest's folder (mode 0700, owned by the user running the tests).
SYSTEM_TEMP = Path(tempfile.gettempdir())


@dataclass(frozen=True)
class PostgresServer:
    """Connection facts of the test cluster; ``url()`` builds a SQLAlchemy/libpq URL for a database."""

    host: str
    port: int
    user: str
    password: str
    socket_dir: Path

    def url(self, database: str = "postgres", *, password: bool = True, query: str = "") -> str:
        secret = f":{quote(self.password, safe='')}" if password else ""
        return (f"postgresql://{self.user}{secret}@{self.host}:{self.port}/{database}"
                + (f"?{query}" if query else ""))

    def admin(self):
        """A superuser psycopg connection over the unix socket (trust), autocommit."""
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=self.user,
                               dbname="postgres", autocommit=True)

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its URL (with the password)."""
        from psycopg import sql

        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


def _postgres_bin_dir() -> Path | None:
    """Directory holding initdb and pg_ctl of one PostgreSQL version (PATH first, then Debian's layout)."""
    on_path = shutil.which("initdb")
    if on_path:
        directory = Path(on_path).resolve().parent
        if (directory / "pg_ctl").exists():
            return directory
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: int(re.sub(r"\D", "", Path(p).parent.name) or 0), reverse=True)
    for candidate in map(Path, versions):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


@contextmanager
def apt_lock():
    """Held around an apt-get install: `make test` runs the suite in several processes (pytest-xdist),
    each with its own session fixtures, and two apt-gets at once fail on dpkg's lock."""
    import fcntl

    with open(SYSTEM_TEMP / "clv-tests-apt.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _install_postgres() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
                   check=True, env=env, capture_output=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], as_root: bool) -> subprocess.CompletedProcess:
    # initdb refuses to run as root: as root, run the server tools as the `postgres` user, which
    # cannot enter the session's TMPDIR (pytest's folder): the server's temporary files go to the
    # machine's.
    full = ["runuser", "-u", "postgres", "--", *cmd] if as_root else cmd
    env = {**os.environ, "TMPDIR": str(SYSTEM_TEMP)}
    return subprocess.run(full, capture_output=True, text=True, check=False, env=env)


@pytest.fixture(scope="session")
def postgres_server():
    """A running PostgreSQL cluster on 127.0.0.1:<free port>, stopped and removed after the session."""
    as_root = os.geteuid() == 0
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        if as_root:
            with apt_lock():  # pytest-xdist: another worker may be installing it right now
                if _postgres_bin_dir() is None:
                    _install_postgres()
            bin_dir = _postgres_bin_dir()
        elif os.environ.get("CI", "").lower() != "true":
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed and this user "
                        "cannot install them (not root): apt-get install postgresql")
        if bin_dir is None:
            pytest.fail("PostgreSQL server binaries are missing and could not be installed")

    base = Path(tempfile.mkdtemp(prefix="clv-pg-", dir=SYSTEM_TEMP))
    data, log = base / "data", base / "log"
    if as_root:
        shutil.chown(base, user="postgres", group="postgres")
    password = secrets.token_urlsafe(12) + "@:/%"  # characters that must be quoted in a URL
    started = False
    try:
        init = _run([str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "-E", "UTF8",
                     "--no-locale", "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256"],
                    as_root)
        if init.returncode:
            pytest.fail(f"initdb failed: {init.stderr.strip()}")
        for _attempt in range(3):  # a free port can be taken between choosing it and binding it
            port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            start = _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                          "start", "-o", options], as_root)
            if start.returncode == 0:
                started = True
                break
        if not started:
            pytest.fail(f"pg_ctl start failed: {start.stderr.strip()}\n{log.read_text()[-2000:]}")
        server = PostgresServer("127.0.0.1", port, PG_USER, password, base)
        from psycopg import sql

        with server.admin() as conn:
            conn.execute(sql.SQL("ALTER USER {} PASSWORD {}").format(
                sql.Identifier(PG_USER), sql.Literal(password)))
        yield server
    finally:
        if started:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], as_root)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """URL (with password) of a fresh database for one test, named after the test."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return postgres_server.create_database(f"t_{name}")
# ================================================================ end PostgreSQL


# ================================================================ Temporary files (the whole suite)
# "Leave no processes or temp folders behind": the session points TMPDIR (and tempfile.tempdir) at a
# folder of its own under pytest's basetemp, so every temporary file or folder the tests, the code
# under test and their subprocesses create without naming a place lands there, and that folder must
# be empty when the session ends. Each pytest-xdist worker has its own basetemp, hence its own
# folder; other processes on the machine never write there, so the check cannot be fooled by them.
_TEMP_VARIABLES = ("TMPDIR", "TEMP", "TMP")
# Dask's scratch root is a fixed folder every local cluster shares and reuses (never one per run); its
# worker folders go when the workers close, its two lock files stay (distributed.diskutils.WorkSpace).
_MAY_STAY = {"dask-scratch-space/", "dask-scratch-space/global.lock", "dask-scratch-space/purge.lock"}
# The scorer's workers fork from multiprocessing's fork server, which listens on a socket in a folder
# of this process's (the scorer's clv-mp-HOST-PID-TOKEN, or multiprocessing's own pymp-* if something
# made that one first); both are removed when this process exits. Another process's clv-mp-* folder
# (a scorer killed by a test) must not stay.
_MAY_STAY_PATTERNS = (f"clv-mp-*-{os.getpid()}-*/listener-*", "pymp-*/listener-*")


def _leftovers(entries: list[Path], folder: Path) -> list[str]:
    """The files and empty folders (ending in ``/``) in or under ``entries``, relative to ``folder``,
    except what may stay."""
    found = []
    for entry in entries:
        inside = sorted(entry.rglob("*")) if entry.is_dir() and not entry.is_symlink() else []
        for path in [entry, *inside]:
            name = path.relative_to(folder).as_posix()
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    found.append(f"{name}/")
            else:
                found.append(name)
    return [name for name in found
            if name not in _MAY_STAY and not any(fnmatch.fnmatch(name, p) for p in _MAY_STAY_PATTERNS)]


@pytest.fixture(scope="session", autouse=True)
def no_temporary_files_left_behind(tmp_path_factory):
    """The session's own temporary directory; fails the session if anything is left in it."""
    folder = tmp_path_factory.getbasetemp() / "tempdir"
    folder.mkdir(exist_ok=True)
    before = set(folder.iterdir())
    saved_env = {name: os.environ.get(name) for name in _TEMP_VARIABLES}
    saved_tempdir = tempfile.tempdir
    for name in _TEMP_VARIABLES:
        os.environ[name] = str(folder)
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_tempdir
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    stop_zygote()  # its folder is in this one (tests/clv_process.py)
    gc.collect()  # a TemporaryDirectory no one holds any more is removed when it is collected
    left = _leftovers(sorted(set(folder.iterdir()) - before), folder)
    if left:
        shown = left if len(left) <= 40 else [*left[:40], f"... and {len(left) - 40} more"]
        names = "\n  ".join(shown)
        pytest.fail(f"the tests left {len(left)} temporary file(s) or empty folder(s) behind in {folder} "
                    "(TMPDIR during the session); give MLflow, tempfile and the code under test a "
                    "place that is removed afterwards (pytest's tmp_path, dst_path=..., a "
                    f"TemporaryDirectory):\n  {names}", pytrace=False)
# ================================================================ end Temporary files


# ================================================================ MLflow stores (the whole suite)
# MLflow makes its tables in a new SQLite store by running its migrations: 2-4 s of CPU a store, and
# a score of modules start from an empty store. Each test process makes one empty store and copies
# it: the copy is what MLflow would have made. Its Default experiment keeps its artifacts in the
# template's folder, not in ./mlruns of the folder pytest runs in. (That clv makes a store where
# there is none is checked in tests/training/test_tracking.py and by `make demo`.)
@pytest.fixture(scope="session")
def new_mlflow_store(tmp_path_factory):
    """``new_mlflow_store(folder)``: an empty MLflow store at ``folder/mlflow.db``; its sqlite:/// URI."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from training.tracking import quiet_mlflow_warnings

    quiet_mlflow_warnings()
    folder = tmp_path_factory.mktemp("mlflow-template")
    template = folder / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{template}", (folder / "mlruns").as_uri()).engine.dispose()

    def new(at: Path) -> str:
        at.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, at / "mlflow.db")
        return f"sqlite:///{at / 'mlflow.db'}"

    return new
# ================================================================ end MLflow stores
