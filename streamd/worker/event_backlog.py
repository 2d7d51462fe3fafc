"""Where a detection event goes, and the events that wait for Redis (pure).

With Redis configured, an event is published live only with the id it is kept
under (clients order and resume by it). So an event made while Redis is down,
or before the first PING answered, waits here: a bounded FIFO, bounded by count
and by snapshot bytes, the oldest dropped (and counted) past either bound. The
child writes the waiting events in order once Redis answers, each kept, then
published with its id.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis.exceptions import ResponseError

from streamd.states import RedisState

MAX_BACKLOG_BYTES = 16 * 1024 * 1024  # snapshots held while Redis is away
# Error replies that mean "ask again, maybe elsewhere" (a failover, a moved slot,
# a Redis still loading): the event waits. Any other error reply (WRONGTYPE, OOM,
# NOPERM, …) would come back every time: that event is not kept (counted).
_RETRY_REPLIES = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN", "READONLY")


class EventRoute(Enum):
    KEEP = "keep"  # Redis answers: keep it in the stream, then publish it with its id
    WAIT = "wait"  # Redis configured but down or not yet up: into the backlog
    LOCAL = "local"  # no Redis: to the supervisor, whose local log gives it its id


def route_event(redis: RedisState) -> EventRoute:
    if redis is RedisState.DISABLED:
        return EventRoute.LOCAL
    return EventRoute.KEEP if redis is RedisState.UP else EventRoute.WAIT


def worth_retrying(exc: BaseException) -> bool:
    """Did keeping an event fail in a way that a reconnect can cure?"""
    if not isinstance(exc, ResponseError):
        return True  # connection lost, timeout, refused: Redis is down
    return str(exc).split(" ", 1)[0] in _RETRY_REPLIES


@dataclass(frozen=True)
class PendingEvent:
    event: dict[str, Any]  # DetectionEvent.to_json()
    snapshot: bytes | None

    @property
    def size(self) -> int:
        return len(self.snapshot or b"")


class EventBacklog:
    """Events waiting for Redis, oldest first; ``dropped`` counts those pushed
    out by newer ones."""

    def __init__(self, capacity: int, max_bytes: int = MAX_BACKLOG_BYTES) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: deque[PendingEvent] = deque()
        self._bytes = 0
        self.dropped = 0

    def add(self, item: PendingEvent) -> int:
        """Append ``item``; return how many of the oldest were dropped for it."""
        self._items.append(item)
        self._bytes += item.size
        return self._trim()

    def take(self) -> PendingEvent | None:
        """The oldest event, removed (``put_back`` it if it could not be written)."""
        if not self._items:
            return None
        item = self._items.popleft()
        self._bytes -= item.size
        return item

    def put_back(self, item: PendingEvent) -> int:
        """Return a taken event to the front; it is the oldest, so if the backlog
        filled meanwhile it is the one dropped (the count returned)."""
        self._items.appendleft(item)
        self._bytes += item.size
        return self._trim()

    def _trim(self) -> int:
        dropped = 0
        while len(self._items) > self.capacity or (
            self._bytes > self.max_bytes and len(self._items) > 1
        ):
            self._bytes -= self._items.popleft().size
            dropped += 1
        self.dropped += dropped
        return dropped

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
