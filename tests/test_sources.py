"""Real stream sources through the whole daemon: RTSP (GStreamer's RTSP server),
HTTP MJPEG (served by ffmpeg), a video file, and source loss and recovery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from .cameras import RtspServer
from .conftest import Daemon, RedisServer, free_port, wait_for
from .viewers import Watcher, decodes, frames


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    server = RtspServer()
    server.start()
    yield server
    server.stop()


async def test_rtsp_source_streams_and_recovers_after_camera_restart(
    redis_server: RedisServer, rtsp_server: RtspServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[{"id": "rtsp-cam", "source": rtsp_server.url, "fps": 10}],
    )
    got = await frames(f"ws://{daemon.base}/ws/rtsp-cam", 5, timeout=20)
    assert all(decodes(f) for f in got)
    image = cv2.imdecode(np.frombuffer(got[-1], np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (240, 320, 3)

    # The camera reboots: the child notices, reports it, reopens and streams again.
    rtsp_server.stop()
    wait_for(
        lambda: any(e.get("state") == "reconnecting" for e in daemon.log_events()),
        20,
        "camera state reconnecting",
    )
    rtsp_server.start()
    async with Watcher(f"ws://{daemon.base}/ws/rtsp-cam") as viewer:
        await viewer.wait_frames(10, timeout=30)
    assert "s3cret-pw" not in daemon.log_text()  # credentials never logged


@contextlib.contextmanager
def mjpeg_server(
    size: str = "320x240", rate: int = 15
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """ffmpeg serving a test pattern as multipart MJPEG over HTTP (one client)."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is not installed (scripts/test installs it)"
    url = f"http://127.0.0.1:{free_port()}/stream.mjpg"
    server = subprocess.Popen(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size={size}:rate={rate}",
            "-f",
            "mpjpeg",
            "-q:v",
            "5",
            "-listen",
            "1",
            url,
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        yield url, server
    finally:
        server.kill()
        server.wait()


def test_mjpeg_over_http_served_by_ffmpeg(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    with mjpeg_server() as (url, _):
        daemon = start_daemon(
            redis_url=redis_server.url, cameras=[{"id": "mjpeg", "source": url, "fps": 10}]
        )
        got = asyncio.run(frames(f"ws://{daemon.base}/ws/mjpeg", 5, timeout=20))
        assert all(decodes(f) for f in got)


def make_video(path: Path, count: int = 20) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (160, 120))
    assert writer.isOpened()
    for i in range(count):
        image = np.zeros((120, 160, 3), np.uint8)
        image[:, (i * 8) % 160 :] = (0, 255, 0)
        writer.write(image)
    writer.release()


async def test_file_source_loops(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    video = tmp_path / "clip.avi"
    make_video(video, count=10)
    daemon = start_daemon(
        redis_url=redis_server.url, cameras=[{"id": "file", "source": str(video), "fps": 20}]
    )
    # 30 frames from a 10-frame file: it started over at the end.
    got = await frames(f"ws://{daemon.base}/ws/file", 30, timeout=20)
    assert all(decodes(f) for f in got)


async def test_missing_file_is_reported_and_retried(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    video = tmp_path / "later.avi"
    daemon = start_daemon(
        redis_url=redis_server.url, cameras=[{"id": "late", "source": str(video), "fps": 10}]
    )
    wait_for(
        lambda: any(e["event"] == "source open failed" for e in daemon.log_events()),
        15,
        "source open failed",
    )
    assert daemon.process.poll() is None
    make_video(video)
    got = await frames(f"ws://{daemon.base}/ws/late", 3, timeout=40)
    assert all(decodes(f) for f in got)


def test_source_that_stops_delivering_is_reported_stalled(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    with mjpeg_server("160x120", 10) as (url, server):
        daemon = start_daemon(
            redis_url=redis_server.url, cameras=[{"id": "frozen", "source": url, "fps": 10}]
        )

        def state() -> str:
            return str(json.loads(daemon.http("/api/cameras")[1])["cameras"]["frozen"]["state"])

        wait_for(lambda: state() == "live", 20, "live")
        server.send_signal(signal.SIGSTOP)  # connected, but no more frames
        wait_for(lambda: state() == "stalled", 10, "stalled")
        assert any(e.get("state") == "stalled" for e in daemon.log_events())
