"""Passthrough in a camera child (issue 20): the main stream's H.264/H.265
access units, published as they came on ``au:{camera_id}``, never decoded.

``UnitTap`` is the capture source's ``PacketTap``: the one demux of the main
stream (``av_source.AvSource``) hands it every packet before the decoder sees
(or skips) it, so passthrough costs no second connection to the camera and no
decoding; ``video.demux.PacketUnits`` makes the packet an Annex-B
``AccessUnit`` and ``video.passthrough.Passthrough`` the message (parameter
sets on keyframes, SPS without reorder delay, our SEI).

Only while someone wants the units (``wanted``: ``PUBSUB NUMSUB au:{id}`` or
the supervisor's ``DEMAND``) is anything converted; packets skipped meanwhile
make the next unit a discontinuity, so publishing resumes at a keyframe.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from streamd.config import CameraConfig
from streamd.transport.unit_publisher import EncodedUnit
from streamd.video.demux import DemuxError, DemuxStats, PacketUnits
from streamd.video.passthrough import Passthrough

if TYPE_CHECKING:
    from av.packet import Packet
    from av.video.stream import VideoStream

log = structlog.get_logger("streamd.units")

UNIT_CHANNEL_PREFIX = "au:"


def unit_channel(camera_id: str) -> str:
    return f"{UNIT_CHANNEL_PREFIX}{camera_id}"


def passthrough_enabled(camera: CameraConfig) -> bool:
    """``passthrough`` as configured; unset: on for RTSP cameras (H.264/H.265 is
    what they send; an MJPEG one simply publishes no units)."""
    if camera.passthrough is not None:
        return camera.passthrough
    return camera.source.startswith(("rtsp://", "rtsps://"))


class UnitTap:
    """In the capture thread: packets in, ``EncodedUnit``s to ``deliver``."""

    def __init__(
        self,
        camera_id: str,
        wanted: Callable[[], bool],
        deliver: Callable[[EncodedUnit], None],
    ) -> None:
        self.camera_id = camera_id
        self.wanted = wanted
        self.deliver = deliver
        self.made = 0  # units handed to the publisher (read by heartbeats)
        self._units: PacketUnits | None = None
        self._demux_stats = DemuxStats()  # across reconnects
        self._passthrough: Passthrough | None = None
        self._skipping = True
        self._said_unsupported = False

    def opened(self, stream: VideoStream, describe: str) -> None:
        try:
            units = PacketUnits(stream, describe, self._demux_stats)
        except DemuxError as exc:  # not H.264/H.265 (MJPEG), or bad extradata
            self._units = None
            if not self._said_unsupported:
                self._said_unsupported = True
                log.info("no passthrough for this stream", reason=str(exc))
            return
        # One pipeline for the child's life (its seq goes on across reconnects);
        # a new one only if the camera changed codec.
        if self._passthrough is None or self._passthrough.codec is not units.codec:
            self._passthrough = Passthrough(self.camera_id, units.codec)
        self._units = units
        units.mark_gap()  # a reconnect: the decoder's references are gone

    def packet(self, packet: Packet[VideoStream]) -> None:
        units = self._units
        if units is None:
            return
        if not self.wanted():
            self._skipping = True
            return
        if self._skipping:
            self._skipping = False
            units.mark_gap()  # resume at the next keyframe
        unit = units.unit(packet)
        if unit is None:
            return
        assert self._passthrough is not None
        now_ns = time.time_ns()
        message = self._passthrough.feed(unit, now_ns)
        if message is None:
            return
        self.made += 1
        self.deliver(EncodedUnit(message, now_ns, time.monotonic(), unit.keyframe))

    def dropped(self) -> Counter[str]:
        """Units not made publishable, by reason (cumulative)."""
        out: Counter[str] = Counter()
        if self._passthrough is not None:
            out.update(self._passthrough.stats.dropped)
        for reason in ("corrupt", "oversized", "malformed"):
            if count := getattr(self._demux_stats, reason):
                out[f"demux_{reason}"] = count
        return out
