"""The lifecycle of one camera child as a pure state machine (``now`` passed in).

    STOPPED ──start──▶ STARTING ──stable for ``stable_after`` with frames──▶ RUNNING
       ▲                  │ exit                                        │ exit
       │                  ▼                                             ▼
       └──stop──  BACKOFF (exponential, jitter, cap; never gives up) ◀──┘
                  CONFIG_ERROR (exit code 78: not restarted until the config changes)

Failures only reset once a start proved stable, so a crash-looping child backs
off to the cap, and a camera that is off all night comes back within one capped
delay of being reachable again.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from streamd.backoff import Backoff
from streamd.worker.spec import EX_CONFIG


class ChildState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    CONFIG_ERROR = "config_error"


@dataclass
class Lifecycle:
    backoff: Backoff
    stable_after: float = 3.0
    state: ChildState = ChildState.STOPPED
    failures: int = 0
    restarts: int = 0
    started_at: float | None = None
    restart_at: float | None = None

    def on_spawned(self, now: float) -> None:
        if self.started_at is not None:
            self.restarts += 1
        self.state = ChildState.STARTING
        self.started_at = now
        self.restart_at = None

    def on_frames(self, now: float) -> None:
        """The child reported delivered frames; promote it once it proved stable."""
        if (
            self.state is ChildState.STARTING
            and self.started_at is not None
            and now - self.started_at >= self.stable_after
        ):
            self.state = ChildState.RUNNING
            self.failures = 0

    def on_exit(
        self, now: float, exit_code: int | None, draw: Callable[[], float] = random.random
    ) -> float | None:
        """Record an exit; return the restart delay, or None if not to restart."""
        if exit_code == EX_CONFIG:
            self.state = ChildState.CONFIG_ERROR
            self.restart_at = None
            return None
        self.failures += 1
        delay = self.backoff.delay(self.failures, draw)
        self.state = ChildState.BACKOFF
        self.restart_at = now + delay
        return delay

    def on_stopped(self) -> None:
        self.state = ChildState.STOPPED
        self.restart_at = None
        self.failures = 0
