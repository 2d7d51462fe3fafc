"""Network cameras and files through PyAV (FFmpeg): RTSP (H.264, H.265, JPEG),
HTTP(S) MJPEG, and video files.

Chosen over OpenCV's VideoCapture on evidence (``benchmarks/decoders.py``):
full decoding costs the same, but PyAV lets us

- decode every frame (later frames refer to it) yet convert to BGR only the
  frames we use: the pacer's thinned frames cost a decode, never a conversion;
- decode keyframes only while nobody needs more (``keyframes_only_when``), and
  those only when a frame is used: the packets since the last keyframe are
  kept and decoded in one go when full decoding resumes, so the picture is
  right at once;
- keep MJPEG frames as the camera's own JPEG bytes, decoded only when used;
- decode on one thread up to 1080p, slice threads above; never frame threads
  (which hold frames back: latency);
- hand every packet, before any decoding, to a ``PacketTap`` (H.264/H.265
  passthrough, ``worker/units.py``): one demux of the camera feeds both the
  decoder and the access units published as they came.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import TYPE_CHECKING, Protocol

import av
import av.container
import cv2
import numpy as np
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from streamd.redact import redact_url
from streamd.worker.decoding import MAX_KEYFRAME_BACKLOG, is_self_contained_jpeg, jpeg_size
from streamd.worker.frames import DecodeStats, Frame, Image, KeyframePolicy, SourceError
from streamd.worker.planes import Planes, from_packed_i420

if TYPE_CHECKING:  # generic in the stubs only
    VideoPacket = Packet[VideoStream]


class PacketTap(Protocol):
    """Sees every packet of the source's video stream, in decode order (in the
    capture thread), whether or not it is decoded."""

    def opened(self, stream: VideoStream, describe: str) -> None: ...

    def packet(self, packet: VideoPacket) -> None: ...


OPEN_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 5.0
# TCP interleaving survives NAT and packet loss far better than UDP for video.
# A short probe: the SDP already names the codec and size, and every frame read
# while probing comes out later in a burst of stale pictures (1.5 s of them with
# FFmpeg's default 5 s analysis, against 0.1 s here).
RTSP_OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "100000", "probesize": "32768"}
# The supervisor passes the RTSP transport the way OpenCV reads it ("key;value|...");
# an operator's choice there (say UDP) applies here too.
TRANSPORT_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def rtsp_options(environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, str]:
    options = dict(RTSP_OPTIONS)
    for pair in environ.get(TRANSPORT_ENV, "").split("|"):
        key, _, value = pair.partition(";")
        if key.strip() == "rtsp_transport" and value.strip() in ("tcp", "udp", "http"):
            options["rtsp_transport"] = value.strip()
    return options


MAX_SINGLE_THREAD_PIXELS = 1920 * 1088
INTRA_ONLY_CODECS = frozenset({"mjpeg", "jpeg2000"})


class AvSource:
    def __init__(self, target: str, *, live: bool, loop: bool = False) -> None:
        self.target = target
        self.live = live
        self.loop = loop
        self.stats = DecodeStats()
        # RTP timestamps are the camera's clock; HTTP MJPEG has none (FFmpeg invents
        # a 25 fps one), so only RTSP frames carry a media time for pacing.
        self._timed = target.startswith(("rtsp://", "rtsps://"))
        self._container: av.container.InputContainer | None = None
        self._stream: VideoStream | None = None
        self._packets: Iterator[VideoPacket] | None = None
        self._keyframes_only: KeyframePolicy = lambda _interval: False
        self._backlog: list[VideoPacket] = []  # non-key packets since the last keyframe
        self._need_keyframe = True  # decoder has no valid reference picture
        self._last_key_pts: float | None = None
        self.keyframe_interval: float | None = None  # seconds, from stream timestamps
        # One converter for the source's life: ``picture.to_ndarray(format=...)`` builds
        # (and tears down) a new swscale context with its own thread pool for every
        # frame, which cost ~1 ms per 720p frame in the profile, more than the
        # conversion itself.
        self._reformatter = VideoReformatter()
        self.tap: PacketTap | None = None

    def _describe(self) -> str:
        return redact_url(self.target)

    def open(self) -> None:
        self.close()
        if not self.live and not os.path.exists(self.target):
            raise SourceError(f"file not found: {self._describe()}")
        options = rtsp_options() if self.target.startswith(("rtsp://", "rtsps://")) else {}
        try:
            container = av.open(
                self.target, options=options, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S)
            )
        except (av.FFmpegError, OSError) as exc:
            # The message may embed the URL with its credentials: never pass it on.
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise SourceError(f"cannot open {self._describe()}: {reason}") from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"no video stream in {self._describe()}")
        stream = container.streams.video[0]
        context = stream.codec_context
        # One thread up to 1080p: cheapest in CPU (benchmarks/decoders.py: slice
        # threads cost 5-20 % more, frame threads also hold 2 frames back), and a
        # box with many cameras gets its parallelism from them. Bigger pictures
        # get slice threads to keep up with the frame rate.
        if context.width * context.height > MAX_SINGLE_THREAD_PIXELS:
            context.thread_type = "SLICE"
        else:
            context.thread_type = "NONE"
            context.thread_count = 1
        self._container, self._stream = container, stream
        self._packets = container.demux(stream)
        self._backlog.clear()
        self._need_keyframe = context.name not in INTRA_ONLY_CODECS
        self._last_key_pts = None
        if self.tap is not None:
            self.tap.opened(stream, self._describe())

    def stream_info(self) -> tuple[str | None, float | None]:
        """The open stream's codec name and declared frame rate (None if unknown)."""
        stream = self._stream
        if stream is None:
            return None, None
        rate = stream.average_rate or stream.guessed_rate
        return stream.codec_context.name, float(rate) if rate else None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._stream = self._packets = None

    # --- keyframes ------------------------------------------------------------------
    def keyframes_only_when(self, policy: KeyframePolicy) -> None:
        self._keyframes_only = policy

    @property
    def held_packets(self) -> int:
        """Packets kept since the last keyframe, decoded at once when a picture is
        next used (so a viewer arriving mid-GOP needs no wait for a keyframe)."""
        return len(self._backlog)

    def _note_keyframe(self, packet: VideoPacket) -> None:
        pts = _seconds(packet.pts, packet.time_base)
        if pts is None:
            return
        if self._last_key_pts is not None and pts > self._last_key_pts:
            self.keyframe_interval = pts - self._last_key_pts
        self._last_key_pts = pts

    def _media_time(self, pts: int | None, time_base: Fraction | None) -> float | None:
        return _seconds(pts, time_base) if self._timed else None

    # --- reading --------------------------------------------------------------------
    def read(self) -> Frame | None:
        while True:
            packet = self._next_packet()
            if packet is None:
                if self.loop and not self.live and self._container is not None:
                    try:
                        self.open()  # end of file: start over (an endless test camera)
                    except SourceError:
                        return None  # gone meanwhile: lost, the capture loop retries
                    packet = self._next_packet()
                if packet is None:
                    return None
            if self.tap is not None:
                self.tap.packet(packet)
            frame = self._handle(packet)
            if frame is not None:
                return frame

    def _next_packet(self) -> VideoPacket | None:
        if self._packets is None:
            return None
        try:
            for packet in self._packets:
                if packet.size > 0:  # size 0: the demuxer's end-of-stream marker
                    return packet
        except (av.FFmpegError, OSError):
            pass  # timeout, connection reset, end of a live stream: the source is lost
        return None

    def _handle(self, packet: VideoPacket) -> Frame | None:
        assert self._stream is not None
        context = self._stream.codec_context
        if context.name in INTRA_ONLY_CODECS:
            return self._jpeg_frame(packet)
        keyframes_only = self._keyframes_only(self.keyframe_interval)
        if packet.is_keyframe:
            self._note_keyframe(packet)
            self._backlog = [packet]
            self._need_keyframe = False
            if keyframes_only:
                # Even the keyframe is decoded only if someone uses this frame.
                return self._frame(
                    context.width,
                    context.height,
                    _Once(self._decode_keyframe),
                    self._media_time(packet.pts, packet.time_base),
                )
        elif self._need_keyframe:
            return None  # references lost: nothing decodes right until a keyframe
        else:
            self._backlog.append(packet)
            if keyframes_only:
                if len(self._backlog) > MAX_KEYFRAME_BACKLOG:
                    self._backlog.clear()
                    self._need_keyframe = True
                return None
        # Full decoding (after keyframes only: first what was skipped, unconverted).
        picture = self._decode_backlog()
        if picture is None:
            return None
        return self._frame(
            picture.width,
            picture.height,
            lambda: picture,
            self._media_time(picture.pts, picture.time_base),
        )

    def _frame(
        self,
        width: int,
        height: int,
        picture: Callable[[], VideoFrame],
        media_time: float | None,
    ) -> Frame:
        return Frame(
            width,
            height,
            lambda: self._to_bgr(picture()),
            self.stats,
            media_time=media_time,
            planar=lambda: _planes(picture()),
        )

    def _decode_backlog(self) -> VideoFrame | None:
        """Give the decoder every packet it has not had yet; the newest picture."""
        assert self._stream is not None
        backlog, self._backlog = self._backlog, []
        latest: VideoFrame | None = None
        for packet in backlog:
            try:
                pictures = self._stream.codec_context.decode(packet)
            except av.FFmpegError:
                continue  # one corrupt packet: skip it, the stream goes on
            self.stats.decoded += len(pictures)
            if pictures:
                latest = pictures[-1]  # a low-delay decoder gives one per packet
        return latest

    def _decode_keyframe(self) -> VideoFrame:
        picture = self._decode_backlog()
        if picture is None:
            raise SourceError(f"a keyframe from {self._describe()} would not decode")
        return picture

    def _to_bgr(self, picture: VideoFrame) -> Image:
        # One thread, like the decoder: a box with many cameras gets its parallelism
        # from them, and a pool per conversion costs more than it saves at these sizes.
        bgr = self._reformatter.reformat(picture, format="bgr24", threads=1)
        return bgr.to_ndarray()

    def _jpeg_frame(self, packet: VideoPacket) -> Frame | None:
        jpeg = bytes(packet)
        size = jpeg_size(jpeg)
        if size is None:
            return None  # not a JPEG we can read: skip it

        def convert() -> Image:
            self.stats.decoded += 1
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise SourceError(f"undecodable JPEG from {self._describe()}")
            return image

        # A JPEG without its own Huffman tables (AVI-style MJPEG) only decodes with
        # FFmpeg's defaults; browsers need them, so such frames are re-encoded.
        own = jpeg if is_self_contained_jpeg(jpeg) else None
        media_time = self._media_time(packet.pts, packet.time_base)
        return Frame(size[0], size[1], convert, self.stats, jpeg=own, media_time=media_time)


class _Once:
    """A keyframe decoded on first use, then kept (BGR and planes share it)."""

    def __init__(self, decode: Callable[[], VideoFrame]) -> None:
        self._decode = decode
        self._picture: VideoFrame | None = None

    def __call__(self) -> VideoFrame:
        if self._picture is None:
            self._picture = self._decode()
        return self._picture


# Decoders that give 4:2:0 planes the JPEG can take as they are; ``yuvj420p`` is
# FFmpeg's name for the full-range variant (MJPEG-style, some IP cameras).
_I420_FORMATS = frozenset({"yuv420p", "yuvj420p"})


def _planes(picture: VideoFrame) -> Planes | None:
    """The picture's own planes when they suit a JPEG (4:2:0, even size), else None."""
    if picture.format.name not in _I420_FORMATS or picture.width % 2 or picture.height % 2:
        return None
    full = picture.format.name == "yuvj420p" or picture.color_range == _FULL_RANGE
    return from_packed_i420(picture.to_ndarray(), picture.width, picture.height, limited=not full)


_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def _seconds(pts: int | None, time_base: Fraction | None) -> float | None:
    """A stream timestamp in seconds (the camera's clock), if the stream has one."""
    return None if pts is None or time_base is None else float(pts * time_base)
