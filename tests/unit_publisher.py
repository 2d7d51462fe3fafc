"""Passthrough access units published into Redis as a camera's child will:
``demux.Demuxer`` reads a (test RTSP) camera, ``passthrough.Passthrough`` makes
each message, and it goes to ``au:{camera_id}``. Runs in a thread, for the
gateway's tests, whose cameras have ``passthrough = false`` (their children
publish no units, so these are the only ones)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction

import av
import redis

from streamd.states import unit_channel
from streamd.video.annexb import Codec, split_nals
from streamd.video.demux import Demuxer
from streamd.video.passthrough import Passthrough
from streamd.video.sei import find_metadata

FFMPEG_NAME = {Codec.H264: "h264", Codec.H265: "hevc"}


@dataclass
class UnitPublisher:
    """``with UnitPublisher(redis_url, "door", rtsp_url) as publisher:`` publishes
    every unit of the camera until the block ends; ``recent`` keeps the newest
    messages (bounded) for tests to compare with what viewers got."""

    redis_url: str
    camera_id: str
    source: str
    keep: int = 300
    loops: int = 1  # a file source read this many times, unpaced (a burst), seq running on
    published: int = 0
    keyframes: int = 0
    last_seq: int = -1
    last_keyframe: bool = False
    codec: Codec | None = None
    recent: deque[bytes] = field(default_factory=deque)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> UnitPublisher:
        self.recent = deque(maxlen=self.keep)
        self._thread = threading.Thread(target=self._run, name="unit-publisher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        channel = unit_channel(self.camera_id)
        try:
            pipeline: Passthrough | None = None
            for _ in range(self.loops):
                with Demuxer(self.source) as source:
                    self.codec = source.codec
                    if pipeline is None:
                        pipeline = Passthrough(self.camera_id, source.codec)
                    for unit in source:
                        if self._stop.is_set():
                            return
                        message = pipeline.feed(unit, time.time_ns())
                        if message is None:
                            continue
                        client.publish(channel, message)
                        self.recent.append(message)
                        self.published += 1
                        self.last_keyframe = unit.keyframe
                        self.keyframes += unit.keyframe
                        self.last_seq = pipeline.stats.published - 1
        except BaseException as exc:
            self.error = exc
        finally:
            client.close()

    def wait_published(self, count: int, timeout: float = 20.0) -> None:
        target = self.published + count
        deadline = time.monotonic() + timeout
        while self.published < target:
            assert self.error is None, f"publisher failed: {self.error!r}"
            assert time.monotonic() < deadline, f"only {self.published} units published"
            time.sleep(0.02)


def unit_seq(message: bytes, codec: Codec) -> tuple[int, bool]:
    """(seq, keyframe) from a message's metadata SEI."""
    meta = find_metadata(split_nals(message), codec)
    assert meta is not None, "no streamd metadata"
    return meta.seq, meta.keyframe


def decode_each(codec: Codec, units: list[bytes]) -> list[tuple[int, int]]:
    """A fresh decoder (no extradata) fed one unit at a time, no flush: the
    (width, height) of every frame out. One per unit means each decoded at once."""
    context = av.CodecContext.create(FFMPEG_NAME[codec], "r")
    assert isinstance(context, av.VideoCodecContext)
    context.thread_type = "NONE"
    sizes: list[tuple[int, int]] = []
    for index, unit in enumerate(units):
        packet = av.Packet(unit)
        packet.pts = index
        packet.time_base = Fraction(1, 15)
        sizes += [(f.width, f.height) for f in context.decode(packet)]
    return sizes
