"""The lifecycle of one camera child as a pure state machine (``now`` passed in).

    STOPPED ──start──▶ STARTING ──stable for ``stable_after`` with frames──▶ RUNNING
       ▲                  │ exit / stall                                │ exit / stall
       │                  ▼                                             ▼
       └──stop──  BACKOFF (exponential, jitter, cap; never gives up) ◀──┘
                  CONFIG_ERROR (exit code 78: not restarted until the config changes)

A stall (no heartbeat for ``stall_timeout``) is handled by killing the child;
its exit then takes the ordinary exit transition.

Failures only reset once a start proved stable, so a crash-looping child backs
off to the cap, and a camera that is off all night comes back within one capped
delay of being reachable again.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from streamd.backoff import Backoff
from streamd.states import ChildState, ExitCode


@dataclass
class Lifecycle:
    backoff: Backoff
    stable_after: float = 3.0
    state: ChildState = ChildState.STOPPED
    failures: int = 0
    restarts: int = 0
    started_at: float | None = None

    def on_start_requested(self) -> None:
        """Asked to run: STARTING already while it waits for a start slot or the
        fork server (a stopped camera that is about to start is not stopped)."""
        if self.state is ChildState.STOPPED:
            self.state = ChildState.STARTING

    def on_spawned(self, now: float) -> None:
        if self.started_at is not None:
            self.restarts += 1
        self.state = ChildState.STARTING
        self.started_at = now

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
        if exit_code == ExitCode.CONFIG:
            self.state = ChildState.CONFIG_ERROR
            return None
        self.failures += 1
        delay = self.backoff.delay(self.failures, draw)
        self.state = ChildState.BACKOFF
        return delay

    def on_stopped(self) -> None:
        self.state = ChildState.STOPPED
        self.failures = 0


def control_closed_is_news(stopped_by_us: bool) -> bool:
    """A control channel reset by a child we were stopping (SIGTERM/SIGKILL with
    our messages unread) is expected; any other reset is worth a line (the exit
    itself is logged either way). Never a "bad control message"."""
    return not stopped_by_us


@dataclass(frozen=True)
class SpecDiff:
    """What a reload changes, by camera id (pure: compares full child specs, so a
    new Redis URL or log level restarts the children it affects)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]


def diff_specs(old: Mapping[str, object], new: Mapping[str, object]) -> SpecDiff:
    return SpecDiff(
        added=tuple(k for k in new if k not in old),
        removed=tuple(k for k in old if k not in new),
        changed=tuple(k for k in new if k in old and old[k] != new[k]),
        unchanged=tuple(k for k in new if k in old and old[k] == new[k]),
    )
