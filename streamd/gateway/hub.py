"""Latest frame per camera and one latest-wins mailbox per viewer (no sockets).

Configured cameras are *pinned*: their latest frame is kept for snapshots and
late joiners. Other cameras (another node's, or ids a hostile Redis publisher
invents) are kept while watched, then in an LRU of ``max_idle_foreign`` idle
feeds, so a viewer joining one soon gets its newest frame at once and memory
stays bounded whatever ids arrive.

Every frame source (the Redis subscriber, the children's control sockets) calls
``Hub.publish``; every viewer connection owns a ``Mailbox``. Publishing replaces
whatever the mailbox still holds, so a slow viewer skips frames (counted) and
never delays another viewer or grows memory: each viewer pins at most one frame.
A mailbox may have a ``send_now``: a viewer whose socket is idle takes the frame
at once, written by ``publish`` itself, with no task to wake (the common case);
only a busy socket leaves it in the mailbox for the viewer's sender task.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streamd.stats import DeliveryStats
from streamd.transport.frame import FrameMeta


@dataclass(slots=True, eq=False)
class HubFrame:
    """Treated as immutable, except ``message``: a cache (not frozen: a frozen
    dataclass costs a ``object.__setattr__`` per field, on every frame)."""

    camera_id: str
    payload: bytes  # a complete JPEG, forwarded as received
    meta: FrameMeta | None
    received_ns: int
    # The /ws/{id} WebSocket message (frame header + JPEG), built once by the
    # first viewer that needs it and shared by all.
    message: bytes | None = None


# Write a frame to an idle viewer now; False when its socket is busy (or gone).
SendNow = Callable[[HubFrame], bool]


class Mailbox:
    """Holds at most one frame; ``put`` replaces, ``get`` waits."""

    def __init__(
        self,
        camera_id: str,
        notify: asyncio.Event | None = None,
        send_now: SendNow | None = None,
    ) -> None:
        self.camera_id = camera_id
        self._frame: HubFrame | None = None
        self._ready = asyncio.Event()
        self._notify = notify  # shared by all mailboxes of one multiplexed viewer
        self._send_now = send_now
        self.delivered = 0
        self.skipped = 0

    def put(self, frame: HubFrame) -> bool:
        """True when the frame was written to the viewer at once (``send_now``)."""
        # Nothing waiting here means the sender task is idle: if the socket is
        # too, write at once (the task would only do the same, a loop turn later).
        if self._frame is None and self._send_now is not None and self._send_now(frame):
            self.delivered += 1
            return True
        if self._frame is not None:
            self.skipped += 1
        self._frame = frame
        self._ready.set()
        if self._notify is not None:
            self._notify.set()
        return False

    def take(self) -> HubFrame | None:
        """The pending frame, if any, without waiting."""
        frame, self._frame = self._frame, None
        if frame is not None:
            self.delivered += 1
        return frame

    async def get(self) -> HubFrame:
        while self._frame is None:
            self._ready.clear()
            await self._ready.wait()
        frame, self._frame = self._frame, None
        self.delivered += 1
        return frame


@dataclass
class CameraFeed:
    latest: HubFrame | None = None
    mailboxes: set[Mailbox] = field(default_factory=set)
    frames: int = 0
    last_seq: int | None = None
    delivery: DeliveryStats = field(default_factory=DeliveryStats)


MAX_IDLE_FOREIGN = 256  # idle feeds of unconfigured cameras kept (LRU)
# Capture times outside this window are forwarded but kept out of latency figures:
# a camera with a wrong clock (or a hostile publisher) must not poison histograms.
MAX_CAPTURE_AGE_NS = 3600 * 10**9
MAX_CAPTURE_AHEAD_NS = 10 * 10**9


def plausible_capture(capture_ns: int, now_ns: int) -> bool:
    return now_ns - MAX_CAPTURE_AGE_NS <= capture_ns <= now_ns + MAX_CAPTURE_AHEAD_NS


class Hub:
    def __init__(
        self, pinned: Iterable[str] = (), max_idle_foreign: int = MAX_IDLE_FOREIGN
    ) -> None:
        self.feeds: dict[str, CameraFeed] = {}
        self.duplicates = 0
        self.skipped_total = 0
        self.untimed = 0  # frames whose capture time was implausible
        self._pinned: frozenset[str] = frozenset(pinned)
        self._idle_foreign: OrderedDict[str, None] = OrderedDict()
        self._max_idle_foreign = max_idle_foreign

    def pin(self, camera_ids: Iterable[str]) -> None:
        """The configured cameras (at start and after each reload)."""
        self._pinned = frozenset(camera_ids)
        for camera_id in self._pinned:
            self._idle_foreign.pop(camera_id, None)
        newly_unpinned = [
            camera_id
            for camera_id, feed in self.feeds.items()
            if camera_id not in self._pinned
            and camera_id not in self._idle_foreign
            and not feed.mailboxes
        ]
        for camera_id in newly_unpinned:
            self._idle(camera_id)

    def _idle(self, camera_id: str) -> None:
        """An unpinned feed nobody watches: newest in the LRU, the oldest evicted."""
        self._idle_foreign[camera_id] = None
        self._idle_foreign.move_to_end(camera_id)
        while len(self._idle_foreign) > self._max_idle_foreign:
            evicted, _ = self._idle_foreign.popitem(last=False)
            self.feeds.pop(evicted, None)

    def _feed(self, camera_id: str) -> CameraFeed:
        feed = self.feeds.get(camera_id)
        if feed is None:
            feed = self.feeds[camera_id] = CameraFeed()
        return feed

    def publish(self, frame: HubFrame) -> None:
        feed = self._feed(frame.camera_id)
        if not feed.mailboxes and frame.camera_id not in self._pinned:
            self._idle(frame.camera_id)
        if frame.meta is not None and feed.last_seq == frame.meta.seq and feed.latest is not None:
            # The same frame by two paths (Redis and the fallback while Redis flaps).
            self.duplicates += 1
            return
        meta = frame.meta
        if meta is not None and not plausible_capture(meta.capture_ns, frame.received_ns):
            self.untimed += 1  # still forwarded; record_sent leaves it out of latency
        feed.latest = frame
        feed.frames += 1
        feed.delivery.received += 1
        feed.last_seq = frame.meta.seq if frame.meta is not None else None
        sent_now = 0
        for mailbox in feed.mailboxes:
            before = mailbox.skipped
            sent_now += mailbox.put(frame)
            self.skipped_total += mailbox.skipped - before
        if sent_now:
            self.record_sent(frame, time.time_ns(), sent_now)

    def attach(
        self,
        camera_id: str,
        notify: asyncio.Event | None = None,
        send_now: SendNow | None = None,
    ) -> Mailbox:
        """A new viewer: its mailbox starts with the cached frame, if any."""
        feed = self._feed(camera_id)
        self._idle_foreign.pop(camera_id, None)
        mailbox = Mailbox(camera_id, notify, send_now)
        if feed.latest is not None and mailbox.put(feed.latest):
            self.record_sent(feed.latest, time.time_ns())
        feed.mailboxes.add(mailbox)
        return mailbox

    def detach(self, mailbox: Mailbox) -> None:
        feed = self.feeds.get(mailbox.camera_id)
        if feed is None:
            return
        feed.mailboxes.discard(mailbox)
        if feed.mailboxes:
            return
        if feed.latest is not None:
            feed.latest.message = None  # nobody to send it to: keep only the JPEG
        if mailbox.camera_id not in self._pinned:
            self._idle(mailbox.camera_id)

    def viewers(self, camera_id: str | None = None) -> int:
        if camera_id is not None:
            feed = self.feeds.get(camera_id)
            return len(feed.mailboxes) if feed else 0
        return sum(len(f.mailboxes) for f in self.feeds.values())

    def record_sent(self, frame: HubFrame, sent_ns: int, viewers: int = 1) -> None:
        """``viewers`` got ``frame`` at ``sent_ns``: count them and the capture →
        sent latency (once per viewer)."""
        feed = self.feeds.get(frame.camera_id)
        if feed is None:
            return
        feed.delivery.sent += viewers
        feed.delivery.bytes_sent += len(frame.payload) * viewers
        if frame.meta is None or frame.meta.capture_ns <= 0:
            return
        if plausible_capture(frame.meta.capture_ns, frame.received_ns):
            latency = max(0, sent_ns - frame.meta.capture_ns) / 1e9
            feed.delivery.end_to_end.record(latency, viewers)

    def delivery(self, camera_id: str) -> DeliveryStats:
        feed = self.feeds.get(camera_id)
        return feed.delivery if feed else DeliveryStats()

    def latest(self, camera_id: str) -> HubFrame | None:
        feed = self.feeds.get(camera_id)
        return feed.latest if feed else None
