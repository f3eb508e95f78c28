"""Where a scoring run keeps its files until it publishes: one known folder per output folder.

Every run writing into a folder works in ``FOLDER/.clv-work/HOST-PID-TOKEN/`` (the model's files,
buckets, model inputs, the scores and manifest before they are published), whatever its output's name. So the
start of any run finds every leftover of a killed run in one place and deletes the work
directories of this host's processes that are gone, even when the killed run wrote another output.
A live run's directory (its process still running), and other hosts' (a shared folder: their
processes cannot be seen from here), are left alone. The folder itself is removed once empty.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from pathlib import Path

from features import atomic

WORK_FOLDER = ".clv-work"
_NAME = re.compile(r"^(?P<host>.+)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})$")


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
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for candidate in sorted(root.iterdir()):
        match = _NAME.match(candidate.name)
        if match is None or match["host"] != _host():
            continue  # not a run's, or another machine's run on a shared folder
        pid = int(match["pid"])
        if pid == os.getpid() or atomic.alive(pid):
            continue  # a run going on now (in this process or another)
        atomic.remove(candidate)
        removed.append(candidate)
    _remove_if_empty(root)
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
