"""A scoring run's work directory: one known place per output folder, cleaned of killed runs' leftovers.

What is specified here: every run writing into a folder works under FOLDER/.clv-work/; the start of
a run deletes the work directories of this host's dead processes whatever output they were writing,
and keeps live runs' and other hosts'; the work folder disappears once no run uses it. The worker
pool's folder in the system's temporary directory (the fork server's socket) is swept the same way,
and a temporary directory too long for a socket's path is a user's error, said before any work.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from features.errors import UserError
from serving.scoring import work_dir
from serving.scoring.work_dir import (
    SOCKET_PATH_MAX,
    WORK_FOLDER,
    make_work_directory,
    make_workers_folder,
    release_work_directory,
    remove_dead_work_directories,
    remove_dead_workers_folders,
)


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def test_every_run_works_in_one_known_folder_beside_its_output(tmp_path):
    work = make_work_directory(tmp_path / "scores.parquet")
    assert work.parent == tmp_path / WORK_FOLDER
    assert work.name.split("-")[-2] == str(os.getpid())
    assert make_work_directory(tmp_path / "other.parquet").parent == work.parent  # whatever the output name


def test_the_next_run_deletes_dead_runs_work_whatever_their_output_and_keeps_live_ones(tmp_path):
    root = tmp_path / WORK_FOLDER
    host = work_dir._host()
    dead = root / f"{host}-{dead_pid()}-0123abcd"
    live_other_process = root / f"{host}-{os.getppid()}-0123abce"
    other_host = root / f"elsewhere.example-{dead_pid()}-0123abcf"
    not_a_run = root / "notes"
    for folder in (dead, live_other_process, other_host, not_a_run):
        folder.mkdir(parents=True)
        (folder / "bucket-00000.arrow").write_bytes(b"x")
    mine = make_work_directory(tmp_path / "tomorrow.parquet")
    assert remove_dead_work_directories(tmp_path / "tomorrow.parquet") == [dead]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [live_other_process.name, other_host.name, not_a_run.name, mine.name])


def test_the_work_folder_goes_once_no_run_uses_it(tmp_path):
    first = make_work_directory(tmp_path / "a.parquet")
    second = make_work_directory(tmp_path / "b.parquet")
    release_work_directory(first)
    assert sorted(p.name for p in (tmp_path / WORK_FOLDER).iterdir()) == [second.name]
    release_work_directory(second)
    assert list(tmp_path.iterdir()) == []
    remove_dead_work_directories(tmp_path / "a.parquet")  # nothing there: nothing to do


@pytest.fixture
def short_tmp(monkeypatch):
    """A new, empty system temporary directory for one test, short enough for a socket's path (the
    session's; pytest's tmp_path may be too long)."""
    folder = Path(tempfile.mkdtemp(prefix="wd-"))
    monkeypatch.setattr("tempfile.tempdir", str(folder))
    yield folder
    shutil.rmtree(folder)


def test_the_worker_pools_folder_is_private_and_named_after_its_process(short_tmp):
    tmp_path = short_tmp
    folder = make_workers_folder()
    assert folder.parent == tmp_path
    prefix, host, pid, _ = folder.name.rsplit("-", 3)
    assert (prefix, host, pid) == ("clv-mp", work_dir._host_tag(), str(os.getpid()))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    listener = folder / "listener-abcdefgh"  # multiprocessing's name for the fork server's socket
    assert len(os.fsencode(listener)) <= SOCKET_PATH_MAX


def test_the_next_run_deletes_dead_processes_worker_pool_folders_only(short_tmp):
    tmp_path = short_tmp
    host = work_dir._host_tag()
    dead = tmp_path / f"clv-mp-{host}-{dead_pid()}-0a1b"
    live = tmp_path / f"clv-mp-{host}-{os.getppid()}-0a1c"
    other_host = tmp_path / f"clv-mp-{'0' * 6 if host != '0' * 6 else '1' * 6}-{dead_pid()}-0a1d"
    someone_elses = tmp_path / f"pymp-{dead_pid()}"
    for folder in (dead, live, other_host, someone_elses):
        folder.mkdir()
        (folder / "listener-abcdefgh").write_bytes(b"")
    mine = make_workers_folder()
    assert remove_dead_workers_folders() == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other_host.name, someone_elses.name, mine.name])


def test_a_temporary_directory_too_long_for_a_socket_is_a_users_error(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 80)
    deep.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(deep))
    with pytest.raises(UserError, match=r"too long a path for the worker processes' socket .* TMPDIR .* --workers 1"):
        make_workers_folder()
    assert list(deep.iterdir()) == []
