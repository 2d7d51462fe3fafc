"""The one sparse-logging rule (pure)."""

from __future__ import annotations

from streamd.sparse import is_power_of_two, should_log


def test_powers_of_two() -> None:
    assert [n for n in range(20) if is_power_of_two(n)] == [1, 2, 4, 8, 16]
    assert not is_power_of_two(-4)


def test_the_first_then_ever_rarer_occurrences_are_logged() -> None:
    assert [n for n in range(1, 70) if should_log(n)] == [1, 2, 4, 8, 16, 32, 64]
