"""Outputs are published whole: the previous output or the new one, never a part, never a leftover."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from features import atomic


def test_a_file_appears_only_once_it_is_complete(tmp_path):
    target = tmp_path / "out" / "scores.csv"
    with atomic.publishing(target) as tmp:
        tmp.write_text("a,b\n")
        assert not target.exists()  # nothing at the final name while writing
        assert tmp.parent == target.parent and tmp.name.startswith(".scores.csv.")
    assert target.read_text() == "a,b\n"
    assert os.listdir(target.parent) == ["scores.csv"]


def test_a_failed_write_keeps_the_previous_output_and_leaves_nothing_behind(tmp_path):
    target = atomic.write_text(tmp_path / "manifest.json", "old")
    with pytest.raises(RuntimeError), atomic.publishing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_a_folder_replaces_the_previous_folder_whole(tmp_path):
    target = tmp_path / "report"
    for version in ("v1", "v2"):
        with atomic.publishing(target, directory=True) as tmp:
            (tmp / "report.html").write_text(version)
            (tmp / "figure.png").write_bytes(b"png")
    assert (target / "report.html").read_text() == "v2"
    assert sorted(os.listdir(tmp_path)) == ["report"]
    assert sorted(os.listdir(target)) == ["figure.png", "report.html"]


def test_a_folder_may_replace_a_file_and_a_file_a_folder(tmp_path):
    target = tmp_path / "scores.parquet"
    atomic.write_text(target, "a file")
    with atomic.publishing(target, directory=True) as tmp:
        (tmp / "part-00000.parquet").write_text("part")
    assert target.is_dir()
    atomic.write_text(target, "a file again")
    assert target.read_text() == "a file again" and os.listdir(tmp_path) == ["scores.parquet"]


def test_frames_are_written_as_parquet_or_csv_by_name(tmp_path):
    frame = pd.DataFrame({"customer_id": ["0007", "0010"], "value": [1.5, 2.0]})
    atomic.write_frame(tmp_path / "f.parquet", frame)
    atomic.write_frame(tmp_path / "f.csv", frame)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "f.parquet"), frame)
    assert (tmp_path / "f.csv").read_text() == "customer_id,value\n0007,1.5\n0010,2.0\n"


def test_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "scores.parquet"
    dead = tmp_path / ".scores.parquet.999999999-0000aaaa.part.tmp"  # no such process
    mine = atomic.temporary_path(target)
    other = tmp_path / ".other.parquet.999999999-0000aaaa.part.tmp"
    for path in (dead, mine, other):
        path.write_text("x")
    assert sorted(p.name for p in atomic.remove_stale(target)) == sorted([dead.name, mine.name])
    assert not dead.exists() and other.exists()


def test_every_output_gets_the_same_mode_the_users_umask_gives_a_new_file(tmp_path):
    """Files published through a temporary (text, JSON, Parquet, CSV, a folder's members) are not left
    with a temporary file's private mode: all share 0o666 less the umask, like a file written directly."""
    umask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        atomic.write_json(tmp_path / "a.json", {"x": 1})
        atomic.write_frame(tmp_path / "a.parquet", pd.DataFrame({"x": [1]}))
        atomic.write_frame(tmp_path / "a.csv", pd.DataFrame({"x": [1]}))
        with atomic.publishing(tmp_path / "folder", directory=True) as tmp:
            (tmp / "part.txt").write_text("x")
        (tmp_path / "direct.txt").write_text("x")
    finally:
        os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o644}, modes
