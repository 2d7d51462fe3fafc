"""The periodic per-camera stats line (pure: snapshots and ``now`` passed in).

Field names are stable and documented in the README ("Operating streamd").
Interval figures are differences of cumulative snapshots, so they agree with the
Prometheus counters at the same instants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamd.states import CameraState
from streamd.stats import CameraCounters, DeliveryStats


@dataclass(frozen=True)
class CameraSample:
    """Everything known about one camera at one instant."""

    figures: CameraCounters
    delivery: DeliveryStats
    state: CameraState
    viewers: int
    restarts: int
    stalls: int
    started_by: str | None = None  # how the current child was started: fork / spawn
    start_timeouts: int = 0


@dataclass(frozen=True)
class _Snapshot:
    at: float
    figures: CameraCounters
    delivery: DeliveryStats


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


class StatsReporter:
    def __init__(self) -> None:
        self._previous: dict[str, _Snapshot] = {}
        self.last_lines: dict[str, dict[str, Any]] = {}

    def tick(self, now: float, samples: dict[str, CameraSample]) -> dict[str, dict[str, Any]]:
        lines: dict[str, dict[str, Any]] = {}
        for camera_id, sample in samples.items():
            previous = self._previous.get(camera_id)
            base_figures = previous.figures if previous else CameraCounters()
            base_delivery = previous.delivery if previous else DeliveryStats()
            seconds = now - previous.at if previous else 0.0
            lines[camera_id] = stats_line(sample, base_figures, base_delivery, seconds)
            self._previous[camera_id] = _Snapshot(now, sample.figures, sample.delivery.copy())
        for gone in set(self._previous) - set(samples):
            del self._previous[gone]
        self.last_lines = lines
        return lines


def stats_line(
    sample: CameraSample, before: CameraCounters, delivery_before: DeliveryStats, seconds: float
) -> dict[str, Any]:
    delta = sample.figures - before
    counters = delta.counters
    end_to_end = sample.delivery.end_to_end - delivery_before.end_to_end
    sent = sample.delivery.sent - delivery_before.sent
    out = counters["published"] + counters["fallback"]
    return {
        "state": sample.state,
        "interval_s": round(seconds, 3),
        "frames_captured": counters["captured"],
        "frames_published": counters["published"],
        "frames_fallback": counters["fallback"],
        "frames_idle": counters["skipped_idle"],
        "frames_dropped": sum(delta.dropped.values()),
        "dropped": dict(delta.dropped),
        "success_rate_pct": delta.success_rate(),
        **delta.publish_latency.summary_ms("publish"),
        **delta.capture_to_publish.summary_ms("capture_to_publish"),
        **end_to_end.summary_ms("e2e", (50, 99)),
        **delta.detect_latency.summary_ms("detect", (50, 95)),
        "detect_fps": _rate(counters["detect_runs"], seconds),
        "events": counters["events"],
        "fps_in": _rate(counters["captured"], seconds),
        "fps_out": _rate(out, seconds),
        "frames_sent": sent,
        "viewers": sample.viewers,
        "bytes_per_s": _rate(counters["bytes_published"], seconds),
        "restarts": sample.restarts,
        "stalls": sample.stalls,
        "frames_published_total": sample.figures.counters["published"],
        "frames_captured_total": sample.figures.counters["captured"],
    }
