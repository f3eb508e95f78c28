"""Scores and manifest published as a pair a reader can check; a folder of scores swapped in whole.

What is specified here: the manifest names the scores and their checksum and is renamed into place
last, so a reader (verify_scores) trusts only a complete pair; a run stopped between the two
renames, a changed file or a missing manifest is detected; a scores folder replaces the previous
one in one exchange, so the output path never goes missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from features import atomic
from serving.scoring import publish
from serving.scoring.core import manifest_path
from serving.scoring.publish import ScoresNotWhole, publish_scores, scores_sha256, verify_scores


def finished_scores(work: Path, name: str, content: bytes) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    scores = work / name
    scores.write_bytes(content)
    return scores


def finished_folder(work: Path, name: str, parts: dict[str, bytes]) -> Path:
    folder = work / name
    folder.mkdir(parents=True)
    for part, content in parts.items():
        (folder / part).write_bytes(content)
    return folder


def test_the_manifest_names_the_scores_and_their_checksum_and_a_reader_trusts_the_pair(tmp_path):
    out = tmp_path / "scores.parquet"
    scores = finished_scores(tmp_path / "work", out.name, b"run one")
    expected = scores_sha256(scores)
    manifest = publish_scores(scores, out, {"output": str(out), "scored": 3})
    assert manifest["output_sha256"] == expected
    assert json.loads(manifest_path(out).read_text()) == manifest
    assert out.read_bytes() == b"run one"
    assert verify_scores(out) == manifest
    assert list((tmp_path / "work").iterdir()) == []  # both temporaries were renamed away


def test_the_scores_are_renamed_before_the_manifest_and_both_are_finished_first(tmp_path, monkeypatch):
    out = tmp_path / "scores.parquet"
    scores = finished_scores(tmp_path / "work", out.name, b"run one")
    staged_manifest = scores.parent / manifest_path(out).name
    renames = []
    real = atomic.publish_path

    def watched(tmp, path):
        # when the scores go, the manifest is already written whole (and names their checksum)
        if Path(path) == out:
            assert json.loads(staged_manifest.read_text())["output_sha256"] == scores_sha256(tmp)
        renames.append(Path(path).name)
        return real(tmp, path)

    monkeypatch.setattr(publish.atomic, "publish_path", watched)
    publish_scores(scores, out, {"output": str(out)})
    assert renames == ["scores.parquet", "scores.manifest.json"]


def test_a_run_stopped_between_the_two_renames_leaves_a_pair_the_reader_refuses(tmp_path, monkeypatch):
    out = tmp_path / "scores.parquet"
    publish_scores(finished_scores(tmp_path / "w1", out.name, b"run one"), out, {"output": str(out)})
    real = atomic.publish_path

    def killed_before_the_manifest(tmp, path):
        if Path(path) != out:
            raise KeyboardInterrupt("killed")
        return real(tmp, path)

    monkeypatch.setattr(publish.atomic, "publish_path", killed_before_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        publish_scores(finished_scores(tmp_path / "w2", out.name, b"run two"), out, {"output": str(out)})
    assert out.read_bytes() == b"run two"  # the new scores beside the previous manifest...
    with pytest.raises(ScoresNotWhole, match="does not match its manifest's checksum"):
        verify_scores(out)  # ...are not trusted


def test_a_changed_file_a_missing_manifest_or_another_outputs_manifest_are_refused(tmp_path):
    out = tmp_path / "scores.parquet"
    with pytest.raises(ScoresNotWhole, match="no scores there"):
        verify_scores(out)
    publish_scores(finished_scores(tmp_path / "w1", out.name, b"run one"), out, {"output": str(out)})
    out.write_bytes(b"edited")
    with pytest.raises(ScoresNotWhole, match="checksum"):
        verify_scores(out)
    other = tmp_path / "other.parquet"
    other.write_bytes(b"run one")
    manifest_path(other).write_text(manifest_path(out).read_text())
    with pytest.raises(ScoresNotWhole, match="describes"):
        verify_scores(other)
    manifest_path(out).unlink()
    with pytest.raises(ScoresNotWhole, match="no manifest"):
        verify_scores(out)


def test_a_folder_checksum_covers_every_part_and_its_name(tmp_path):
    one = finished_folder(tmp_path / "a", "s.parquet", {"part-00000.parquet": b"x", "part-00001.parquet": b"y"})
    same = finished_folder(tmp_path / "b", "s.parquet", {"part-00001.parquet": b"y", "part-00000.parquet": b"x"})
    renamed = finished_folder(tmp_path / "c", "s.parquet", {"part-00000.parquet": b"x", "part-00002.parquet": b"y"})
    fewer = finished_folder(tmp_path / "d", "s.parquet", {"part-00000.parquet": b"x"})
    assert scores_sha256(one) == scores_sha256(same)
    assert len({scores_sha256(one), scores_sha256(renamed), scores_sha256(fewer)}) == 3


def test_a_scores_folder_replaces_the_previous_one_without_the_path_ever_missing(tmp_path, monkeypatch):
    """The Dask scorer's output: the new folder is exchanged with the old in one step (renameat2)."""
    probe = [tmp_path / "probe-a", tmp_path / "probe-b"]
    for folder in probe:
        folder.mkdir()
    if not atomic._exchange(*probe):
        pytest.skip("this system cannot exchange two paths in one step")
    out = tmp_path / "scores.parquet"
    publish_scores(finished_folder(tmp_path / "w1", out.name, {"part-00000.parquet": b"one"}), out,
                   {"output": str(out)})
    moves = []
    real_replace = os.replace

    def watched(src, dst):
        moves.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", watched)
    manifest = publish_scores(finished_folder(tmp_path / "w2", out.name, {"part-00000.parquet": b"two",
                                                                           "part-00001.parquet": b"2"}),
                              out, {"output": str(out)})
    assert not [m for m in moves if m[0] == out]  # the old folder was never moved away from the path
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert verify_scores(out) == manifest
    assert list((tmp_path / "w2").iterdir()) == []  # the previous folder, exchanged out, is deleted
