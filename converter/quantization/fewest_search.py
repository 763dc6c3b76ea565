"""Find the smallest k for which a check passes, assuming more is never worse: doubling, then bisection.

Kept apart from what is checked (after Polygraphy's `debug reduce`): the caller's `passes(k)` may
be a whole toolkit build, so the engine asks for as few k as it can and never asks twice.
"""

from __future__ import annotations

from typing import Callable


class _OutOfBudget(Exception):
    pass


def fewest(limit: int, passes: Callable[[int], bool], budget: int | None = None) -> int | None:
    """The smallest k in 1..limit with passes(k), or None if passes(limit) fails too.

    With a budget (at most that many calls of passes), the smallest passing k seen when it runs
    out, or None if none passed by then.
    """
    seen: dict[int, bool] = {}

    def check(k: int) -> bool:
        if k not in seen:
            if budget is not None and len(seen) >= budget:
                raise _OutOfBudget
            seen[k] = passes(k)
        return seen[k]

    try:
        return _search(limit, check)
    except _OutOfBudget:
        return min((k for k, ok in seen.items() if ok), default=None)


def _search(limit: int, check: Callable[[int], bool]) -> int | None:
    low, k = 0, 1  # passes(low) is known to fail (k = 0: nothing changed)
    while not check(min(k, limit)):
        if k >= limit:
            return None
        low, k = k, k * 2
    high = min(k, limit)
    while high - low > 1:
        mid = (low + high) // 2
        if check(mid):
            high = mid
        else:
            low = mid
    return high
