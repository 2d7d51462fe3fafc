"""Demux-only reading of an H.264/H.265 camera or file through PyAV: Annex-B
access units of the main video stream, never decoded (issue 20).

RTSP, raw streams and MPEG-TS already give Annex-B packets; MP4/Matroska give
length-prefixed samples with the parameter sets in avcC/hvcC extradata. Those
are converted with ``annexb.parse_extradata``/``to_annexb`` rather than
FFmpeg's ``h264_mp4toannexb``/``hevc_mp4toannexb``: the Python code is the one
tested against hostile bytes (``tests/test_video_annexb.py``), a filter
context would be one more FFmpeg state to flush on reconnects, and the filter
would insert parameter sets that ``passthrough`` replaces anyway.

Parameter sets from out of band (extradata, or a packet's ``new_extradata``
side data) are put in-band before every keyframe, so the unit stream
describes itself and ``passthrough.Passthrough`` needs nothing else.
Everything outside is bounded (packet and extradata sizes) and every failure
is a ``DemuxError``; its message never holds the URL's password.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import av
import av.container
from av.video.stream import VideoStream

from streamd.errors import StreamdError
from streamd.redact import redact_url

from .annexb import AUD_TYPE, AnnexBError, Codec, join_nals, nal_type, parse_extradata, to_annexb

if TYPE_CHECKING:  # generic in the stubs only
    from av.packet import Packet

    VideoPacket = Packet[VideoStream]

OPEN_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 5.0
# As the JPEG path (worker/av_source.py): TCP interleaving, and a short probe
# (the SDP names codec and size; every packet read while probing would come
# out later as a burst of stale units).
RTSP_OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "100000", "probesize": "32768"}
# A 4K intra picture at a camera's highest quality is ~2 MB; more is not a picture.
MAX_UNIT_BYTES = 4 * 1024 * 1024
# avcC/hvcC with a few parameter sets is well under 1 KiB.
MAX_EXTRADATA_BYTES = 64 * 1024

_CODECS = {"h264": Codec.H264, "hevc": Codec.H265}


class DemuxError(StreamdError):
    """The source could not be opened or read; the message is safe to log."""


class UnsupportedSource(DemuxError, ValueError):
    """No video stream, or one that is neither H.264 nor H.265 (not retried)."""


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One picture as demuxed, in decode order.

    ``discontinuity``: packets were dropped before this one (corrupt, too big,
    malformed), so a decoder lacks references until the next keyframe.
    """

    codec: Codec
    keyframe: bool
    pts: int | None
    dts: int | None
    time_base: Fraction | None
    data: bytes  # Annex-B, starting with a start code
    discontinuity: bool = False


@dataclass
class DemuxStats:
    units: int = 0
    corrupt: int = 0  # flagged corrupt by the demuxer
    oversized: int = 0  # over MAX_UNIT_BYTES
    malformed: int = 0  # length-prefixed sample that does not parse


class Demuxer:
    """``for unit in Demuxer(url): ...``; ``close()`` (or ``with``) releases it.

    Opening happens in the constructor, so ``codec``/``width``/``height`` are
    known before the first unit. Iteration ends at the end of a file; a live
    source that fails (timeout, reset) raises ``DemuxError``.
    """

    def __init__(self, target: str, *, options: dict[str, str] | None = None) -> None:
        self.target = target
        self.stats = DemuxStats()
        rtsp = target.startswith(("rtsp://", "rtsps://"))
        merged = {**(RTSP_OPTIONS if rtsp else {}), **(options or {})}
        try:
            self._container: av.container.InputContainer = av.open(
                target, options=merged, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S)
            )
        except (av.FFmpegError, OSError) as exc:
            # FFmpeg's message may embed the URL with its credentials: never pass it on.
            raise DemuxError(f"cannot open {self._describe()}: {_reason(exc)}") from None
        try:
            self._stream = self._video_stream()
            context = self._stream.codec_context
            # As the container says; 0 when a short RTSP probe ended before an SPS.
            self.width, self.height = context.width, context.height
            self._units = PacketUnits(self._stream, self._describe(), self.stats)
            self.codec = self._units.codec
        except BaseException:
            self._container.close()
            raise

    def _describe(self) -> str:
        return redact_url(self.target)

    def _video_stream(self) -> VideoStream:
        if not self._container.streams.video:
            raise UnsupportedSource(f"no video stream in {self._describe()}")
        stream = self._container.streams.video[0]
        if stream.codec_context.name not in _CODECS:
            raise UnsupportedSource(
                f"{self._describe()}: {stream.codec_context.name} is not H.264/H.265"
            )
        return stream

    def __enter__(self) -> Demuxer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def __iter__(self) -> Iterator[AccessUnit]:
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                unit = self._units.unit(packet)
                if unit is not None:
                    yield unit
        except (av.FFmpegError, OSError) as exc:
            raise DemuxError(f"lost {self._describe()}: {_reason(exc)}") from None


