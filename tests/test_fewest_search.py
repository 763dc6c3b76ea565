"""The search for the fewest float16 layers: smallest passing k, few evaluations, none repeated."""

from __future__ import annotations

import math

import pytest

from converter.mixed_precision.fewest_search import fewest, fewest_in_rounds


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


@pytest.mark.parametrize("width", [2, 3, 4])
def test_rounds_of_several_find_what_one_at_a_time_finds_in_fewer_rounds(width):
    for limit in (1, 2, 7, 12, 40, 100):
        for threshold in list(range(1, limit + 1)) + [None]:
            def passes(k):
                return threshold is not None and k >= threshold

            rounds, asked = [], []

            def passes_all(ks):
                assert 0 < len(ks) <= width and not set(ks) & set(asked)
                rounds.append(ks)
                asked.extend(ks)
                return [passes(k) for k in ks]

            assert fewest_in_rounds(limit, passes_all, width) == fewest(limit, passes) == threshold
            one_at_a_time = []
            fewest(limit, lambda k: one_at_a_time.append(k) or passes(k))
            assert len(rounds) <= len(one_at_a_time)
            # growth reaches the limit in ceil(log2(limit) / width) + 1 rounds, each bisection round
            # shrinks the interval (width + 1) times
            assert len(rounds) <= math.ceil(math.log2(limit) / width) + 1 + math.ceil(math.log(limit, width + 1)) + 1


@pytest.mark.parametrize("start, threshold, asked_first", [(30, 27, [30, 15, 22, 26, 28, 27]),
                                                           (30, 45, [30, 60, 45, 37, 41, 43, 44]),
                                                           (500, 37, [100])])
def test_growth_starts_at_the_guess(start, threshold, asked_first):
    """A guess near the answer (the emulation's) asks around it instead of from 1; a guess past the limit asks
    the limit."""
    asked = []
    result = fewest_in_rounds(100, lambda ks: [asked.append(k) or k >= threshold for k in ks], 1, start=start)
    assert result == threshold
    assert asked[:len(asked_first)] == asked_first and len(asked) == len(set(asked))


def test_a_floor_is_taken_to_fail_unasked():
    asked = []
    result = fewest_in_rounds(100, lambda ks: [asked.append(k) or k >= 34 for k in ks], 1, start=36, floor=32)
    assert result == 34 and asked == [36, 34, 33]
    # a floor at or past the answer: the smallest passing value above it
    asked.clear()
    assert fewest_in_rounds(100, lambda ks: [asked.append(k) or k >= 20 for k in ks], 1, start=8, floor=40) == 41
    assert min(asked) > 40


def test_a_good_guide_asks_the_answer_and_the_value_under_it():
    asked = []
    result = fewest_in_rounds(1000, lambda ks: [asked.append(k) or k >= 372 for k in ks], 1,
                              guide=lambda low, high: 372 if high is None else high - 1)
    assert result == 372 and asked == [372, 371]


@pytest.mark.parametrize("threshold", [1, 2, 37, 372, 999])
def test_a_guide_that_is_off_costs_at_most_every_other_round(threshold):
    """The worst guide for bisection (one past the largest failure) still finds the answer, in at most
    twice the engine's own rounds and a few."""
    alone, guided = [], []
    assert fewest(1000, lambda k: alone.append(k) or k >= threshold) == threshold
    assert fewest_in_rounds(1000, lambda ks: [guided.append(k) or k >= threshold for k in ks], 1,
                            guide=lambda low, high: low + 1) == threshold
    assert len(guided) <= 2 * len(alone) + 2 and len(guided) == len(set(guided))


@pytest.mark.parametrize("threshold", [10, 64, 100, 372, 999])
def test_slack_stops_within_its_fraction_of_the_fewest_in_fewer_asks(threshold):
    exact, slack = [], []
    assert fewest(1000, lambda k: exact.append(k) or k >= threshold) == threshold
    found = fewest_in_rounds(1000, lambda ks: [slack.append(k) or k >= threshold for k in ks], 1, slack=0.05)
    assert threshold <= found <= max(threshold + 1, 1.06 * threshold)
    assert len(slack) < len(exact) if threshold > 40 else len(slack) <= len(exact)


def test_a_guide_that_agrees_with_the_start_keeps_guiding_after_it_fails():
    """The hybrid search's first try is the guide's own guess: its failure is the engine's, and the next
    value is still the guide's (the corrected emulation: 72, not the doubling's 126)."""
    asked = []
    result = fewest_in_rounds(700, lambda ks: [asked.append(k) or k >= 72 for k in ks], 1, start=63,
                              guide=lambda low, high: 63 if low == 0 else 72 if high is None else None)
    assert result == 72 and asked == [63, 72, 71]
    # With slack, the value asked to confirm is the one whose failure ends the search.
    asked.clear()
    result = fewest_in_rounds(700, lambda ks: [asked.append(k) or k >= 72 for k in ks], 1, start=63, slack=0.05,
                              guide=lambda low, high: 63 if low == 0 else 74 if high is None else None)
    assert result == 74 and asked == [63, 74, 71]
