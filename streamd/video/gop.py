"""GOP cache per camera and latest-wins-at-GOP-granularity per viewer, sans-I/O.

A decoder can start only at a keyframe and needs every unit after it, in
order, until the next one. JPEG's "latest frame wins" becomes "latest GOP
wins": a viewer never gets a unit whose references it did not get, so it
never shows a broken picture. It skips forward to a keyframe instead.

"Behind" is measured in time, not in units: units arrive in bursts (a child
descheduled for a moment, a Redis read holding several), so a keyframe often
lands while the previous GOP's last units are still pending on a viewer that
keeps up. Dropping those would lose the tail of every GOP on a busy node.

``seq`` is the child's unit counter from our SEI: a unit that is not the
successor of the previous one (lost, refused, or a child restart) breaks the
GOP, and both classes wait for the next keyframe.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# A viewer whose oldest pending unit arrived longer than this before a keyframe
# is behind, and jumps to the keyframe.
MAX_LAG_NS = 500_000_000


@dataclass(frozen=True, slots=True)
class Unit:
    seq: int
    keyframe: bool
    data: bytes
    received_ns: int  # when it reached us (any clock, the same for all units)


class GopCache:
    """The units of one camera since its last keyframe, for late joiners."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._units: list[Unit] = []
        self._bytes = 0
        self._complete = False  # the cache holds a whole GOP prefix
        self._last_seq: int | None = None
        self.overflows = 0  # GOPs cut because they outgrew max_bytes
        self.gaps = 0  # GOPs cut because a unit was missing
        self.dropped = 0  # units not cached (after a cut, until a keyframe)

    def push(self, unit: Unit) -> None:
        follows = self._last_seq is not None and unit.seq == self._last_seq + 1
        self._last_seq = unit.seq
        if unit.keyframe and len(unit.data) <= self.max_bytes:
            self._units, self._bytes, self._complete = [unit], len(unit.data), True
            return
        if self._complete and not follows:
            self.gaps += 1
            self._cut()
        elif self._complete and self._bytes + len(unit.data) > self.max_bytes:
            self.overflows += 1
            self._cut()
        if not self._complete:
            self.dropped += 1
            return
        self._units.append(unit)
        self._bytes += len(unit.data)

    def _cut(self) -> None:
        self._units, self._bytes, self._complete = [], 0, False

    def units(self) -> list[Unit]:
        """What a viewer joining now needs: the keyframe and everything since,
        or nothing (it then starts at the next keyframe)."""
        return list(self._units) if self._complete else []

    @property
    def size(self) -> int:
        return self._bytes


class ViewerQueue:
    """One viewer's pending units. ``offer`` every unit of the camera (after
    ``GopCache.units()`` on join); the sender ``take``s when it can send.

    A viewer still holding a unit that arrived over ``max_lag_ns`` before a
    keyframe is behind: its backlog is dropped and it jumps to the keyframe
    (a younger backlog is sent first: the viewer keeps up, the units merely
    came in a burst). A backlog over ``max_bytes`` is dropped too, and the
    viewer waits for the next keyframe.
    """

    def __init__(self, max_bytes: int, max_lag_ns: int = MAX_LAG_NS) -> None:
        self.max_bytes = max_bytes
        self.max_lag_ns = max_lag_ns
        self._pending: deque[Unit] = deque()
        self._bytes = 0
        self._synced = False  # the next unit offered may be sent
        self._last_seq: int | None = None
        self.skips = 0  # times the viewer jumped forward
        self.skipped = 0  # units it never got

    def offer(self, unit: Unit) -> None:
        if self.admit(unit):
            self.push(unit)

    def admit(self, unit: Unit) -> bool:
        """``offer`` without the queueing: True when ``unit`` is for the viewer,
        which the caller then ``push``es, or writes at once when nothing is
        pending (``take`` would have returned it next)."""
        follows = self._last_seq is not None and unit.seq == self._last_seq + 1
        self._last_seq = unit.seq
        if unit.keyframe:
            if self._pending and self._behind(unit):  # the new GOP wins
                self._skip()
            if len(unit.data) <= self.max_bytes:
                self._synced = True
            else:
                self._synced = False
                self.skipped += 1
                return False
        elif not self._synced:
            self.skipped += 1
            return False
        elif not follows or self._bytes + len(unit.data) > self.max_bytes:
            self._skip()
            self._synced = False
            self.skipped += 1
            return False
        return True

    def _behind(self, keyframe: Unit) -> bool:
        oldest = self._pending[0]
        too_late = keyframe.received_ns - oldest.received_ns > self.max_lag_ns
        return too_late or self._bytes + len(keyframe.data) > self.max_bytes

    def push(self, unit: Unit) -> None:
        """Queue a unit ``admit`` let through."""
        self._pending.append(unit)
        self._bytes += len(unit.data)

    def _skip(self) -> None:
        self.skips += 1
        self.skipped += len(self._pending)
        self._pending.clear()
        self._bytes = 0

    def peek(self) -> Unit | None:
        """The next unit ``take`` would return, left in place."""
        return self._pending[0] if self._pending else None

    def take(self) -> Unit | None:
        """The next unit to send, or None."""
        if not self._pending:
            return None
        unit = self._pending.popleft()
        self._bytes -= len(unit.data)
        return unit

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._bytes
