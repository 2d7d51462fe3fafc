"""A small RTSP server for tests and benchmarks (GStreamer's gst-rtsp-server).

- ``/live``: a test pattern as RTP/JPEG 320x240 at 15 fps (encoded while serving).
- ``/NAME`` for each ``NAME.h264``, ``NAME.h265`` or ``NAME.mjpeg`` in CLIPDIR: that
  clip, looped forever at FPS. Clips are encoded once beforehand (ffmpeg); here
  they are split into access units once at start and then only parsed and
  payloaded (parse ! pay), so serving costs no encoding, like a real camera.

Runs under Debian's /usr/bin/python3 (python3-gi + gir1.2-gst-rtsp-server-1.0),
not inside the project's venv.

Usage: /usr/bin/python3 rtsp_server.py PORT [CLIPDIR [FPS]]
"""

import sys
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

LIVE_PIPELINE = (
    "( videotestsrc is-live=true pattern=ball "
    "! video/x-raw,format=I420,width=320,height=240,framerate=15/1 "
    "! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )"
)

# clip suffix -> (parser, caps of one access unit, payloader)
KINDS = {
    ".h264": (
        "h264parse",
        "video/x-h264,stream-format=byte-stream,alignment=au",
        "h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=-1",
    ),
    ".h265": (
        "h265parse",
        "video/x-h265,stream-format=byte-stream,alignment=au",
        "h265parse config-interval=-1 ! rtph265pay name=pay0 pt=96 config-interval=-1",
    ),
    ".mjpeg": ("jpegparse", "image/jpeg", "jpegparse ! rtpjpegpay name=pay0 pt=26"),
}


def load_units(path: Path, parser: str, caps: str) -> tuple[list[tuple[bytes, bool]], str]:
    """The clip's access units (bytes, is_keyframe) and their caps, read once."""
    pipeline = Gst.parse_launch(
        f"filesrc location={path} ! {parser} ! {caps} ! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units = []
    unit_caps = caps
    while True:
        sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
        if sample is None:
            break
        buffer = sample.get_buffer()
        ok, info = buffer.map(Gst.MapFlags.READ)
        assert ok
        units.append((bytes(info.data), not buffer.has_flags(Gst.BufferFlags.DELTA_UNIT)))
        buffer.unmap(info)
        unit_caps = sample.get_caps().to_string()
    pipeline.set_state(Gst.State.NULL)
    if not units:
        raise SystemExit(f"no frames in {path}")
    return units, unit_caps


class ClipFeeder:
    """Pushes a clip's access units into one media's appsrc at a steady rate,
    until the media is torn down."""

    GOING_ON = (Gst.FlowReturn.OK, Gst.FlowReturn.FLUSHING)

    def __init__(self, appsrc: Gst.Element, units: list[tuple[bytes, bool]], fps: float) -> None:
        self.appsrc = appsrc
        self.units = units
        self.interval = 1.0 / fps
        self.index = 0
        self.next_due = time.monotonic()
        self.stopped = False
        self.started = False
        # Feed from the first time the appsrc asks for data: the media is then
        # running. Buffers pushed before (at media-configure) carried no clock
        # time (do-timestamp) and now and then left a client with no picture.
        appsrc.connect("need-data", self.start)

    def start(self, *_: object) -> None:
        if not self.started:
            self.started = True
            self.next_due = time.monotonic()
            GLib.timeout_add(1, self.tick)

    def stop(self, *_: object) -> None:
        self.stopped = True

    def tick(self) -> bool:
        if self.stopped:
            return False  # the media was torn down
        now = time.monotonic()
        if now >= self.next_due:
            data, key = self.units[self.index]
            self.index = (self.index + 1) % len(self.units)
            buffer = Gst.Buffer.new_wrapped(data)
            if not key:
                buffer.set_flags(Gst.BufferFlags.DELTA_UNIT)
            buffer.duration = int(self.interval * Gst.SECOND)
            # The end of a media is its "unprepared" signal; FLUSHING alone may be
            # a flush in passing (the unit is lost, as a camera's would be).
            if self.appsrc.emit("push-buffer", buffer) not in self.GOING_ON:
                return False  # the media failed: stop feeding it
            self.next_due += self.interval
            if self.next_due < now - 1.0:
                # A camera's clock runs on while this server is starved of CPU: late
                # frames go out back to back, as from a camera behind a congested
                # link; only after a long stall does it start afresh.
                self.next_due = now
        delay = max(1, int((self.next_due - time.monotonic()) * 1000))
        GLib.timeout_add(delay, self.tick)
        return False


def clip_factory(path: Path, fps: float) -> GstRtspServer.RTSPMediaFactory:
    parser, caps, pay = KINDS[path.suffix]
    units, unit_caps = load_units(path, parser, caps)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( appsrc name=src is-live=true do-timestamp=true format=time caps="{unit_caps}" ! {pay} )'
    )
    factory.set_shared(True)

    def configure(_factory: object, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        feeder = ClipFeeder(appsrc, units, fps)
        media.connect("unprepared", feeder.stop)

    factory.connect("media-configure", configure)
    return factory


def main() -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    mounts = server.get_mount_points()
    live = GstRtspServer.RTSPMediaFactory()
    live.set_launch(LIVE_PIPELINE)
    live.set_shared(True)
    mounts.add_factory("/live", live)
    if len(sys.argv) > 2:
        fps = float(sys.argv[3]) if len(sys.argv) > 3 else 15.0
        for path in sorted(Path(sys.argv[2]).iterdir()):
            if path.suffix in KINDS:
                mounts.add_factory(f"/{path.stem}", clip_factory(path, fps))
    server.attach(None)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
