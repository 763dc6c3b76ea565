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
        if self._status is not None:
            status, name, what = self._status
            status.update(child_status(name, what, phase, last_line, seconds, self.console.width))


def child_status(name: str, what: str, phase: str | None, last_line: str, seconds: float, width: int) -> str:
    """A stage's status while a child works, as markup: its title, then the child's step and the tail of
    its log cut to `width` (a wrapped line, such as the toolkit's node lists, made the status jump between
    two and four lines at 80 columns)."""
    step = f"{phase}  " if phase else ""
    room = max(width - 4 - len(step), 0)  # the line's indent, and the spinner's width
    tail = last_line[-room:] if room else ""
    return f"[bold]{name}[/]: {escape(what)} [{seconds:.0f} s]\n  {escape(step)}[dim]{escape(tail)}[/]"
