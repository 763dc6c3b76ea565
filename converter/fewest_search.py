"""Find the smallest k for which a check passes, assuming more is never worse: doubling, then bisection.

Kept apart from what is checked (after Polygraphy's `debug reduce`): the caller's `passes(k)` may
be a whole toolkit build, so the engine asks for as few k as it can and never asks twice.
"""

from __future__ import annotations

from typing import Callable


def fewest(limit: int, passes: Callable[[int], bool]) -> int | None:
    """The smallest k in 1..limit with passes(k), or None if passes(limit) fails too."""
    seen: dict[int, bool] = {}

    def check(k: int) -> bool:
        if k not in seen:
            seen[k] = passes(k)
        return seen[k]

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
