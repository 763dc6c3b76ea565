"""Run a Python module in a child process that may die by a signal, and say clearly how it ended.

rknn-toolkit2 can kill its process with SIGSEGV or abort() (heap corruption) without a Python
exception, so it never runs in the CLI's own process. The child writes everything to a log file;
lines starting with PHASE name the step it is in, so a crash can be placed ("during build()").
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from converter.common.errors import BuildFailed
from converter.toolkit.fork_server import ForkServer, server

PHASE = "@@rkconvert phase "
ERROR = "@@rkconvert error "
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
TAIL_LINES = 8


@dataclass
class ChildRun:
    seconds: float
    peak_rss_bytes: int
    log: Path


@dataclass(frozen=True)
class Ending:
    """How a failed child ended, for programs (converter/diagnose classifies it): the signal that killed
    it, else its exit status and last ERROR line; the step it was in; whether its time budget ran out."""

    signal: str | None
    exit_code: int | None
    error: str | None
    phase: str | None
    seconds: float
    out_of_time: bool
    log: Path


def log_lines(text: str) -> list[str]:
    """Lines as a person would see them: progress bars redrawn with \\r keep their last state."""
    lines = []
    for raw in text.split("\n"):
        line = _ANSI.sub("", raw.rsplit("\r", 1)[-1]).rstrip()
        if line:
            lines.append(line)
    return lines


def _read(log: Path) -> list[str]:
    try:
        return log_lines(log.read_text(errors="replace"))
    except FileNotFoundError:
        return []


def last_phase(lines: list[str]) -> str | None:
    phases = [line[len(PHASE):] for line in lines if line.startswith(PHASE)]
    return phases[-1] if phases else None


class Child:
    """`python -m module args` running in `cwd`, its output going to `log` (forked by the process's fork
    server: converter/toolkit/fork_server.py, or by `via`, with its stderr to `stderr` and in `env` if given)."""

    def __init__(self, module: str, args: list[str], cwd: Path, log: Path, what: str, via: ForkServer | None = None,
                 stderr: Path | None = None, env: dict[str, str] | None = None):
        self.what, self.log = what, log
        self.start = time.monotonic()
        self._server = via or server()
        log.parent.mkdir(parents=True, exist_ok=True)
        self.pid = self._server.start(module, args, cwd, log, stderr, env)
        self._status: tuple[int, int] | None = None  # (exit code, or -signal; peak resident bytes)
        self._out_of_time = False

    @property
    def returncode(self) -> int | None:
        return self._status[0] if self._status else None

    def poll(self, on_tick: Callable[[str | None, str, float], None] | None = None) -> bool:
        """True once the child has ended (its status kept for `finish`)."""
        if self._status is None:
            ended = self._server.ended(self.pid)
            if ended:
                self._status = (os.waitstatus_to_exitcode(ended[0]), ended[1])
            elif on_tick:
                lines = _read(self.log)
                on_tick(last_phase(lines), lines[-1] if lines else "", time.monotonic() - self.start)
        return self._status is not None

    def wait(self, on_tick: Callable[[str | None, str, float], None] | None = None,
             budget_s: float | None = None) -> ChildRun:
        """Wait for the end; raise BuildFailed naming the signal or error if the child failed, or killing
        it when it runs longer than `budget_s` (the toolkit can loop forever in a rewrite)."""
        try:
            while not self.poll(on_tick):
                if budget_s is not None and time.monotonic() - self.start > budget_s:
                    self._out_of_time = True
                    self.kill()
                    break
                time.sleep(0.5)
        except BaseException:
            self.kill()
            raise
        returncode, peak_rss = self._status
        if returncode != 0:
            raise self.failure()
        return ChildRun(time.monotonic() - self.start, peak_rss, self.log)

    def failure(self) -> BuildFailed:
        """How the child failed (once it has ended), with the last lines of its log."""
        self._await_end()
        returncode = self.returncode
        lines = _read(self.log)
        errors = [line[len(ERROR):] for line in lines if line.startswith(ERROR)]
        ending = Ending(signal.Signals(-returncode).name if returncode < 0 and not self._out_of_time else None,
                        returncode if returncode >= 0 else None, errors[-1] if errors else None, last_phase(lines),
                        round(time.monotonic() - self.start, 1), self._out_of_time, self.log)
        if ending.out_of_time:
            cause = "made no progress within its time budget (stopped)"
        elif ending.signal:
            cause = f"died with {ending.signal}"
        else:
            cause = f"failed (exit {returncode})" + (f": {ending.error}" if ending.error else "")
        where = f" during {ending.phase}" if ending.phase else ""
        tail = [line for line in lines if not line.startswith("@@rkconvert")][-TAIL_LINES:]
        return BuildFailed(f"{self.what} {cause}{where} after {ending.seconds:.0f} s",
                           (*("  " + line for line in tail), f"full log: {self.log}"), ending)

    def kill(self) -> None:
        """SIGKILL the child and wait for its end."""
        if self._status is None:
            self._server.kill(self.pid)
            self._await_end()

    def _await_end(self) -> None:
        while not self.poll():
            time.sleep(0.05)


def run_module(module: str, args: list[str], cwd: Path, log: Path, what: str,
               on_tick: Callable[[str | None, str, float], None] | None = None) -> ChildRun:
    """Run `python -m module args` in `cwd`; raise BuildFailed naming the signal or error if it fails.

    `on_tick(phase, last_line, seconds)` is called about twice a second while the child runs.
    """
    return Child(module, args, cwd, log, what).wait(on_tick)
