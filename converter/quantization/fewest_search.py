"""Find the smallest k for which a check passes, assuming more is never worse: growth, then bisection.

Kept apart from what is checked (after Polygraphy's `debug reduce`): the caller's check may be a
whole toolkit build, so the engine asks for as few k as it can and never asks twice. With `width`
checks at once (builds on W Ray workers), each round asks W values: growth tries the next W powers
of two, bisection cuts the interval into W + 1 parts, so it takes about log_{W+1} rounds where one
at a time takes log_2. Width 1 is the plain doubling and bisection.
"""

from __future__ import annotations

from typing import Callable


def fewest(limit: int, passes: Callable[[int], bool], budget: int | None = None) -> int | None:
    """The smallest k in 1..limit with passes(k), or None if passes(limit) fails too.

    With a budget (at most that many calls of passes), the smallest passing k seen when it runs
    out, or None if none passed by then.
    """
    return fewest_in_rounds(limit, lambda ks: [passes(k) for k in ks], 1, budget)


def fewest_in_rounds(limit: int, passes_all: Callable[[list[int]], list[bool]], width: int,
                     budget: int | None = None, start: int = 1, floor: int = 0) -> int | None:
    """As `fewest`, asking `passes_all` up to `width` values per round (the caller may check them at once).
    Growth starts at `start` (a guess of where passing begins) instead of 1; values up to `floor` are
    taken to fail without asking (the caller knows, or has estimated, that they do)."""
    seen: dict[int, bool] = {}

    def ask(ks: list[int]) -> bool:
        """Check the new values among `ks`; False when the budget allowed none of them."""
        new = [k for k in dict.fromkeys(ks) if k not in seen]
        if budget is not None:
            new = new[:max(0, budget - len(seen))]
        if new:
            seen.update(zip(new, passes_all(new)))
        return bool(new)

    # passes(low) is known to fail (k = 0: nothing changed)
    low, high, power = min(floor, limit - 1), None, max(1, min(start, limit))
    while high is None:
        ks = [min(max(power << i, low + 1), limit) for i in range(width)]
        if not ask(ks):
            break
        low = max([low] + [k for k in ks if k in seen and not seen[k]])
        high = min((k for k in ks if seen.get(k)), default=None)
        if high is None and low >= limit:
            return None
        power <<= width
    while high is not None and high - low > 1:
        inside = range(low + 1, high)
        if not ask(list(inside) if len(inside) <= width else
                   [low + (high - low) * i // (width + 1) for i in range(1, width + 1)]):
            break
        low = max([low] + [k for k in seen if low < k < high and not seen[k]])
        high = min([high] + [k for k in seen if low < k < high and seen[k]])
    return min((k for k, ok in seen.items() if ok), default=None)
