"""Publishing the scores and their manifest as a pair a reader can check, and the reader's check.

The manifest names the scores (``output``) and their checksum (``output_sha256``, of the finished
file or folder). Both are written whole in the run's work directory and synced; then the scores
are renamed into place, then the manifest, last. A reader that finds a manifest whose checksum
matches the scores beside it (``verify_scores``) knows the pair is one run's, complete: a run
killed between the two renames leaves new scores beside the previous manifest, which do not match.
A folder of scores (the Dask scorer's) replaces the previous folder in one atomic exchange
(features.atomic), so the output path is never missing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from features import atomic
from features.errors import UserError
from serving.scoring.core import manifest_path

_BLOCK = 1 << 20


class ScoresNotWhole(UserError):
    """The scores and the manifest beside them are not one run's complete pair."""


def scores_sha256(path) -> str:
    """sha256 of a scores file; of a folder, of each file's relative path and sha256, in path order."""
    path = Path(path)
    if not path.is_dir():
        return _file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{_file_sha256(file)}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def publish_scores(scores: Path, out: Path, manifest: dict) -> dict:
    """Publish finished scores (a file or folder in the run's work directory) as ``out``, then the
    manifest, which now names their checksum; returns the manifest. Call it only once the run's
    accounting is checked: nothing of the run is visible before this."""
    manifest = {**manifest, "output_sha256": scores_sha256(scores)}
    staged = scores.parent / manifest_path(out).name
    staged.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    atomic.publish_path(scores, out)  # synced, renamed, the folder synced
    atomic.publish_path(staged, manifest_path(out))  # last: the pair is whole once it is there
    return manifest


def verify_scores(out) -> dict:
    """The manifest of the scores ``out`` once checked to be theirs and complete; ScoresNotWhole when
    it is missing, names another output or records another checksum (a run killed while publishing,
    or a file changed since)."""
    out = Path(out)
    manifest_file = manifest_path(out)
    if not out.exists():
        raise ScoresNotWhole(f"{out}: no scores there")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScoresNotWhole(f"{out}: no manifest beside it ({manifest_file.name})") from None
    except (OSError, ValueError) as error:
        raise ScoresNotWhole(f"{manifest_file}: unreadable manifest ({error})") from None
    if Path(str(manifest.get("output", ""))).name != out.name:
        raise ScoresNotWhole(f"{manifest_file} describes {manifest.get('output')!r}, not {out.name}")
    recorded = manifest.get("output_sha256")
    if recorded is None:
        raise ScoresNotWhole(f"{manifest_file} records no checksum of the scores (written before checksums)")
    if scores_sha256(out) != recorded:
        raise ScoresNotWhole(f"{out} does not match its manifest's checksum: the scores and "
                             f"{manifest_file.name} are not one run's pair (a run stopped while publishing?)")
    return manifest
