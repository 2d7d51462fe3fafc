"""What is known about one camera, as typed values: the child's heartbeat (its
wire form is the control socket's ``STATUS`` body) and the ``CameraStatus`` the
supervisor builds from it for the API, the wall and ``streamd status``.

``CameraStatus.to_json`` is the one place that names the API's keys; nothing
adds keys to a status after it is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from streamd.states import CameraState, ChildState, RedisState, SourceState
from streamd.stats import CameraCounters


@dataclass(frozen=True)
class Heartbeat:
    """One ``STATUS`` message from a child (cumulative figures included)."""

    state: SourceState
    redis: RedisState
    seq: int = 0
    uptime_s: float = 0.0
    detector: str | None = None  # "none", a detector kind, or "failed: …"
    watched: bool | None = None
    active_labels: tuple[str, ...] = ()
    figures: CameraCounters = field(default_factory=CameraCounters)

    def to_wire(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "redis": self.redis.value,
            "seq": self.seq,
            "uptime_s": self.uptime_s,
            "detector": self.detector,
            "watched": self.watched,
            "active_labels": list(self.active_labels),
            "figures": self.figures.to_wire(),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Heartbeat:
        """Parse an untrusted heartbeat; ``ValueError`` names the bad field."""
        try:
            state = SourceState(str(data.get("state")))
            redis = RedisState(str(data.get("redis")))
        except ValueError as exc:
            raise ValueError(f"state: {exc}") from None
        detector = data.get("detector")
        watched = data.get("watched")
        labels = data.get("active_labels", [])
        seq = data.get("seq", 0)
        uptime = data.get("uptime_s", 0.0)
        if detector is not None and not isinstance(detector, str):
            raise ValueError("detector must be a string")
        if watched is not None and not isinstance(watched, bool):
            raise ValueError("watched must be true or false")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ValueError("active_labels must be a list of strings")
        if not isinstance(seq, int) or not isinstance(uptime, int | float):
            raise ValueError("seq and uptime_s must be numbers")
        try:
            figures = CameraCounters.from_wire(data.get("figures", {}))
        except ValueError as exc:
            raise ValueError(f"figures: {exc}") from None
        return cls(state, redis, seq, float(uptime), detector, watched, tuple(labels), figures)


@dataclass(frozen=True)
class RecentFigures:
    """The last stats line's figures an API client sees next to the state (None
    until the first stats interval has passed)."""

    fps_out: float | None = None
    success_rate_pct: float | None = None
    publish_p50_ms: float | None = None
    e2e_p50_ms: float | None = None
    detect_fps: float | None = None
    detect_p50_ms: float | None = None

    @classmethod
    def from_stats_line(cls, line: Mapping[str, Any]) -> RecentFigures:
        return cls(**{f.name: line.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class CameraStatus:
    """One supervised camera, for health, the API and the wall."""

    state: CameraState
    child: ChildState
    pid: int | None
    redis: RedisState
    restarts: int
    stalls: int
    memory_restarts: int
    last_exit_code: int | None
    last_error: str | None
    detector: str | None
    watched: bool | None
    active_labels: tuple[str, ...]
    started_by: str | None = None  # "fork" (warm fork server) or "spawn" (exec)
    start_timeouts: int = 0  # children replaced for not starting within start_timeout
    recent: RecentFigures = RecentFigures()  # filled in by the daemon

    def to_json(self) -> dict[str, Any]:
        """The API's keys and order, as they have always been (``started_by`` and
        ``start_timeouts`` added after ``active_labels``)."""
        return {
            "state": self.state.value,
            "child": self.child.value,
            "pid": self.pid,
            "redis": self.redis.value,
            "restarts": self.restarts,
            "stalls": self.stalls,
            "memory_restarts": self.memory_restarts,
            "last_exit_code": self.last_exit_code,
            "last_error": self.last_error,
            "detector": self.detector,
            "watched": self.watched,
            "active_labels": list(self.active_labels),
            "started_by": self.started_by,
            "start_timeouts": self.start_timeouts,
            **asdict(self.recent),
        }
