"""Sparse logging: the 1st, 2nd, 4th, 8th… occurrence of a thing is logged, the
rest only counted, so a flood of bad input cannot flood the log (pure)."""

from __future__ import annotations


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def should_log(count: int) -> bool:
    """``count`` is how many times it has happened, this time included."""
    return is_power_of_two(count)
