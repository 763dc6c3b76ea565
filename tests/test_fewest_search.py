"""The search for the fewest float16 layers: smallest passing k, few evaluations, none repeated."""

from __future__ import annotations

import pytest

from converter.quantization.fewest_search import fewest


@pytest.mark.parametrize("threshold, limit", [(1, 10), (5, 10), (10, 10), (37, 100), (64, 64), (3, 3)])
def test_finds_the_smallest_passing_k_without_repeating(threshold, limit):
    asked = []
    result = fewest(limit, lambda k: asked.append(k) or k >= threshold)
    assert result == threshold
    assert len(asked) == len(set(asked))
    assert len(asked) <= 2 * (limit.bit_length() + 1)


def test_none_when_even_the_limit_fails():
    asked = []
    assert fewest(20, lambda k: asked.append(k) or False) is None
    assert asked[-1] == 20


@pytest.mark.parametrize("budget, expected", [(3, None), (7, 64), (8, 48), (9, 40), (20, 37)])
def test_a_budget_bounds_the_calls_and_keeps_the_fewest_passing_seen(budget, expected):
    asked = []
    result = fewest(100, lambda k: asked.append(k) or k >= 37, budget=budget)
    assert result == expected
    assert len(asked) <= budget and len(asked) == len(set(asked))
