"""Progress of the long training steps on the terminal (rich), or nothing at all when disabled."""

from __future__ import annotations

import time
from contextlib import contextmanager


class Steps:
    """Named steps with a spinner while they run and a timed check line when they finish."""

    def __init__(self, enabled: bool = True, console=None):
        self.enabled = enabled
        self.seconds: dict[str, float] = {}
        self._status = None
        self._label = ""
        if enabled:
            from rich.console import Console

            self.console = console or Console(stderr=True)
        else:
            self.console = None

    @contextmanager
    def step(self, label: str):
        start = time.perf_counter()
        self._label = label
        if not self.enabled:
            try:
                yield self
            finally:
                self.seconds[label] = time.perf_counter() - start
            return
        with self.console.status(f"{label} ...") as status:
            self._status = status
            try:
                yield self
            finally:
                self._status = None
        elapsed = time.perf_counter() - start
        self.seconds[label] = elapsed
        self.console.print(f"[green]✓[/green] {label} [dim]{elapsed:.1f} s[/dim]")

    def update(self, detail: str) -> None:
        """Show what the current step is doing right now (e.g. which window)."""
        if self._status is not None:
            self._status.update(f"{self._label} ... {detail}")

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"  [dim]{text}[/dim]")
