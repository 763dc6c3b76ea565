"""Find the smallest k for which a check passes, assuming more is never worse: growth, then bisection.

Kept apart from what is checked (after Polygraphy's `debug reduce`): the caller's check may be a
whole toolkit build, so the engine asks for as few k as it can and never asks twice. With `width`
checks at once (builds on W Ray workers), each round asks W values: growth tries the next W powers
of two, bisection cuts the interval into W + 1 parts, so it takes about log_{W+1} rounds where one
at a time takes log_2. Width 1 is the plain doubling and bisection.

A caller with a model of its check (the hybrid search has the emulated PSNR curve) passes it as a
`guide`: each round asks the guide's value first (or, when it takes the smallest pass for the answer,
the value whose failure ends the search), the engine's own fill the rest of the width. A guided value
that did not come out as the guide expected is followed by a round of the engine's own, so a guide
that is off costs at most every other round.
"""

from __future__ import annotations

from typing import Callable

# guide(low, high): the smallest value it expects to pass, given the largest value known to fail and the
# smallest known to pass (None before any passed); None when it expects none between them to pass, or,
# before any passed, has no idea.
Guide = Callable[[int, "int | None"], "int | None"]


def fewest(limit: int, passes: Callable[[int], bool], budget: int | None = None) -> int | None:
    """The smallest k in 1..limit with passes(k), or None if passes(limit) fails too.

    With a budget (at most that many calls of passes), the smallest passing k seen when it runs
    out, or None if none passed by then.
    """
    return fewest_in_rounds(limit, lambda ks: [passes(k) for k in ks], 1, budget)


def fewest_in_rounds(limit: int, passes_all: Callable[[list[int]], list[bool]], width: int,
                     budget: int | None = None, start: int = 1, floor: int = 0, guide: Guide | None = None,
                     slack: float = 0.0) -> int | None:
    """As `fewest`, asking `passes_all` up to `width` values per round (the caller may check them at once).
    Growth starts at `start` (a guess of where passing begins) instead of 1; values up to `floor` are
    taken to fail without asking (the caller knows, or has estimated, that they do). With `slack`, the
    search stops once the smallest pass is within that fraction of the largest failure below it: the
    answer is then at most about that much over the fewest."""
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
    trusted = True
    while high is None or high - low > max(1, slack * high):
        if high is None:
            own = [min(max(power << i, low + 1), limit) for i in range(width)]
        else:
            inside = range(low + 1, high)
            own = list(inside) if len(inside) <= width else [
                low + (high - low) * i // (width + 1) for i in range(1, width + 1)]
        hint, expected = None, True
        if guide is not None and trusted:
            hint = guide(low, high)
            if hint is None and high is not None:  # it takes `high` for the answer: ask where failing ends it
                hint, expected = high - max(1, int(slack * high)), False
            if hint is not None and not low < hint < (limit + 1 if high is None else high):
                hint = None
        asked = list(dict.fromkeys([hint] * (hint is not None) + own))[:width]
        if not ask(asked):
            break
        if high is None and own[0] in asked:  # (the next doubling, unless the guide's value took its place)
            power = own[0] << width
        high = min((k for k, ok in seen.items() if ok), default=None)
        low = max([low] + [k for k, ok in seen.items() if not ok and (high is None or k < high)])
        if high is None and low >= limit:
            return None
        # (a hint the engine would have asked anyway is no mark against the guide)
        trusted = hint is None or hint in own or seen.get(hint, expected) == expected
    return high
