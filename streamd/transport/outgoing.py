"""What publishers queue (pure): the ``Outgoing`` items, the bounded
``DropOldestQueue`` they wait in, and the counters' names per kind of item."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Outgoing(Protocol):
    """What a publisher sends: a frame, or an access unit (``unit_publisher``)."""

    @property
    def queued_at(self) -> float: ...  # time.monotonic() at submit


T = TypeVar("T", bound=Outgoing)


@dataclass(frozen=True)
class CounterNames:
    """Where a publisher counts (frames and units keep apart figures)."""

    attempts: str = "attempts"
    published: str = "published"
    failures: str = "failures"
    fallback: str = "fallback"
    bytes: str = "bytes_published"


class DropOldestQueue(Generic[T]):
    """Bounded FIFO that drops the oldest entry when full (pure); all of it is
    taken at once, as one batch."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[T] = deque()
        self.capacity = capacity

    def push(self, item: T) -> int:
        """Add ``item``; return how many old items were dropped to make room."""
        dropped = 0
        while len(self._items) >= self.capacity:
            self._items.popleft()
            dropped += 1
        self._items.append(item)
        return dropped

    def take_all(self) -> list[T]:
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)
