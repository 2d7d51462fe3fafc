"""Counters and a bounded-memory latency histogram (pure, no I/O).

The histogram has fixed logarithmic buckets (≈ 9 % wide) from 10 µs to ~100 s,
so percentiles cost constant memory however long the daemon runs.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_MIN_S = 1e-5
_GROWTH = 1.09
_BUCKETS = 200  # 1e-5 · 1.09^200 ≈ 3e2 s


class LatencyHistogram:
    def __init__(self) -> None:
        self.counts = [0] * (_BUCKETS + 1)
        self.total = 0
        self.sum_s = 0.0

    def record(self, seconds: float) -> None:
        if seconds <= _MIN_S:
            index = 0
        else:
            index = min(_BUCKETS, 1 + int(math.log(seconds / _MIN_S, _GROWTH)))
        self.counts[index] += 1
        self.total += 1
        self.sum_s += max(seconds, 0.0)

    def percentile(self, fraction: float) -> float | None:
        """Upper edge of the bucket holding the ``fraction`` quantile, in seconds."""
        if self.total == 0:
            return None
        rank = max(1, math.ceil(fraction * self.total))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return _MIN_S * _GROWTH**index
        return _MIN_S * _GROWTH**_BUCKETS

    def reset(self) -> None:
        self.counts = [0] * (_BUCKETS + 1)
        self.total = 0
        self.sum_s = 0.0

    def summary_ms(self) -> dict[str, float | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        return {
            "p50_ms": ms(self.percentile(0.50)),
            "p95_ms": ms(self.percentile(0.95)),
            "p99_ms": ms(self.percentile(0.99)),
        }


@dataclass
class PublishStats:
    """What one child's publisher did; shipped to the supervisor in heartbeats."""

    attempts: int = 0
    published: int = 0
    failures: int = 0
    fallback: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def success_rate(self) -> float | None:
        if self.attempts == 0:
            return None
        return round(100.0 * self.published / self.attempts, 2)

    def snapshot(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "published": self.published,
            "failures": self.failures,
            "fallback": self.fallback,
            "dropped": dict(self.dropped),
            "success_rate_pct": self.success_rate(),
            "publish_latency": self.latency.summary_ms(),
        }
