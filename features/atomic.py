"""Publishing outputs whole: written under a hidden temporary name beside the target, synced, renamed.

A reader sees the previous output or the new one, never part of one. Every output of the project
(feature tables, scores, manifests, rejects, reports, generated worlds) goes through ``publishing``
or the helpers built on it. A run killed mid-write leaves only a hidden temporary naming its
process (``.NAME.PID-XXXXXXXX.KIND.tmp``), which ``remove_stale`` deletes on the next run.
Folders are swapped in with one atomic exchange where the system has it (Linux ``renameat2``), so
the target path is never missing; elsewhere the old folder is moved aside for a moment.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def temporary_path(path: Path, kind: str = "part") -> Path:
    """A hidden name beside ``path`` that names this process: ``.NAME.PID-XXXXXXXX.KIND.tmp``."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.{kind}.tmp"


@contextlib.contextmanager
def publishing(path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write (a file, or a folder with ``directory=True``); on success it is
    synced and renamed to ``path`` (replacing what was there), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path, "dir" if directory else "part")
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        publish_path(tmp, path)
    finally:
        remove(tmp)


def publish_path(tmp: Path, path) -> Path:
    """Sync a finished temporary file or folder (written beside ``path``) and rename it to ``path``."""
    path = Path(path)
    if tmp.is_dir():
        _sync_tree(tmp)
    else:
        _sync_file(tmp)
    _replace(tmp, path)
    _sync_file(path.parent)
    return path


def write_text(path, text: str) -> Path:
    """Publish a UTF-8 text file whole."""
    with publishing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, value) -> Path:
    """Publish a JSON file (indented, non-JSON values as text) whole."""
    return write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def write_frame(path, frame: pd.DataFrame, **kwargs) -> Path:
    """Publish a frame whole: Parquet for a ``.parquet`` name, else CSV without the index."""
    path = Path(path)
    with publishing(path) as tmp:
        if path.name.endswith(".parquet"):
            frame.to_parquet(tmp, **kwargs)
        else:
            frame.to_csv(tmp, index=False, **kwargs)
    return path


def remove_stale(path) -> list[Path]:
    """Delete the hidden temporaries of ``path`` left by processes that are no longer running."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f".{path.name}.*.tmp"):
        match = re.match(rf"\.{re.escape(path.name)}\.(\d+)-", candidate.name)
        if match is None or (int(match.group(1)) != os.getpid() and alive(int(match.group(1)))):
            continue  # not ours to judge, or another run writing the same output right now
        remove(candidate)
        removed.append(candidate)
    return removed


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; a folder (or a folder's replacement) is exchanged atomically."""
    if not (tmp.is_dir() or path.is_dir()) or not os.path.lexists(path):
        os.replace(tmp, path)
        return
    if _exchange(tmp, path):
        remove(tmp)  # now holds the previous output
        return
    old = temporary_path(path, "old")
    os.replace(path, old)
    os.replace(tmp, path)
    remove(old)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def _sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            _sync_file(Path(root) / name)
        _sync_file(Path(root))


def remove(path: Path) -> None:
    """Delete a file or folder if it is there (a temporary that is no longer needed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` is running here (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone since the signal test, unless there is no /proc
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


_LIBC = _libc()