class PacketUnits:
    """PyAV packets of one H.264/H.265 stream → ``AccessUnit``s (Annex-B, with
    out-of-band parameter sets put in-band before keyframes). Used by
    ``Demuxer`` and by a camera child's decoding source, whose packets it taps
    (one demux of the main stream feeds both the decoder and passthrough).
    ``mark_gap()``: packets were skipped, the next unit is a discontinuity."""

    def __init__(self, stream: VideoStream, describe: str, stats: DemuxStats | None = None) -> None:
        context = stream.codec_context
        if context.name not in _CODECS:
            raise UnsupportedSource(f"{describe}: {context.name} is not H.264/H.265")
        self.codec = _CODECS[context.name]
        self.stats = stats or DemuxStats()
        self._describe_text = describe
        # Read once: ``packet.time_base`` builds a new Fraction per packet.
        self._time_base = stream.time_base
        self._length_size: int | None = None
        self._extradata_sets: list[bytes] = []
        self._use_extradata(context.extradata)
        self._discontinuity = False

    def _describe(self) -> str:
        return self._describe_text

    def mark_gap(self) -> None:
        self._discontinuity = True

    def _use_extradata(self, extradata: bytes | None) -> None:
        if not extradata:
            return  # parameter sets in-band only (RTSP without sprop-parameter-sets)
        if len(extradata) > MAX_EXTRADATA_BYTES:
            raise DemuxError(f"{self._describe()}: extradata of {len(extradata)} bytes")
        try:
            parsed = parse_extradata(bytes(extradata), self.codec)
        except AnnexBError as exc:
            raise DemuxError(f"{self._describe()}: bad extradata: {exc}") from None
        self._length_size = parsed.length_size
        self._extradata_sets = parsed.parameter_sets

    def unit(self, packet: VideoPacket) -> AccessUnit | None:
        if packet.size > MAX_UNIT_BYTES:
            return self._drop("oversized")
        if packet.is_corrupt:
            return self._drop("corrupt")
        if packet.has_sidedata("new_extradata"):  # sets changed mid-stream (MP4/MKV)
            try:
                self._use_extradata(bytes(packet.get_sidedata("new_extradata")))
            except DemuxError:
                return self._drop("malformed")
        keyframe = packet.is_keyframe
        try:
            data = to_annexb(bytes(packet), self._length_size)
        except AnnexBError:
            return self._drop("malformed")
        if keyframe and self._extradata_sets:
            # Before the unit's own (newer) sets: whatever keyframe the pipeline
            # starts at, or drops, the sets come with the next one.
            try:
                data = _with_leading(data, self._extradata_sets, self.codec)
            except AnnexBError:
                return self._drop("malformed")
        unit = AccessUnit(
            self.codec, keyframe, packet.pts, packet.dts, self._time_base, data,
            self._discontinuity,
        )  # fmt: skip
        self._discontinuity = False
        self.stats.units += 1
        return unit

    def _drop(self, why: str) -> AccessUnit | None:
        setattr(self.stats, why, getattr(self.stats, why) + 1)
        self._discontinuity = True
        return None  # typed as the caller's result, so drops read ``return self._drop(...)``


def _with_leading(data: bytes, sets: list[bytes], codec: Codec) -> bytes:
    """``sets`` before ``data``'s NAL units, after its access unit delimiter if
    it starts with one (it must stay first). Looks only at the first NAL unit:
    splitting the whole picture would scan every byte."""
    first = data.find(b"\x00\x00\x01", 0, 8)
    at = 0
    if first >= 0 and nal_type(data[first + 3 : first + 5], codec) == AUD_TYPE[codec]:
        nxt = data.find(b"\x00\x00\x01", first + 3)
        at = len(data) if nxt < 0 else nxt
    return b"".join((data[:at], join_nals(sets), data[at:]))


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or type(exc).__name__)
