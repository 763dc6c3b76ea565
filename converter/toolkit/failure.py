"""What kind of failure a toolkit run ended in, and whether two runs failed the same way.

The classes are what a user can act on differently: a crash or abort needs a rewrite that avoids the
op, a refusal needs other settings, no progress needs a budget and a rewrite, out of memory needs a
smaller graph or host, an accuracy loss needs the layer that loses it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from converter.toolkit.child import Ending, log_lines
from converter.toolkit.known_failures import ALIKE

KINDS = {
    "crash": "the toolkit died by a signal",
    "abort": "the toolkit aborted (heap corruption or a failed C++ check)",
    "refusal": "the toolkit refused the settings at config()",
    "error": "a toolkit call raised an error",
    "no_progress": "no result within the time budget (a rewrite going round forever)",
    "out_of_memory": "the toolkit ran out of memory, or the system killed it for memory",
    "accuracy": "it built, but its output is under the gate against ONNX Runtime",
}
# glibc and libstdc++ print these before abort(): the process ends by SIGABRT or, when a handler
# intervenes, by another signal.
_HEAP = re.compile(r"corrupted size|double free|free\(\): invalid|malloc\(\): |terminate called")
_MEMORY = re.compile(r"MemoryError|std::bad_alloc|Cannot allocate memory")
# The verbose log's rewrite lines: "D     fuse_slice_slice_concat_to_conv: remove node = [...]".
_RULE = re.compile(r"^D\s+([a-z][a-z0-9_]*): (?:remove|add|replace) ")
_VOLATILE = re.compile(r"'[^']*'|\"[^\"]*\"|\b\d+(\.\d+)?\b")


@dataclass(frozen=True)
class Failure:
    kind: str  # a KINDS key
    phase: str | None  # the toolkit call it happened in, e.g. "build()"
    detail: str  # the signal, the toolkit's message, or the accuracy against the gate
    last_rule: str | None  # the last rewrite rule the toolkit's log names
    seconds: float

    def same_way(self, other: Failure) -> bool:
        """Fails as `other` does: same class in the same call, and the same message (names and numbers
        aside: a subgraph's nodes are named differently). A crash and an abort are one class here: heap
        corruption ends in SIGSEGV or SIGABRT from run to run (rk3562 w8a16's Conv does both)."""
        return self.way() == other.way()

    def way(self) -> tuple[str, str | None, str]:
        """What two failures that fail the same way share: the class (a crash and an abort are one), the
        call, and for an error or refusal its message with names and numbers blanked."""
        message = _VOLATILE.sub("_", self.detail) if self.kind in ("error", "refusal") else ""
        return ALIKE.get(self.kind, self.kind), self.phase, message

    def describe(self) -> str:
        where = f" during {self.phase}" if self.phase else ""
        return f"{self.kind} ({self.detail}){where}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Failure:
        return cls(**data)


def rules(log_text: str) -> list[str]:
    """The rewrite rules the toolkit's verbose log says it applied, in order."""
    return [m.group(1) for line in log_lines(log_text) if (m := _RULE.match(line))]


def classify(ending: Ending) -> Failure:
    """The class of a toolkit child that failed (converter.toolkit.child.Ending)."""
    text = ending.log.read_text(errors="replace") if ending.log.exists() else ""
    applied = rules(text)
    last_rule = applied[-1] if applied else None
    heap = _HEAP.search(text)
    if ending.out_of_time:
        kind, detail = "no_progress", f"stopped after {ending.seconds:.0f} s"
    elif ending.signal == "SIGKILL" or _MEMORY.search(ending.error or ""):
        kind, detail = "out_of_memory", ending.error or "killed by SIGKILL (the kernel's out-of-memory killer)"
    elif heap:
        kind, detail = "abort", heap.group(0).strip()
    elif ending.signal:
        kind, detail = ("abort" if ending.signal == "SIGABRT" else "crash"), ending.signal
    elif ending.phase == "config()":
        kind, detail = "refusal", ending.error or f"exit {ending.exit_code}"
    else:
        kind, detail = "error", ending.error or f"exit {ending.exit_code}"
    return Failure(kind, ending.phase, detail, last_rule, ending.seconds)


def accuracy(psnr_db: float, gate_db: float, seconds: float) -> Failure:
    return Failure("accuracy", "inference()", f"output PSNR {psnr_db:.1f} dB under {gate_db:g} dB", None, seconds)
