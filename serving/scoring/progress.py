"""Progress bars and stage clocks of a scoring run: wall and CPU seconds, peak memory per stage."""

from __future__ import annotations

import contextlib
import resource
import time

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress


class Progress:
    """A rich progress bar per stage on stderr (nothing when disabled)."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            self.bar = RichProgress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=False)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, kind, *exc):
        if self.bar is None:
            return False
        if kind is None:
            self.bar.stop()
        else:  # a failed run: its error line alone on stderr, without the bars (or rich's blank line) above it
            self.bar.live.transient = True
            self.bar.live.stop()
        return False

    def task(self, description: str, total: int | None):
        return None if self.bar is None else self.bar.add_task(description, total=total)

    def advance(self, task, n: int = 1) -> None:
        if self.bar is not None and task is not None:
            self.bar.advance(task, n)

    def done(self, task) -> None:
        if self.bar is not None and task is not None:
            total = self.bar.tasks[task].total
            self.bar.update(task, completed=total if total is not None else 1, total=total or 1)


class Stopwatch:
    """Wall and CPU seconds per stage (CPU of this process and its workers), and this process's peak
    memory when each stage ended; reported in the manifest, for docs/performance.md."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start, cpu = time.perf_counter(), tree_cpu_seconds()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 3)
            self.cpu_seconds[stage] = round(self.cpu_seconds.get(stage, 0.0) + tree_cpu_seconds() - cpu, 3)
            self.peak_rss_mb[stage] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process and every process under it, live or finished (a
    finished process counts in its parent's children's times: the workers' parent is the fork server)."""
    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total
