"""Where a scoring run keeps its files until it publishes: one known folder per output folder.

Every run writing into a folder works in ``FOLDER/.clv-work/HOST-PID-TOKEN/`` (the model's files,
buckets, model inputs, the scores and manifest before they are published), whatever its output's name. So the
start of any run finds every leftover of a killed run in one place and deletes the work
directories of this host's processes that are gone, even when the killed run wrote another output.
A live run's directory (its process still running), and other hosts' (a shared folder: their
processes cannot be seen from here), are left alone. The folder itself is removed once empty.

The worker pool keeps one thing outside it: multiprocessing's temporary folder, where the fork
server listens on a socket. A socket's path is at most 107 bytes on Linux, so it stays in the
system's temporary directory, under a short name of the same kind, ``TMP/clv-mp-HOST-PID-TOKEN``
(HOST a short hash of this machine's name), so that the next scorer on this machine deletes it too
when its process was killed before it could.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path

from features import atomic
from features.errors import UserError

WORK_FOLDER = ".clv-work"
_NAME = re.compile(r"^(?P<host>.+)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})$")
WORKERS_FOLDER_PREFIX = "clv-mp-"
_WORKERS_NAME = re.compile(r"^clv-mp-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-(?P<token>[0-9a-f]{4})$")
SOCKET_PATH_MAX = 107  # bytes of a Unix socket's path on Linux (sockaddr_un.sun_path, less its NUL)
_SOCKET_NAME_LENGTH = len("/clv-mp-000000-4194304-0000/listener-00000000")  # the longest folder, multiprocessing's name


def _host() -> str:
    """This machine's name as it may appear in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"


def work_root(out) -> Path:
    """``FOLDER/.clv-work``: where every run writing into the folder of ``out`` keeps its work."""
    return Path(out).parent / WORK_FOLDER


def make_work_directory(out) -> Path:
    """A new, empty work directory for this run: ``FOLDER/.clv-work/HOST-PID-TOKEN``."""
    work = work_root(out) / f"{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
    work.mkdir(parents=True)  # parents again if a finishing run just removed the empty root
    return work


def remove_dead_work_directories(out) -> list[Path]:
    """Delete the work directories of this host's runs whose process is gone (any output name)."""
    root = work_root(out)
    removed = _remove_dead(root, _NAME, _host())
    _remove_if_empty(root)
    return removed


def make_workers_folder() -> Path:
    """A new folder, private to this user, for this process's worker pool in the system's temporary
    directory, ``TMP/clv-mp-HOST-PID-TOKEN``; a UserError if a socket in it would not fit."""
    root = tempfile.gettempdir()
    if len(os.fsencode(root)) + _SOCKET_NAME_LENGTH > SOCKET_PATH_MAX:
        raise UserError(
            f"the temporary directory {root} is too long a path for the worker processes' socket "
            f"(at most {SOCKET_PATH_MAX - _SOCKET_NAME_LENGTH} bytes): point TMPDIR at a shorter folder, "
            "or score with --workers 1")
    folder = Path(root) / f"{WORKERS_FOLDER_PREFIX}{_host_tag()}-{os.getpid()}-{secrets.token_hex(2)}"
    folder.mkdir(mode=0o700)
    return folder


def remove_dead_workers_folders() -> list[Path]:
    """Delete the workers folders of this host's processes that are gone (killed before they could)."""
    return _remove_dead(Path(tempfile.gettempdir()), _WORKERS_NAME, _host_tag())


def _host_tag() -> str:
    """Six hex digits standing for this machine's name in a short file name."""
    return hashlib.sha256(_host().encode()).hexdigest()[:6]


def _remove_dead(root: Path, name: re.Pattern, host: str) -> list[Path]:
    """Delete this user's folders in ``root`` whose ``name`` says they are of a process of this
    ``host`` that is gone; keep live ones (this process's too) and other hosts' (their processes
    cannot be seen from here)."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for candidate in sorted(root.iterdir()):
        match = name.match(candidate.name)
        if match is None or match["host"] != host:
            continue  # not a run's, or another machine's run on a shared folder
        pid = int(match["pid"])
        if pid == os.getpid() or atomic.alive(pid):
            continue  # a run going on now (in this process or another)
        try:
            if candidate.lstat().st_uid != os.getuid():
                continue  # another user's, in a shared temporary directory
        except FileNotFoundError:
            continue  # removed meanwhile by another run
        atomic.remove(candidate)
        removed.append(candidate)
    return removed


def release_work_directory(work: Path) -> None:
    """Delete a run's work directory, and the work folder when no other run is using it."""
    shutil.rmtree(work, ignore_errors=True)
    _remove_if_empty(work.parent)


def _remove_if_empty(root: Path) -> None:
    try:
        root.rmdir()
    except OSError:
        pass  # not empty (another run works there) or already gone
