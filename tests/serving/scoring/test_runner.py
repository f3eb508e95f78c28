"""Worker processes never outlive the scorer that started them.

What is specified here: a scorer killed with SIGKILL (it cannot stop anything itself) takes its
busy workers with it within seconds (each watches the scorer; their parent, the fork server, goes
once they have); and that watch alone ends a process once the one it watches has ended. Also: a
task started after bucket steps (BucketRunner.after) runs in a worker only once all of them have
ended. A run that fails or is told to stop aborts: its busy workers are stopped at once, where
closing would wait for their steps to end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def environment() -> dict:
    """This process's environment as it is now (TMPDIR: the session's folder), the checkout importable."""
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def busy_forever(b: int, folder: str) -> None:
    """A bucket step that never ends (a worker deep in a long chunk), saying so in ``folder``."""
    (Path(folder) / f"busy-{os.getpid()}").touch()
    while True:
        time.sleep(0.1)


def running(pids) -> list[int]:
    """The processes among ``pids`` still running (a zombie, dead but not reaped, is not)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"still waiting after {timeout}s for {what}"
        time.sleep(0.05)
    return result


def kill_and_reap(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_busy_workers_end_within_seconds_of_their_scorer_being_killed(tmp_path):
    code = ("from pathlib import Path; from serving.scoring.runner import BucketRunner; "
            "from tests.serving.scoring.test_runner import busy_forever; "
            f"BucketRunner(Path({str(tmp_path)!r}), 2).map(busy_forever, 2, {str(tmp_path)!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], env=environment(), cwd=ROOT)
    try:
        busy = wait_until(lambda: len(list(tmp_path.glob("busy-*"))) == 2, 180, "two busy workers")
        descendants = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    finally:
        kill_and_reap(proc)
    assert busy
    wait_until(lambda: not running(descendants), 15, f"the workers {descendants} to end")
    from serving.scoring.work_dir import remove_dead_workers_folders

    left = [p.name for p in remove_dead_workers_folders()]  # as the next scorer on the machine does
    assert [name.split("-")[3] for name in left] == [str(proc.pid)]  # its fork server's folder


def test_abort_stops_busy_workers_at_once_where_close_would_wait_for_their_steps(tmp_path):
    import threading

    from serving.scoring.runner import BucketRunner

    runner = BucketRunner(tmp_path, 2)
    runner.warm_up(os.getpid)
    pending = runner.submit(busy_forever, 2, str(tmp_path))  # steps that never end
    wait_until(lambda: len(list(tmp_path.glob("busy-*"))) == 2, 180, "two busy workers")
    workers = [int(p.name.split("-")[1]) for p in tmp_path.glob("busy-*")]
    aborting = threading.Thread(target=runner.abort, daemon=True)
    aborting.start()
    aborting.join(timeout=60)
    assert not aborting.is_alive(), "abort waited for steps that never end"
    assert not running(workers)
    assert pending.failed()  # the steps' results will never come: an error, not a hang


def test_a_worker_ends_when_the_scorer_it_watches_ends_whoever_its_parent_is(tmp_path):
    """_watch_process alone (no prctl): a process watching another ends once that one has ended."""
    child = "import sys; from serving.scoring.runner import _watch_process; _watch_process(int(sys.argv[1]))"
    parent = ("import os, subprocess, sys, time; "
              f"c = subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())]); "
              "print(c.pid, flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", parent], env=environment(), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        orphan = int(proc.stdout.readline())
        assert running([orphan])
    finally:
        kill_and_reap(proc)
    wait_until(lambda: not running([orphan]), 15, f"the orphan {orphan} to end")


def test_a_worker_hands_its_freed_memory_back_once_idle_after_a_bucket_step_even_a_failed_one(monkeypatch):
    """Workers wait, idle, through much of the population step: their last bucket's garbage must not
    sit under the main process's peak. A next bucket begun at once keeps it for reuse instead."""
    import pytest

    from serving.scoring import runner

    released = []
    monkeypatch.setattr(runner, "release_freed_memory", lambda: released.append(True))
    monkeypatch.setattr(runner, "IDLE_RELEASE_SECONDS", 1.0)
    assert runner._released(lambda b, x: b + x, 2, 3) == 5
    assert runner._released(lambda b, x: b + x, 3, 3) == 6  # the next bucket, at once
    assert released == []
    wait_until(lambda: released, 10, "the idle worker to hand its memory back")
    time.sleep(1.5)
    assert len(released) == 1  # once for both buckets

    def failing(b):
        raise ValueError("bad bucket")

    with pytest.raises(ValueError, match="bad bucket"):
        runner._released(failing, 0)
    wait_until(lambda: len(released) == 2, 10, "the memory of a failed step to be handed back")


def slow_bucket(b: int, folder: str) -> int:
    """A bucket step that takes a while (the later buckets longer), then leaves its file."""
    time.sleep(0.2 * (b + 1))
    (Path(folder) / f"done-{b}").touch()
    return b


def files_seen(folder: str) -> tuple[int, int]:
    """How many bucket files are there, and the process that looked."""
    return len(list(Path(folder).glob("done-*"))), os.getpid()


def refused() -> None:
    raise ValueError("a contract error")


def test_a_task_after_bucket_steps_runs_in_a_worker_once_they_have_all_ended(tmp_path):
    """BucketRunner.after hands a task to the pool only when every step it follows has ended, whatever
    the queue order; start runs one task in a worker; a task's error is known (failed) and raised."""
    import pytest

    from serving.scoring.runner import BucketRunner

    runner = BucketRunner(tmp_path, 2)
    try:
        runner.warm_up(os.getpid)
        before = runner.submit(slow_bucket, 4, str(tmp_path))
        after = runner.after(before, files_seen, str(tmp_path))
        started = runner.start(files_seen, str(tmp_path))
        seen, pid = after.results()[0]
        assert seen == 4 and pid != os.getpid()
        assert started.results()[0][1] != os.getpid()
        failing = runner.start(refused)
        wait_until(failing.failed, 30, "the task to fail")
        with pytest.raises(ValueError, match="a contract error"):
            failing.results()
        assert not started.failed()
        with pytest.raises(ValueError, match="a contract error"):  # a task after a failed one: the error
            runner.after(failing, files_seen, str(tmp_path)).results()
    finally:
        runner.close()
    alone = BucketRunner(tmp_path, 1)  # without workers: here, at once
    assert alone.start(files_seen, str(tmp_path)).results()[0] == (4, os.getpid())
    assert alone.after(alone.submit(slow_bucket, 5, str(tmp_path)), files_seen, str(tmp_path)).results()[0] == (
        5, os.getpid())


def held_in_worker(b: int, key: str) -> tuple[int, bool]:
    """A bucket step reporting whether its worker still holds the shared value ``key``."""
    from serving.scoring import runner

    time.sleep(0.2)  # so that both workers take a bucket
    return os.getpid(), key in runner._SHARED


def uses_shared(b: int, key: str) -> int:
    from serving.scoring.runner import shared

    time.sleep(0.2)
    return len(shared(key))


def test_an_unshared_value_is_let_go_here_and_in_every_worker_after_its_step(tmp_path):
    from serving.scoring import runner as runner_module
    from serving.scoring.runner import BucketRunner

    runner = BucketRunner(tmp_path, 2)
    try:
        key = runner.share("ids", list(range(1000)))
        assert runner.map(uses_shared, 4, key) == [1000] * 4  # each worker loads and keeps it
        assert {held for _, held in runner.map(held_in_worker, 4, key)} == {True}
        runner.unshare(key)
        assert key not in runner_module._SHARED and not Path(key).exists()
        seen = runner.map(held_in_worker, 6, key)
        assert len({pid for pid, _ in seen}) == 2 and not any(held for _, held in seen)
    finally:
        runner.close()


def test_the_fork_server_preload_starts_no_thread_and_leaves_the_workers_ready():
    """The fork server loads serving.scoring.worker_preload, then forks every worker: a thread it
    started (an OpenMP or Arrow pool) would be missing in the workers. It leaves the id hashing
    kernel loaded (numba's registries with it), the collector on, and its objects frozen out of the
    collector's scans."""
    script = """
import gc, os, sys, threading
import lightgbm, mlflow.pyfunc, numba, pandas, pyarrow  # their own threads (BLAS, jemalloc) start here
from serving.scoring.runner import WORKER_PRELOAD
threads = len(os.listdir("/proc/self/task"))
__import__(WORKER_PRELOAD)
assert len(os.listdir("/proc/self/task")) == threads, "the preload started a thread"
assert threading.active_count() == 1, threading.enumerate()
assert {"lightgbm", "mlflow.pyfunc", "training.model", "serving.scoring.buckets"} <= set(sys.modules)
from features.ingest.id_hashes import _hash_all
assert _hash_all.signatures, "the id hashing kernel is not loaded"
assert gc.isenabled() and gc.get_freeze_count() > 100_000, gc.get_freeze_count()
"""
    proc = subprocess.run([sys.executable, "-c", script], env=environment(), capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
