"""What the supervisor knows about one camera's child (pure): its lifecycle,
the current child's pid and latest heartbeat, the counts of its replacements
(stalls, start timeouts, memory restarts), its figures across restarts, and the
``CameraStatus`` built from all of it. ``child.CameraChild`` keeps it up to
date."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamd.camera_status import CameraStatus, Heartbeat
from streamd.lifecycle import Lifecycle
from streamd.states import CameraState, ChildState, RedisState
from streamd.stats import CameraCounters


@dataclass
class ChildStatus:
    """What the supervisor knows about one camera, for health, logs and APIs."""

    lifecycle: Lifecycle
    pid: int | None = None
    heartbeat: Heartbeat | None = None  # the current child's latest
    stalls: int = 0
    memory_restarts: int = 0  # replaced for passing child_memory_max
    start_timeouts: int = 0  # killed for sending no first heartbeat within start_timeout
    started_by: str | None = None  # "fork" or "spawn": how the current child was started
    last_exit_code: int | None = None
    last_error: str | None = None
    # Figures of earlier runs of this camera's child, so totals never go backwards.
    figures_base: CameraCounters = field(default_factory=CameraCounters)
    figures: CameraCounters = field(default_factory=CameraCounters)
    held_by: str | None = None  # the node that owns (publishes) this camera instead

    def totals(self) -> CameraCounters:
        return self.figures_base + self.figures

    def on_new_child(self) -> None:
        self.figures_base = self.totals()
        self.figures = CameraCounters()
        self.heartbeat = None

    @property
    def camera_state(self) -> CameraState:
        """What the camera is said to be: its source's state, or the child's own
        while none runs or reports."""
        if self.pid is None:
            return ChildState.CONFLICT if self.held_by else self.lifecycle.state
        if self.heartbeat is None:
            return ChildState.STARTING
        return self.heartbeat.state

    @property
    def redis_state(self) -> RedisState:
        return RedisState.UNKNOWN if self.heartbeat is None else self.heartbeat.redis

    def camera_status(self) -> CameraStatus:
        heartbeat = self.heartbeat
        return CameraStatus(
            state=self.camera_state,
            child=self.lifecycle.state,
            pid=self.pid,
            started_by=self.started_by if self.pid is not None else None,
            redis=self.redis_state,
            restarts=self.lifecycle.restarts,
            stalls=self.stalls,
            memory_restarts=self.memory_restarts,
            start_timeouts=self.start_timeouts,
            last_exit_code=self.last_exit_code,
            last_error=self.last_error,
            detector=heartbeat.detector if heartbeat else None,
            watched=heartbeat.watched if heartbeat else None,
            active_labels=heartbeat.active_labels if heartbeat else (),
        )
