"""Progress on long work: a live line per stage on a terminal, one summary line per stage always."""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape


class Progress:
    def __init__(self, console: Console, prefix: str = ""):
        self.console = console
        self.prefix = prefix  # before every stage name: whose stages these are
        self._status = None

    def within(self, name: str) -> Progress:
        """The same console, for the stages of `name` (a build within a build)."""
        return Progress(self.console, f"{self.prefix}{name}: ")

    @contextmanager
    def stage(self, name: str, what: str):
        start, name = time.monotonic(), self.prefix + name
        with self.console.status(f"[bold]{name}[/]: {escape(what)}") as status:
            self._status = (status, name, what)
            try:
                yield self
            finally:
                self._status = None
        self.console.print(f"[green]✓[/] [bold]{name}[/] {escape(what)} ({time.monotonic() - start:.1f} s)")

    def reused(self, name: str, what: str):
        self.console.print(f"[green]✓[/] [bold]{self.prefix}{name}[/] {escape(what)} (reused)")

    def note(self, text: str):
        """Show how far the current stage has got."""
        if self._status is not None:
            status, name, what = self._status
            status.update(f"[bold]{name}[/]: {escape(what)} — {escape(text)}")

    def tick(self, phase: str | None, last_line: str, seconds: float):
        """Callback for child processes: show the toolkit's current step and its last log line."""
        if self._status is None:
            return
        status, name, what = self._status
        detail = f" — {phase}" if phase else ""
        line = escape(last_line[-90:])
        status.update(f"[bold]{name}[/]: {escape(what)}{detail} [{seconds:.0f} s]\n  [dim]{line}[/]")
