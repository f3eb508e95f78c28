"""serving.collector.frozen_imports: the block runs with the collector paused; afterwards the
collector is as it was, the garbage is collected and every object left, the block's included, is
frozen out of its scans."""

from __future__ import annotations

import gc

import pytest

from serving.collector import frozen_imports


def test_the_block_runs_with_the_collector_paused_and_its_objects_end_frozen():
    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    with frozen_imports():
        assert not gc.isenabled()
        made = [{"a": [i]} for i in range(1000)]  # 2,000 tracked containers
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + 2000
    assert not any(obj is made for obj in gc.get_objects())  # frozen: no longer among the scanned


def test_the_collector_is_turned_back_on_even_when_the_block_fails_and_left_off_if_it_was():
    with pytest.raises(ImportError), frozen_imports():
        raise ImportError("no such module")
    assert gc.isenabled()
    gc.disable()
    try:
        with frozen_imports():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_garbage_left_when_the_block_ends_is_collected_not_frozen(tmp_path):
    """A cycle no one holds (a TemporaryDirectory in one, say) is freed, its finalizer run: frozen, it
    would stay for good (the session's check for leftover temporary files found one so)."""
    import tempfile

    folder = tempfile.TemporaryDirectory(dir=tmp_path)
    cycle = {"folder": folder}
    cycle["self"] = cycle
    path = folder.name
    del folder, cycle
    with frozen_imports():
        pass
    assert not (tmp_path / path).exists()
