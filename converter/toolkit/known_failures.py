"""The catalogue of known toolkit failures (known_failures.toml): load it, and look a failure up."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from converter.common.errors import UserError

CATALOGUE = Path(__file__).with_name("known_failures.toml")
REMEDIES = ("pass", "dtypes", "advice")  # advice: no rewrite or setting avoids it; what a user can do
# Heap corruption ends in SIGSEGV or SIGABRT from run to run (rk3562 w8a16's Conv does both): one class.
ALIKE = {"abort": "crash"}
_FIELDS = {"id", "title", "toolkit", "kind", "phase", "targets", "built_as", "message", "rule", "ops", "remedy", "why"}


@dataclass(frozen=True)
class Seen:
    """What a reduced failure shows, in plain values: its class, call and detail (diagnose.failure), the
    rules its log names, the op types of its graph, and where it was built."""

    kind: str
    phase: str | None
    detail: str
    target: str
    toolkit: str
    rules: list[str] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    dtype: str = "float16"


@dataclass(frozen=True)
class KnownFailure:
    id: str
    title: str
    kind: str
    remedy: dict
    why: str = ""
    toolkit: str | None = None
    phase: str | None = None
    targets: tuple[str, ...] = ()
    built_as: tuple[str, ...] = ()  # dtypes
    message: str | None = None
    rule: str | None = None
    ops: tuple[str, ...] = ()

    def matches(self, seen: Seen) -> bool:
        return (same_kind(self.kind, seen.kind)
                and self.toolkit in (None, seen.toolkit)
                and self.phase in (None, seen.phase)
                and (not self.targets or seen.target in self.targets)
                and (not self.built_as or seen.dtype in self.built_as)
                and (self.message is None or re.search(self.message, seen.detail) is not None)
                and (self.rule is None or self.rule in seen.rules)
                and not Counter(self.ops) - Counter(seen.ops))

    def remedy_text(self) -> str:
        if "pass" in self.remedy:
            return f"graph pass {self.remedy['pass']}"
        if "advice" in self.remedy:
            return self.remedy["advice"]
        return "build as " + " or ".join(self.remedy["dtypes"])


def same_kind(a: str, b: str) -> bool:
    return ALIKE.get(a, a) == ALIKE.get(b, b)


def load(path: Path = CATALOGUE) -> list[KnownFailure]:
    """The entries of a catalogue file; UserError naming the file and entry when one is malformed."""
    try:
        entries = tomllib.loads(path.read_text())["failure"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"{path}: not a catalogue of known failures ({type(e).__name__}: {e})") from None
    known = []
    for i, entry in enumerate(entries):
        name = entry.get("id", f"entry {i + 1}")
        unknown = set(entry) - _FIELDS
        remedy = entry.get("remedy", {})
        if unknown or not {"id", "title", "kind"} <= set(entry) or len(remedy) != 1 or set(remedy) - set(REMEDIES):
            raise UserError(f"{path}: failure {name!r} needs id, title, kind and one remedy ({', '.join(REMEDIES)})"
                            + (f"; unknown fields {sorted(unknown)}" if unknown else ""))
        known.append(KnownFailure(**{**entry, "targets": tuple(entry.get("targets", ())),
                                     "built_as": tuple(entry.get("built_as", ())), "ops": tuple(entry.get("ops", ()))}))
    return known


def match(seen: Seen, known: list[KnownFailure]) -> KnownFailure | None:
    """The first entry whose whole signature `seen` matches, or None."""
    return next((entry for entry in known if entry.matches(seen)), None)
