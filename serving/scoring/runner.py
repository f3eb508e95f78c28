"""Running a step over every bucket of a scoring run: here, or in a pool of worker processes.

Every step reads its bucket's files from the run's work directory and writes its outputs there, so
a worker needs only the bucket number and a few shared objects (the model, the set of valid
customer ids), which ``BucketRunner.share`` hands over once per worker. Results come back in bucket
order whatever the number of workers: the output does not depend on it. Workers end when the
scorer's process does, however it ends (``_start_worker``).

Workers are forked from multiprocessing's fork server, a fresh process that has imported what they
need once (serving.scoring.worker_preload): a spawned worker spent 4-7 s of CPU importing it, each,
every run. The server has started no threads, so nothing is forked mid-lock (the scorer itself is
never forked: LightGBM's OpenMP and Arrow's thread pools do not survive a fork).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import multiprocessing.util
import os
import pickle
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import pyarrow as pa

from serving.scoring.memory import release_freed_memory
from serving.scoring.model import load_local_model
from serving.scoring.work_dir import make_workers_folder

# What a worker needs, loaded once in the fork server (imports, numba's kernels; the module says).
WORKER_PRELOAD = "serving.scoring.worker_preload"

_SHARED: dict[str, object] = {}
_IN_WORKER = False  # set in the pool's processes (_start_worker)


def shared(key: str):
    """An object handed to the bucket steps: cached in this process, loaded on first use in a worker."""
    if key not in _SHARED:
        if key.startswith("model:"):
            path, uri = key[len("model:"):].split("\n", 1)
            _SHARED[key] = load_local_model(path, uri)
        else:
            with open(key, "rb") as fh:
                _SHARED[key] = pickle.load(fh)
    return _SHARED[key]


class BucketRunner:
    """Runs a bucket step over every bucket, here (workers=1) or in a pool of worker processes."""

    def __init__(self, work: Path, workers: int):
        self.work = work
        self.workers = max(1, int(workers))
        self.pool: ProcessPoolExecutor | None = None
        self.keys: list[str] = []
        self._starting: threading.Thread | None = None  # warm_up's, while it starts workers

    def share(self, name: str, value) -> str:
        """Make ``value`` available to the steps under the returned key."""
        key = str(self.work / f"shared-{name}.pkl")
        _SHARED[key] = value
        self.keys.append(key)
        if self.workers > 1:
            with open(key, "wb") as fh:
                pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return key

    def unshare(self, key: str) -> None:
        """Drop a shared value once no step needs it: here at once, in each worker before its next step
        (the value's file is deleted, and a worker forgets the values whose files are gone)."""
        _SHARED.pop(key, None)
        if key in self.keys:
            self.keys.remove(key)
            Path(key).unlink(missing_ok=True)

    def share_model(self, model) -> str:
        """The model, loaded once per worker from its local files (a pyfunc is not picklable)."""
        key = f"model:{model.local_path}\n{model.uri}"
        _SHARED[key] = model
        self.keys.append(key)
        if self.workers > 1 and model.local_path is None:
            raise ValueError("a model without local files cannot be used by worker processes; use workers=1")
        return key

    def map(self, step, buckets: int, *args, on_result=None) -> list:
        """[step(b, *args) for b in range(buckets)], calling on_result(b, result) as each one ends."""
        results: list = [None] * buckets
        if self.workers == 1 or buckets == 1:
            for b in range(buckets):
                results[b] = step(b, *args)
                if on_result is not None:
                    on_result(b, results[b])
            return results
        self._start_pool()
        pending = {self.pool.submit(_released, step, b, *args): b for b in range(buckets)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    b = pending.pop(future)
                    results[b] = future.result()
                    if on_result is not None:
                        on_result(b, results[b])
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        return results

    def warm_up(self, step, *args) -> None:
        """Start the worker processes now and run step(*args) in them (imports, the model), so the
        run's first bucket step does not wait for them: they start while this process partitions the
        source. Nothing here waits; a failure shows again in the step that needs what failed.

        A thread of its own hands the steps to the pool, which starts a worker on each: the first
        start waits for the fork server's imports (about 5 s), which this process need not wait
        for, and a start is never cut short halfway by SIGTERM or Ctrl-C, which Python raises in
        the main thread (a worker half-started when the scorer ends prints a traceback)."""
        if self.workers == 1:
            return
        self._start_pool()
        pool, previous = self.pool, self._starting

        def start_workers():
            if previous is not None:
                previous.join()
            # A pool shut down or broken meanwhile: that shows again in the step that needs a worker.
            with contextlib.suppress(Exception):
                for _ in range(self.workers):
                    pool.submit(step, *args)

        self._starting = threading.Thread(target=start_workers, name="clv-worker-start", daemon=True)
        self._starting.start()

    def submit(self, step, buckets: int, *args) -> Pending:
        """Start step(b, *args) on every bucket; with workers, it runs while this process goes on."""
        if self.workers == 1 or buckets == 1:
            return Pending(results=[step(b, *args) for b in range(buckets)])
        self._start_pool()
        return Pending(futures=[self.pool.submit(_released, step, b, *args) for b in range(buckets)])

    def start(self, step, *args) -> Pending:
        """Start step(*args), one task: in a worker when the run's bucket steps use them (the pool is
        started), else here, now."""
        if self.pool is None:
            return Pending(results=[step(*args)])
        return Pending(futures=[self.pool.submit(_released, step, *args)])

    def after(self, before: Pending, step, *args) -> Pending:
        """Start step(*args) once every result of ``before`` is in, whatever the pool's queue order:
        a thread here waits for them, then hands the step to a worker (without workers it runs here,
        now)."""
        pool = self.pool
        if pool is None:
            before.results()
            return Pending(results=[step(*args)])
        done: Future = Future()

        def chain():
            try:
                before.results()
                result = pool.submit(_released, step, *args).result()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the step
                if not done.cancelled():
                    done.set_exception(exc)
            else:
                if not done.cancelled():
                    done.set_result(result)

        threading.Thread(target=chain, name=f"clv-after-{getattr(step, '__name__', 'step')}", daemon=True).start()
        return Pending(futures=[done])

    def _start_pool(self) -> None:
        if self.pool is None:
            _own_temporary_folder()
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([WORKER_PRELOAD])  # used when this process starts its server
            self.pool = ProcessPoolExecutor(max_workers=self.workers, initializer=_start_worker,
                                            initargs=(os.getpid(), dict(os.environ)), mp_context=context)

    def abort(self) -> None:
        """Stop the workers now, mid-step, and close: the run has failed or was told to stop, so what
        they are doing is not wanted, and shutting down would wait for each one's step to end."""
        self._started()
        if self.pool is not None:
            for process in list((self.pool._processes or {}).values()):  # private: public (kill_workers) from Python 3.14
                process.kill()
        self.close()

    def close(self) -> None:
        self._started()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        for key in self.keys:
            _SHARED.pop(key, None)

    def _started(self) -> None:
        """Wait until warm_up's workers are started (a start half done would fail in the worker)."""
        if self._starting is not None:
            self._starting.join()
            self._starting = None


def _own_temporary_folder() -> None:
    """Give multiprocessing a temporary folder of ours (where the fork server's socket goes) before it
    makes its own ``pymp-*`` one: removed when this process exits, as multiprocessing's is, and by the
    next scorer on this machine if this process is killed first (serving.scoring.work_dir)."""
    config = multiprocessing.current_process()._config  # private; multiprocessing.util.get_temp_dir reads it
    if config.get("tempdir") is None:
        folder = str(make_workers_folder())
        config["tempdir"] = folder
        multiprocessing.util.Finalize(None, _remove_temporary_folder, args=(shutil.rmtree, folder), exitpriority=-100)


def _remove_temporary_folder(rmtree, folder: str) -> None:
    """At exit (late: rmtree is passed in, as multiprocessing's own finalizer does)."""
    rmtree(folder, ignore_errors=True)
    process = multiprocessing.current_process()
    if process is not None and process._config.get("tempdir") == folder:
        process._config["tempdir"] = None


def _released(step, *args):
    """step(*args) in a worker: first the values the run has unshared are let go, and once the worker
    has been idle for IDLE_RELEASE_SECONDS after it, the freed memory is handed back to the system.

    A worker waits, idle, through much of the population step, and would otherwise hold them and its
    last bucket's garbage under the main process's peak (serving.scoring.memory). Between one bucket
    and the next, which the pool hands over at once, the memory is kept for the next bucket: handed
    back after every bucket, each bucket faulted its arrays in again (6 GB of page faults in the
    4M run's customer validation alone, docs/performance.md).
    """
    _cancel_release()
    _forget_unshared()
    try:
        return step(*args)
    finally:
        _release_when_idle()


# The pool hands a worker its next bucket within milliseconds; a quarter second idle means a stage's end.
IDLE_RELEASE_SECONDS = 0.25
_release_timer: threading.Timer | None = None


def _cancel_release() -> None:
    global _release_timer
    if _release_timer is not None:
        _release_timer.cancel()
        _release_timer = None


def _release_when_idle() -> None:
    """release_freed_memory in IDLE_RELEASE_SECONDS, unless the worker's next step has begun by then
    (glibc's malloc_trim covers every thread's arena; Arrow's pool returns what it can)."""
    global _release_timer
    _cancel_release()
    _release_timer = threading.Timer(IDLE_RELEASE_SECONDS, release_freed_memory)
    _release_timer.daemon = True
    _release_timer.start()


def _forget_unshared() -> None:
    """In a worker: drop the shared values the run has unshared (BucketRunner.unshare deleted their files)."""
    if _IN_WORKER:
        for key in [k for k in _SHARED if not k.startswith("model:") and not os.path.exists(k)]:
            del _SHARED[key]


def _start_worker(scorer: int, environment: dict[str, str]) -> None:
    """Worker start-up: death with the scorer, the scorer's environment, and one thread.

    A scorer killed outright (SIGKILL, the out-of-memory killer) cannot stop its workers, and a worker
    busy with a chunk would go on for minutes, holding memory and the work directory. So each worker
    watches the scorer and ends the moment it has ended. (Its parent is the fork server, which
    outlives the scorer as long as a worker lives; Linux kills the worker when the server goes too.)

    The fork server's environment is the scorer's when the server started; a worker takes the
    scorer's as it is when the pool starts, as a spawned process would. The workers already share
    the cores, so each runs LightGBM (OpenMP) and Arrow on one thread; more threads per worker only
    make them wait on each other.
    """
    global _IN_WORKER
    _IN_WORKER = True
    _die_with(scorer)
    os.environ.clear()
    os.environ.update(environment)
    tempfile.tempdir = None  # chosen again from this environment, as in a new process
    os.environ["OMP_NUM_THREADS"] = "1"
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_POLL_SECONDS = 0.5


def _die_with(scorer: int) -> None:
    """End this process as soon as process ``scorer`` has ended, and when its own parent does."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # tied to the fork server's only thread
    threading.Thread(target=_watch_process, args=(scorer,), name="scorer-watch", daemon=True).start()


def _watch_process(pid: int) -> None:
    """Return never: ``os._exit(1)`` once process ``pid`` has ended (at once if it has already)."""
    try:
        handle = os.pidfd_open(pid)  # readable when the process ends; never another process's
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # pragma: no cover - before Linux 5.3, or not Linux
        handle = None
    if handle is not None:
        select.select([handle], [], [])
    else:  # pragma: no cover
        while _alive(pid):
            time.sleep(WATCH_POLL_SECONDS)
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


class Pending:
    """Results of BucketRunner.submit, in bucket order once ``results`` returns."""

    def __init__(self, results=None, futures=None):
        self.results_, self.futures = results, futures

    def failed(self) -> bool:
        """Whether a step has ended with an error by now (results() would raise it)."""
        return self.futures is not None and any(
            f.done() and not f.cancelled() and f.exception() is not None for f in self.futures)

    def results(self) -> list:
        if self.futures is not None:
            try:
                self.results_ = [future.result() for future in self.futures]
            finally:
                for future in self.futures:
                    future.cancel()
            self.futures = None
        return self.results_
