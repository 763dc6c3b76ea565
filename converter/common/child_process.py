"""Run a Python module in a child process that may die by a signal, and say clearly how it ended.

rknn-toolkit2 can kill its process with SIGSEGV or abort() (heap corruption) without a Python
exception, so it never runs in the CLI's own process. The child writes everything to a log file;
lines starting with PHASE name the step it is in, so a crash can be placed ("during build()").
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from converter.common.errors import BuildFailed

PHASE = "@@rkconvert phase "
ERROR = "@@rkconvert error "
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
TAIL_LINES = 8


@dataclass
class ChildRun:
    seconds: float
    peak_rss_bytes: int
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


def run_module(module: str, args: list[str], cwd: Path, log: Path, what: str,
               on_tick: Callable[[str | None, str, float], None] | None = None) -> ChildRun:
    """Run `python -m module args` in `cwd`; raise BuildFailed naming the signal or error if it fails.

    `on_tick(phase, last_line, seconds)` is called about twice a second while the child runs.
    """
    start = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-u", "-m", module, *args], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if on_tick:
                    lines = _read(log)
                    on_tick(last_phase(lines), lines[-1] if lines else "", time.monotonic() - start)
                time.sleep(0.5)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        lines = _read(log)
        phase = last_phase(lines)
        where = f" during {phase}" if phase else ""
        errors = [line[len(ERROR):] for line in lines if line.startswith(ERROR)]
        if proc.returncode < 0:
            cause = f"died with {signal.Signals(-proc.returncode).name}"
        else:
            cause = f"failed (exit {proc.returncode})" + (f": {errors[-1]}" if errors else "")
        tail = [line for line in lines if not line.startswith("@@rkconvert")][-TAIL_LINES:]
        raise BuildFailed(f"{what} {cause}{where} after {seconds:.0f} s",
                          (*("  " + line for line in tail), f"full log: {log}"))
    return ChildRun(seconds, usage.ru_maxrss * 1024, log)

