"""Latest frame per camera and one latest-wins mailbox per viewer (no sockets).

Every frame source (the Redis subscriber, the children's control sockets) calls
``Hub.publish``; every viewer connection owns a ``Mailbox``. Publishing replaces
whatever the mailbox still holds, so a slow viewer skips frames (counted) and
never delays another viewer or grows memory: each viewer pins at most one frame.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from streamd.stats import DeliveryStats
from streamd.transport.frame import FrameMeta


@dataclass(frozen=True, slots=True)
class HubFrame:
    camera_id: str
    payload: bytes  # a complete JPEG, forwarded as received
    meta: FrameMeta | None
    received_ns: int


class Mailbox:
    """Holds at most one frame; ``put`` replaces, ``get`` waits."""

    def __init__(self, camera_id: str, notify: asyncio.Event | None = None) -> None:
        self.camera_id = camera_id
        self._frame: HubFrame | None = None
        self._ready = asyncio.Event()
        self._notify = notify  # shared by all mailboxes of one multiplexed viewer
        self.delivered = 0
        self.skipped = 0

    def put(self, frame: HubFrame) -> None:
        if self._frame is not None:
            self.skipped += 1
        self._frame = frame
        self._ready.set()
        if self._notify is not None:
            self._notify.set()

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


class Hub:
    def __init__(self) -> None:
        self.feeds: dict[str, CameraFeed] = {}
        self.rejected: Counter[str] = Counter()
        self.duplicates = 0
        self.skipped_total = 0

    def publish(self, frame: HubFrame) -> None:
        feed = self.feeds.get(frame.camera_id)
        if feed is None:
            feed = self.feeds[frame.camera_id] = CameraFeed()
        if frame.meta is not None and feed.last_seq == frame.meta.seq and feed.latest is not None:
            # The same frame by two paths (Redis and the fallback while Redis flaps).
            self.duplicates += 1
            return
        feed.latest = frame
        feed.frames += 1
        feed.delivery.received += 1
        feed.last_seq = frame.meta.seq if frame.meta is not None else None
        for mailbox in feed.mailboxes:
            before = mailbox.skipped
            mailbox.put(frame)
            self.skipped_total += mailbox.skipped - before

    def attach(self, camera_id: str, notify: asyncio.Event | None = None) -> Mailbox:
        """A new viewer: its mailbox starts with the cached frame, if any."""
        feed = self.feeds.get(camera_id)
        if feed is None:
            feed = self.feeds[camera_id] = CameraFeed()
        mailbox = Mailbox(camera_id, notify)
        if feed.latest is not None:
            mailbox.put(feed.latest)
        feed.mailboxes.add(mailbox)
        return mailbox

    def detach(self, mailbox: Mailbox, *, keep_cache: bool) -> None:
        feed = self.feeds.get(mailbox.camera_id)
        if feed is None:
            return
        feed.mailboxes.discard(mailbox)
        if not feed.mailboxes and not keep_cache:
            # Unconfigured camera nobody watches any more: forget it (bounded memory).
            del self.feeds[mailbox.camera_id]

    def forget(self, camera_id: str) -> None:
        """Drop a camera's cache when nobody watches it (removed by a reload)."""
        feed = self.feeds.get(camera_id)
        if feed is not None and not feed.mailboxes:
            del self.feeds[camera_id]

    def viewers(self, camera_id: str | None = None) -> int:
        if camera_id is not None:
            feed = self.feeds.get(camera_id)
            return len(feed.mailboxes) if feed else 0
        return sum(len(f.mailboxes) for f in self.feeds.values())

    def record_sent(self, frame: HubFrame, sent_ns: int) -> None:
        """A viewer got ``frame``: count it and its capture → sent latency."""
        feed = self.feeds.get(frame.camera_id)
        if feed is None:
            return
        feed.delivery.sent += 1
        feed.delivery.bytes_sent += len(frame.payload)
        if frame.meta is not None and frame.meta.capture_ns > 0:
            feed.delivery.end_to_end.record(max(0, sent_ns - frame.meta.capture_ns) / 1e9)

    def delivery(self, camera_id: str) -> DeliveryStats:
        feed = self.feeds.get(camera_id)
        return feed.delivery if feed else DeliveryStats()

    def latest(self, camera_id: str) -> HubFrame | None:
        feed = self.feeds.get(camera_id)
        return feed.latest if feed else None
