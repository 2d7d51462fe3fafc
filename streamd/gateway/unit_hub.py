"""Passthrough access units per camera and one latest-GOP-wins queue per viewer
(no sockets; issue 20, docs/protocol.md "H.264/H.265 passthrough").

Units arrive untrusted from Redis (``au:{camera_id}``). Each is judged by
``video.units.check_unit`` before anything else looks at it; the camera's codec
is learnt from our metadata SEI (the codec byte of the first accepted unit, and
again only at a keyframe, when a camera was reconfigured). A camera has a feed
only while a viewer here watches it, so memory follows viewers, not the ids a
publisher invents: the feed's ``GopCache`` (bounded in bytes) gives a joining
viewer the units since the last keyframe at once, and each viewer's
``ViewerQueue`` (bounded in bytes) skips to the next keyframe when it falls
behind, never to a broken picture.

A viewer asks for one codec (``Format``); when the camera turns out to send the
other, the viewer is told (``UnitViewer.mismatch``) and gets nothing: the
single-camera socket is closed with a reason, the multiplexed one falls back to
JPEG for that camera (``viewers``).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from streamd.gateway.hub import plausible_capture
from streamd.stats import DeliveryStats
from streamd.video.annexb import Codec
from streamd.video.gop import GopCache, Unit, ViewerQueue
from streamd.video.passthrough import MAX_MESSAGE_BYTES
from streamd.video.units import Reason, Verdict, check_unit

# A 1080p GOP of 2 s at 8 Mbit/s is 2 MB; twice that is cached per watched camera.
GOP_CACHE_BYTES = 4 * 1024 * 1024
# A viewer further behind than this within one GOP waits for the next keyframe.
VIEWER_QUEUE_BYTES = 4 * 1024 * 1024
# What a child's ``Passthrough`` may publish (demux's bound plus our NAL units).
MAX_UNIT_BYTES = MAX_MESSAGE_BYTES


class Format(enum.StrEnum):
    """What a viewer asks for: JPEG frames or one codec's access units."""

    JPEG = "jpeg"
    H264 = "h264"
    H265 = "h265"

    @property
    def codec(self) -> Codec | None:
        return _CODEC_OF.get(self)

    @classmethod
    def of(cls, codec: Codec) -> Format:
        return cls.H264 if codec is Codec.H264 else cls.H265


_CODEC_OF = {Format.H264: Codec.H264, Format.H265: Codec.H265}


def parse_format(value: str | None) -> Format | None:
    """The format a client asked for (absent: JPEG), or None if it is none of ours."""
    if value is None:
        return Format.JPEG
    try:
        return Format(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True, eq=False)
class HubUnit(Unit):
    """An accepted access unit: ``data`` as received, its metadata from our SEI,
    and the WebSocket messages built from it, once for all viewers."""

    camera_id: str
    codec: Codec
    capture_ns: int
    messages: dict[str, bytes] = field(default_factory=dict, compare=False)


def _other(codec: Codec) -> Codec:
    return Codec.H265 if codec is Codec.H264 else Codec.H264


def judge(data: bytes, known: Codec | None, camera_id: str, max_bytes: int) -> Verdict:
    """``check_unit`` for a camera whose codec is ``known`` (None: not yet). A unit
    of the other codec is accepted only while the codec is unknown, or when it is
    a keyframe (the camera was reconfigured: a new stream starts at a keyframe
    with its parameter sets); otherwise it stays ``wrong_codec``."""
    first = known or Codec.H264
    verdict = check_unit(data, first, camera_id, max_bytes)
    if verdict.reason is not Reason.WRONG_CODEC:
        return verdict
    other = check_unit(data, _other(first), camera_id, max_bytes)
    if other.ok and (known is None or other.keyframe):
        return other
    return verdict


# Write a unit to an idle viewer now; False when its socket is busy (or gone).
SendUnitNow = Callable[[HubUnit], bool]


