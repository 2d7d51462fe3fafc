"""A tiny RTSP server for tests: GStreamer's gst-rtsp-server serving a test pattern
as RTP/JPEG at rtsp://127.0.0.1:PORT/live. Runs under Debian's /usr/bin/python3
(python3-gi + gir1.2-gst-rtsp-server-1.0), not inside the project's venv.

Usage: /usr/bin/python3 rtsp_server.py PORT
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball "
    "! video/x-raw,format=I420,width=320,height=240,framerate=15/1 "
    "! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )"
)


def main() -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/live", factory)
    server.attach(None)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
