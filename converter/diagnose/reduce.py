"""Shrink a failing graph to a small one that fails the same way: the reduction engine.

The engine knows nodes only as their indices in the graph's topological order and asks one question,
`fails(kept)`, that its caller answers (diagnosis.py cuts the nodes out with subgraph.py and builds them
with the toolkit); the engine is apart from the check, as Polygraphy's `debug reduce` keeps it. It runs
in three phases, each starting from the smallest failing set the one before found:
- `outputs`: bisect the end, the shortest prefix of the graph that still fails;
- `inputs`: bisect the start, the shortest suffix of that prefix that still fails;
- `nodes`: drop one node at a time, kept out when the rest still fails, until a sweep drops none.
Bisection assumes a failure that stays once its nodes are in; where it does not, its invariant still
holds (the set it keeps has been seen to fail), only the result is larger. A candidate whose check
raises counts as not failing (the first such error is recorded); a phase out of budget stops there and
says so. The result is always a set seen to fail: at worst, the whole graph.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

PHASES = ("outputs", "inputs", "nodes")
METHOD = "bisect the outputs, then the inputs, then drop nodes one at a time"


@dataclass(frozen=True)
class Phase:
    name: str
    nodes: int  # the smallest failing set after it
    builds: int  # candidates it checked


@dataclass(frozen=True)
class Reduction:
    kept: frozenset[int]
    nodes_before: int
    phases: tuple[Phase, ...]
    seconds: float
    stopped: str | None = None  # the phase that ran out of budget, and when
    errors: int = 0  # candidates whose check raised
    first_error: str | None = None

    @property
    def builds(self) -> int:
        return sum(p.builds for p in self.phases)


class _OutOfBudget(Exception):
    pass


@dataclass
class _Search:
    fails: Callable[[frozenset[int]], bool]
    deadline: float
    on_note: Callable[[str], None] | None
    builds: int = 0
    errors: int = 0
    first_error: str | None = None
    phase: str = ""
    smallest: frozenset[int] = field(default_factory=frozenset)
    judged: dict[frozenset[int], bool] = field(default_factory=dict)  # a sweep that drops nothing asks again

    def check(self, kept: Iterable[int]) -> bool:
        kept = frozenset(kept)
        if kept in self.judged:
            return self.judged[kept]
        if time.monotonic() > self.deadline:
            raise _OutOfBudget
        self.builds += 1
        try:
            failed = bool(kept) and self.fails(kept)
        except Exception as e:  # noqa: BLE001 - one candidate the check cannot judge does not end the search
            self.errors += 1
            self.first_error = self.first_error or f"{type(e).__name__}: {e}".splitlines()[0]
            failed = False
        self.judged[kept] = failed
        if failed and len(kept) < len(self.smallest):
            self.smallest = kept
        if self.on_note:
            self.on_note(f"{self.phase}: {len(kept)} nodes {'fail' if failed else 'pass'} "
                         f"(smallest failing {len(self.smallest)}, {self.builds} builds)")
        return failed


def _shortest_prefix(search: _Search, kept: list[int]) -> None:
    lo, hi = 0, len(kept)  # kept[:hi] fails; kept[:lo] is not known to
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if search.check(kept[:mid]):
            hi = mid
        else:
            lo = mid


def _shortest_suffix(search: _Search, kept: list[int]) -> None:
    lo, hi = 0, len(kept) - 1  # kept[lo:] fails; kept[hi + 1:] is not known to
    while hi > lo:
        mid = (lo + hi + 1) // 2
        if search.check(kept[mid:]):
            lo = mid
        else:
            hi = mid - 1


def _one_at_a_time(search: _Search, kept: list[int]) -> None:
    dropped = True
    while dropped and len(kept) > 1:
        dropped = False
        for node in reversed(list(kept)):  # from the outputs back: a node's consumers go before it does
            rest = [n for n in kept if n != node]
            if len(kept) > 1 and search.check(rest):
                kept, dropped = rest, True


_STEPS = {"outputs": _shortest_prefix, "inputs": _shortest_suffix, "nodes": _one_at_a_time}


def reduce(count: int, fails: Callable[[frozenset[int]], bool], budget_s: float,
           on_note: Callable[[str], None] | None = None) -> Reduction:
    """The smallest set of the graph's `count` nodes (known to fail whole) found to fail within `budget_s`."""
    start = time.monotonic()
    search = _Search(fails, start + budget_s, on_note, smallest=frozenset(range(count)))
    phases, stopped = [], None
    for name in PHASES:
        search.phase, before = name, search.builds
        try:
            _STEPS[name](search, sorted(search.smallest))
        except _OutOfBudget:
            stopped = (f"phase {name} stopped after {search.builds} builds: the reduction's budget of "
                       f"{budget_s / 60:.0f} min was spent")
        phases.append(Phase(name, len(search.smallest), search.builds - before))
        if stopped:
            break
    return Reduction(search.smallest, count, tuple(phases), round(time.monotonic() - start, 1), stopped,
                     search.errors, search.first_error)