class UnitViewer:
    """One viewer of one camera's units: its ``ViewerQueue``, a wake-up event
    (shared by all cameras of a multiplexed viewer) and, for an idle socket,
    ``send_now`` that writes a unit from ``UnitHub.ingest`` itself."""

    def __init__(
        self,
        camera_id: str,
        codec: Codec,
        *,
        max_bytes: int = VIEWER_QUEUE_BYTES,
        notify: asyncio.Event | None = None,
        send_now: SendUnitNow | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.codec = codec
        self.queue = ViewerQueue(max_bytes)
        self.ready = notify if notify is not None else asyncio.Event()
        self._send_now = send_now
        self.delivered = 0
        self.mismatch: Codec | None = None  # the camera sends this codec, not ours

    def offer(self, unit: HubUnit) -> bool:
        """True when the unit was written to the viewer at once (an idle socket
        and nothing pending: it never enters the queue)."""
        queue = self.queue
        if not queue.admit(unit):
            if queue.pending:
                self.ready.set()
            return False
        send_now = self._send_now
        if send_now is not None and not queue.pending and send_now(unit):
            self.delivered += 1
            return True
        queue.push(unit)
        self.ready.set()
        return False

    def take(self) -> HubUnit | None:
        unit = self.queue.take()
        if unit is None:
            return None
        self.delivered += 1
        return cast(HubUnit, unit)  # only HubUnits are offered

    def tell_mismatch(self, codec: Codec) -> None:
        self.mismatch = codec
        self.ready.set()


@dataclass
class UnitFeed:
    cache: GopCache
    codec: Codec | None = None
    viewers: set[UnitViewer] = field(default_factory=set)
    delivery: DeliveryStats = field(default_factory=DeliveryStats)
    rejected: Counter[str] = field(default_factory=Counter)  # by Reason: a few keys


class UnitHub:
    def __init__(
        self,
        cache_bytes: int = GOP_CACHE_BYTES,
        max_unit_bytes: int = MAX_UNIT_BYTES,
    ) -> None:
        self.feeds: dict[str, UnitFeed] = {}
        self.cache_bytes = cache_bytes
        self.max_unit_bytes = max_unit_bytes
        self.unwatched = 0  # units of cameras nobody here watches (after an unsubscribe)
        self.codec_changes = 0
        self.untimed = 0  # units whose capture time was implausible

    def ingest(self, camera_id: str, data: bytes, received_ns: int) -> Reason | None:
        """Judge an untrusted unit and hand it to the camera's cache and viewers.
        The verdict (anything but ``OK`` was dropped), or None when nobody here
        watches the camera (not looked at)."""
        feed = self.feeds.get(camera_id)
        if feed is None:
            self.unwatched += 1
            return None
        verdict = judge(data, feed.codec, camera_id, self.max_unit_bytes)
        meta = verdict.meta
        if meta is None:
            feed.rejected[verdict.reason.value] += 1
            return verdict.reason
        if meta.codec is not feed.codec:
            self._codec_changed(feed, meta.codec)
        unit = HubUnit(
            meta.seq, meta.keyframe, data, received_ns, camera_id, meta.codec, meta.capture_ns
        )
        if not plausible_capture(unit.capture_ns, received_ns):
            self.untimed += 1
        feed.delivery.received += 1
        feed.cache.push(unit)
        sent_now = sum(viewer.offer(unit) for viewer in feed.viewers if viewer.mismatch is None)
        if sent_now:
            self.record_sent(unit, received_ns, sent_now)
        # The /ws/{id} message written to idle sockets just now is not kept in
        # the GOP cache (a second copy of every cached unit, and fresh memory
        # for every unit's copy); a joiner or a busy socket builds its own.
        unit.messages.pop("single", None)
        return Reason.OK

    def _codec_changed(self, feed: UnitFeed, codec: Codec) -> None:
        if feed.codec is not None:
            self.codec_changes += 1
        feed.codec = codec
        feed.cache = GopCache(self.cache_bytes)
        for viewer in feed.viewers:
            if viewer.codec is not codec:
                viewer.tell_mismatch(codec)

    def attach(self, viewer: UnitViewer) -> None:
        """A new viewer: the cached units since the last keyframe are offered at
        once (written at once to an idle socket), so its first picture needs no wait."""
        feed = self.feeds.get(viewer.camera_id)
        if feed is None:
            feed = self.feeds[viewer.camera_id] = UnitFeed(GopCache(self.cache_bytes))
        feed.viewers.add(viewer)
        if feed.codec is not None and feed.codec is not viewer.codec:
            viewer.tell_mismatch(feed.codec)
            return
        for cached in feed.cache.units():
            unit = cast(HubUnit, cached)
            if viewer.offer(unit):
                self.record_sent(unit, time.time_ns(), 1)
            unit.messages.pop("single", None)  # as in ingest: not kept in the cache

    def detach(self, viewer: UnitViewer) -> None:
        """The feed (and its cache) goes with the last viewer: the gateway
        unsubscribes then, and a stale GOP helps nobody."""
        feed = self.feeds.get(viewer.camera_id)
        if feed is None:
            return
        feed.viewers.discard(viewer)
        if not feed.viewers:
            del self.feeds[viewer.camera_id]

    def record_sent(self, unit: HubUnit, sent_ns: int, viewers: int = 1) -> None:
        feed = self.feeds.get(unit.camera_id)
        if feed is None:
            return
        feed.delivery.sent += viewers
        feed.delivery.bytes_sent += len(unit.data) * viewers
        if unit.capture_ns > 0 and plausible_capture(unit.capture_ns, unit.received_ns):
            feed.delivery.end_to_end.record(max(0, sent_ns - unit.capture_ns) / 1e9, viewers)

    def viewers(self, camera_id: str) -> int:
        feed = self.feeds.get(camera_id)
        return len(feed.viewers) if feed else 0

    def info(self, camera_id: str) -> dict[str, object] | None:
        """``/api/cameras``' ``passthrough`` entry of a watched camera."""
        feed = self.feeds.get(camera_id)
        if feed is None:
            return None
        return {
            "codec": feed.codec.value if feed.codec else None,
            "viewers": len(feed.viewers),
            "cache_bytes": feed.cache.size,
            "cache_units": len(feed.cache.units()),
            "received": feed.delivery.received,
            "sent": feed.delivery.sent,
            "skipped": sum(v.queue.skipped for v in feed.viewers),
            "rejected": dict(feed.rejected),
        }

    @property
    def cache_bytes_total(self) -> int:
        return sum(feed.cache.size for feed in self.feeds.values())
