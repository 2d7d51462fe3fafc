"""Counters and a bounded-memory latency histogram (pure, no I/O).

The histogram has fixed logarithmic buckets (≈ 9 % wide) from 10 µs to ~5 min,
so percentiles cost constant memory however long the daemon runs. Histograms
and counters are cumulative and travel in heartbeats; interval figures (the
stats line) are differences of two snapshots, the way Prometheus does it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_MIN_S = 1e-5
_GROWTH = 1.09
_BUCKETS = 200  # 1e-5 · 1.09^200 ≈ 3e2 s
_MAX_WIRE_ITEMS = _BUCKETS + 1


def bucket_upper_edge(index: int) -> float:
    return _MIN_S * _GROWTH**index


class LatencyHistogram:
    def __init__(self) -> None:
        self.counts = [0] * (_BUCKETS + 1)
        self.total = 0
        self.sum_s = 0.0

    def record(self, seconds: float, times: int = 1) -> None:
        if seconds <= _MIN_S:
            index = 0
        else:
            index = min(_BUCKETS, 1 + int(math.log(seconds / _MIN_S, _GROWTH)))
        self.counts[index] += times
        self.total += times
        self.sum_s += max(seconds, 0.0) * times

    def percentile(self, fraction: float) -> float | None:
        """Upper edge of the bucket holding the ``fraction`` quantile, in seconds."""
        if self.total <= 0:
            return None
        rank = max(1, math.ceil(fraction * self.total))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return bucket_upper_edge(index)
        return bucket_upper_edge(_BUCKETS)

    def summary_ms(
        self, prefix: str, quantiles: tuple[int, ...] = (50, 95, 99)
    ) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for q in quantiles:
            value = self.percentile(q / 100)
            out[f"{prefix}_p{q}_ms"] = None if value is None else round(value * 1000, 2)
        return out

    def cumulative_at(self, bounds: list[float]) -> list[int]:
        """Counts at or below each bound (a bucket counts where its upper edge fits)."""
        result = []
        running = 0
        index = 0
        for bound in bounds:
            while index <= _BUCKETS and bucket_upper_edge(index) <= bound * (1 + 1e-9):
                running += self.counts[index]
                index += 1
            result.append(running)
        return result

    # --- arithmetic and wire form -----------------------------------------------------
    def copy(self) -> LatencyHistogram:
        other = LatencyHistogram()
        other.counts = list(self.counts)
        other.total = self.total
        other.sum_s = self.sum_s
        return other

    def __add__(self, other: LatencyHistogram) -> LatencyHistogram:
        result = self.copy()
        result.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        result.total += other.total
        result.sum_s += other.sum_s
        return result

    def __sub__(self, other: LatencyHistogram) -> LatencyHistogram:
        result = self.copy()
        result.counts = [max(0, a - b) for a, b in zip(self.counts, other.counts, strict=True)]
        result.total = sum(result.counts)
        result.sum_s = max(0.0, self.sum_s - other.sum_s)
        return result

    def to_wire(self) -> dict[str, Any]:
        return {"c": {str(i): n for i, n in enumerate(self.counts) if n}, "s": round(self.sum_s, 6)}

    @classmethod
    def from_wire(cls, data: Any) -> LatencyHistogram:
        """Parse an untrusted wire form; ``ValueError`` if malformed."""
        if not isinstance(data, dict) or not isinstance(data.get("c"), dict):
            raise ValueError("histogram must be {'c': {...}, 's': number}")
        hist = cls()
        items = data["c"].items()
        if len(items) > _MAX_WIRE_ITEMS:
            raise ValueError("too many histogram buckets")
        for key, count in items:
            index = int(key)
            if not 0 <= index <= _BUCKETS or not isinstance(count, int) or count < 0:
                raise ValueError("bad histogram bucket")
            hist.counts[index] = count
        hist.total = sum(hist.counts)
        total_s = data.get("s", 0.0)
        if not isinstance(total_s, int | float) or total_s < 0:
            raise ValueError("bad histogram sum")
        hist.sum_s = float(total_s)
        return hist


COUNTER_NAMES = (
    "captured",
    "encoded",
    "encode_errors",
    "attempts",
    "published",
    "failures",
    "fallback",
    "bytes_published",
    "detect_runs",
    "events",
    "events_dropped",  # pushed out of the backlog that waits for Redis
    "events_not_kept",  # Redis refused to keep them (an error reply, not an outage)
    "skipped_idle",
    # What the source decoded and converted (decode only what is needed)
    "decoded",
    "converted",
    "planar",
    "passed_through",
    # The detection stream (``detect_source``), when the camera has one
    "detect_captured",
    "detect_decoded",
    # Access units on au:{id} (passthrough), counted like frames
    "units",  # units the passthrough pipeline made publishable
    "unit_attempts",
    "units_published",
    "unit_failures",
    "units_fallback",
    "unit_bytes_published",
)


@dataclass
class CameraCounters:
    """Cumulative figures of one camera's capture and publishing."""

    counters: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    publish_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    capture_to_publish: LatencyHistogram = field(default_factory=LatencyHistogram)
    detect_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    unit_dropped: Counter[str] = field(default_factory=Counter)  # access units, by reason

    def to_wire(self) -> dict[str, Any]:
        return {
            "counters": {k: self.counters[k] for k in COUNTER_NAMES},
            "dropped": dict(self.dropped),
            "publish_latency": self.publish_latency.to_wire(),
            "capture_to_publish": self.capture_to_publish.to_wire(),
            "detect_latency": self.detect_latency.to_wire(),
            "unit_dropped": dict(self.unit_dropped),
        }

    @classmethod
    def from_wire(cls, data: Any) -> CameraCounters:
        """Parse a heartbeat's figures (untrusted); ``ValueError`` if malformed."""
        if not isinstance(data, dict):
            raise ValueError("figures must be an object")
        counters: Counter[str] = Counter()
        raw = data.get("counters", {})
        if not isinstance(raw, dict):
            raise ValueError("counters must be an object")
        for name in COUNTER_NAMES:
            value = raw.get(name, 0)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"bad counter {name}")
            counters[name] = value
        return cls(
            counters,
            _reasons(data.get("dropped", {})),
            LatencyHistogram.from_wire(data.get("publish_latency", {"c": {}})),
            LatencyHistogram.from_wire(data.get("capture_to_publish", {"c": {}})),
            LatencyHistogram.from_wire(data.get("detect_latency", {"c": {}})),
            _reasons(data.get("unit_dropped", {})),
        )

    def __add__(self, other: CameraCounters) -> CameraCounters:
        return CameraCounters(
            self.counters + other.counters,
            self.dropped + other.dropped,
            self.publish_latency + other.publish_latency,
            self.capture_to_publish + other.capture_to_publish,
            self.detect_latency + other.detect_latency,
            self.unit_dropped + other.unit_dropped,
        )

    def __sub__(self, other: CameraCounters) -> CameraCounters:
        return CameraCounters(
            self.counters - other.counters,
            self.dropped - other.dropped,
            self.publish_latency - other.publish_latency,
            self.capture_to_publish - other.capture_to_publish,
            self.detect_latency - other.detect_latency,
        )

    def success_rate(self) -> float | None:
        attempts = self.counters["attempts"]
        if attempts == 0:
            return None
        return round(100.0 * self.counters["published"] / attempts, 2)


@dataclass
class DeliveryStats:
    """What the gateway did with one camera's frames (cumulative)."""

    received: int = 0
    sent: int = 0
    bytes_sent: int = 0
    end_to_end: LatencyHistogram = field(default_factory=LatencyHistogram)

    def copy(self) -> DeliveryStats:
        return DeliveryStats(self.received, self.sent, self.bytes_sent, self.end_to_end.copy())


def _reasons(raw: Any) -> Counter[str]:
    """Drops by reason from a heartbeat (untrusted); ``ValueError`` if malformed."""
    dropped: Counter[str] = Counter()
    if not isinstance(raw, dict) or len(raw) > 32:
        raise ValueError("bad dropped counters")
    for reason, value in raw.items():
        if not isinstance(value, int) or value < 0 or not str(reason).isidentifier():
            raise ValueError("bad dropped counter")
        dropped[str(reason)] = value
    return dropped
