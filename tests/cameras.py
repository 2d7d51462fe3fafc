"""Test cameras: H.264/H.265/MJPEG clips encoded once with ffmpeg, served over
RTSP by GStreamer's RTSP server (tests/tools/rtsp_server.py) with no encoding
while serving, like a real IP camera. Used by the source tests and benchmarks."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .support import free_port

TOOLS = Path(__file__).resolve().parent / "tools"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, where python3-gi lives
CLIP_FPS = 15
GOP = 30  # frames between keyframes: 2 s at 15 fps, common for IP cameras


@dataclass(frozen=True)
class Clip:
    codec: str  # h264 | h265 | mjpeg
    width: int
    height: int

    @property
    def name(self) -> str:
        return f"{self.codec}-{self.width}x{self.height}"

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.codec}"


# Bit rates of typical IP cameras at these sizes.
_BITRATE = {720: "3M", 1080: "4M"}


def _encoder_args(clip: Clip) -> list[str]:
    rate = _BITRATE.get(clip.height, "2M")
    # Rate control as a camera's: capped, with a one-second buffer (VBV). Plain
    # average bit rate put 17x the mean frame into the first keyframe of a 1080p
    # clip (844 KB) and starved the next one below a P-frame (18 KB); with the
    # cap, 1080p keyframes are 200-230 KB against a 35 KB mean, as on a camera.
    vbv = ["-b:v", rate, "-maxrate", rate, "-bufsize", rate]
    if clip.codec == "h264":
        return [
            "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-bf", "0",
            "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0",
            *vbv, "-f", "h264",
        ]  # fmt: skip
    if clip.codec == "h265":
        params = f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:log-level=error"
        return [
            "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", params,
            *vbv, "-f", "hevc",
        ]  # fmt: skip
    if clip.codec == "mjpeg":
        return ["-c:v", "mjpeg", "-q:v", "5", "-f", "mjpeg"]
    raise ValueError(f"unknown codec {clip.codec!r}")


def make_clip(folder: Path, clip: Clip, seconds: float = 4.0) -> Path:
    """Encode a moving test pattern with sensor-like noise (so the bit rate, and
    the decoding cost, are those of a real scene)."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is not installed (scripts/test installs it)"
    path = folder / clip.filename
    source = f"testsrc2=size={clip.width}x{clip.height}:rate={CLIP_FPS},noise=alls=10:allf=t"
    subprocess.run(
        [
            *(ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source),
            *("-frames:v", str(round(seconds * CLIP_FPS))),
            *("-pix_fmt", "yuvj420p" if clip.codec == "mjpeg" else "yuv420p"),
            *_encoder_args(clip),
            str(path),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


STANDARD_CLIPS = (
    Clip("h264", 1280, 720),
    Clip("h264", 1920, 1080),
    Clip("h265", 1280, 720),
    Clip("h265", 1920, 1080),
)


def make_clips(folder: Path, clips: tuple[Clip, ...] = STANDARD_CLIPS) -> list[Path]:
    return [make_clip(folder, clip) for clip in clips]


class RtspServer:
    """``/live``: RTP/JPEG 320x240 test pattern; ``/NAME``: each clip in ``clips``."""

    def __init__(self, port: int | None = None, clips: Path | None = None) -> None:
        self.port = port or free_port()
        self.clips = clips
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://viewer:s3cret-pw@127.0.0.1:{self.port}/live"

    def clip_url(self, clip: Clip) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{clip.name}"

    def start(self) -> None:
        command = [SYSTEM_PYTHON, str(TOOLS / "rtsp_server.py"), str(self.port)]
        if self.clips is not None:
            command += [str(self.clips), str(CLIP_FPS)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class MjpegHttpServer:
    """An HTTP MJPEG camera (multipart/x-mixed-replace) serving the given JPEGs in
    turn at ``fps``, to any number of clients, from a background thread."""

    BOUNDARY = "streamdframe"

    def __init__(self, jpegs: list[bytes], fps: float = 10.0) -> None:
        self.jpegs = jpegs
        self.fps = fps
        self.port = free_port()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def __enter__(self) -> MjpegHttpServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header(
                    "Content-Type", f"multipart/x-mixed-replace; boundary={owner.BOUNDARY}"
                )
                self.end_headers()
                started = time.monotonic()
                with contextlib.suppress(OSError):
                    for index in itertools.count():
                        jpeg = owner.jpegs[index % len(owner.jpegs)]
                        self.wfile.write(
                            f"--{owner.BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                            + jpeg
                            + b"\r\n"
                        )
                        self.wfile.flush()
                        time.sleep(max(0.0, started + (index + 1) / owner.fps - time.monotonic()))

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
