"""One matrix entry: an ordinary `rkconvert build` in its own process, into its own folder.

Whatever runs it (here, or a Ray worker) gets back an EntryResult: how the build ended and its report. A
build that crashes the toolkit is a failed entry like any other (the build reports it); a process
killed from outside (out of memory, a lost node) ends by a signal, which an executor may retry.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from converter.matrix.spec import Entry
from converter.reports.build_report import BuildReport, load_build

ERROR_PREFIX = "rkconvert: error: "


@dataclass(frozen=True)
class EntryResult:
    name: str
    status: str  # ok | failed (the build failed: crash, refusal, gate) | bad input | killed
    exit_code: int
    seconds: float
    error: str | None
    report: BuildReport | None

    def to_json(self) -> dict:
        """Its JSON form, as a Ray task hands it back."""
        return {**vars(self), "report": self.report.to_json() if self.report else None}

    @classmethod
    def from_json(cls, raw: dict) -> EntryResult:
        return cls(**{**raw, "report": BuildReport.from_json(raw["report"]) if raw["report"] else None})


def status_of(exit_code: int) -> str:
    return {0: "ok", 1: "failed", 2: "bad input"}.get(exit_code, "killed" if exit_code < 0 else "failed")


def run_entry(entry: Entry, workdir: Path, out: Path) -> EntryResult:
    """Build `entry` into `out`/<name>, from `workdir` (relative paths in its options start there);
    its output goes to `out`/logs/<name>.log."""
    folder, log = out / entry.name, out / "logs" / f"{entry.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "converter.cli", "build", *entry.arguments(), "--out", str(folder.resolve())]
    start, started_at = time.monotonic(), time.time()
    with open(log, "w") as f:
        f.write(" ".join(command) + "\n\n")
        f.flush()
        code = subprocess.run(command, cwd=workdir, stdout=f, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL).returncode
    seconds = round(time.monotonic() - start, 1)
    report_path = folder / "report.json"
    # Only this run's report: a build refused as bad input, or killed, leaves an earlier run's in place.
    fresh = report_path.is_file() and report_path.stat().st_mtime >= started_at
    report = load_build(report_path) if fresh else None
    errors = [line[len(ERROR_PREFIX):] for line in log.read_text(errors="replace").splitlines()
              if line.startswith(ERROR_PREFIX)]
    error = errors[-1] if errors else (f"ended by signal {-code}" if code < 0 else None)
    return EntryResult(entry.name, status_of(code), code, seconds, error, report)
