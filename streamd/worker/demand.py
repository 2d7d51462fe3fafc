"""Encode only what someone watches (pure: ``now`` passed in).

A camera is watched when this daemon's own viewers watch it (the supervisor's
DEMAND message) or when anyone at all listens on Redis: ``PUBSUB NUMSUB`` of its
channel, or any pattern subscriber (``PUBSUB NUMPAT``: a ``PSUBSCRIBE video:*``
consumer counts as watching everything). While unwatched the child still
captures and detects, but skips JPEG encoding and publishing, except one frame
every ``IDLE_REFRESH_S`` sent to the local gateway only, so its cache (the frame
a new viewer gets at once, and snapshots) stays recent. Viewers of this daemon's
own gateway are known at once (DEMAND); Redis is asked every ``IDLE_POLL_S``
while idle (so another gateway's or program's viewer gets frames within half a
second) and every ``WATCHED_POLL_S`` while watched. Asking every frame interval
cost an idle H.264 camera as much CPU as the rest of its idling (the benchmark's
idle/watched ratio went from 0.22 to ~0.1).
"""

from __future__ import annotations

from dataclasses import dataclass

WATCHED_POLL_S = 1.0
IDLE_POLL_S = 0.5
IDLE_REFRESH_S = 10.0


@dataclass
class DemandPolicy:
    frame_interval: float
    off_after: float = 2.0  # unwatched for this long before encoding stops
    local: bool = False
    last_remote_watch: float | None = None

    def remote(self, watched: bool, now: float) -> None:
        if watched:
            self.last_remote_watch = now

    def watched(self, now: float) -> bool:
        if self.local:
            return True
        last = self.last_remote_watch
        return last is not None and now - last < self.off_after

    def next_poll(self, now: float) -> float:
        """Seconds to the next Redis check: sooner while idle, slow while watched."""
        return WATCHED_POLL_S if self.watched(now) else max(IDLE_POLL_S, self.frame_interval)
