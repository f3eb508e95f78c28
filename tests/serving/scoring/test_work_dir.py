"""A scoring run's work directory: one known place per output folder, cleaned of killed runs' leftovers.

What is specified here: every run writing into a folder works under FOLDER/.clv-work/; the start of
a run deletes the work directories of this host's dead processes whatever output they were writing,
and keeps live runs' and other hosts'; the work folder disappears once no run uses it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from serving.scoring import work_dir
from serving.scoring.work_dir import (
    WORK_FOLDER,
    make_work_directory,
    release_work_directory,
    remove_dead_work_directories,
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
