"""Sharing a tick's budget of batches between envelopes (core/budget.py), as a pure function."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from g2p_bridge.core.budget import share_round_robin


def _rows(counts: dict[str, int]) -> dict[str, list[int]]:
    return {key: list(range(count)) for key, count in counts.items()}


def _take(
    available: dict[str, list[int]], calls: list[tuple[str, int]]
) -> Callable[[str, int | None, int], Sequence[int]]:
    def take(key: str, after: int | None, limit: int) -> Sequence[int]:
        calls.append((key, limit))
        start = 0 if after is None else after + 1
        return available[key][start : start + limit]

    return take


def test_one_envelope_gets_the_whole_budget_in_one_call() -> None:
    calls: list[tuple[str, int]] = []
    taken = share_round_robin(["a"], 20, 1000, _take(_rows({"a": 1_000_000}), calls))
    assert len(taken["a"]) == 20_000
    assert calls == [("a", 20_000)]


def test_a_big_envelope_does_not_starve_the_others() -> None:
    calls: list[tuple[str, int]] = []
    available = _rows({"big": 1_000_000, "b": 5_000, "c": 5_000, "d": 5_000})
    taken = share_round_robin(["big", "b", "c", "d"], 20, 1000, _take(available, calls))
    assert {key: len(rows) for key, rows in taken.items()} == {
        "big": 5000,
        "b": 5000,
        "c": 5000,
        "d": 5000,
    }
    # Each row once, in order, whatever the number of rounds.
    assert all(rows == list(range(len(rows))) for rows in taken.values())


def test_what_a_small_envelope_leaves_goes_to_the_others() -> None:
    calls: list[tuple[str, int]] = []
    available = _rows({"a": 100_000, "small": 1_500, "c": 100_000})
    taken = share_round_robin(["a", "small", "c"], 21, 1000, _take(available, calls))
    sizes = {key: len(rows) for key, rows in taken.items()}
    assert sizes["small"] == 1_500  # all it had: two batches, the second a short tail
    assert sizes["a"] + sizes["c"] == 19_000  # the rest of the 21 batches, between the two
    assert abs(sizes["a"] - sizes["c"]) <= 1000
    # At most one call per envelope per round, and never more rounds than envelopes + 1.
    assert len(calls) <= 3 * 4


def test_more_envelopes_than_batches_serves_the_first_listed() -> None:
    calls: list[tuple[str, int]] = []
    keys = [f"e{i}" for i in range(5)]
    taken = share_round_robin(keys, 3, 10, _take(_rows(dict.fromkeys(keys, 100)), calls))
    assert [len(taken[k]) for k in keys] == [10, 10, 10, 0, 0]
