"""The daemon as a subprocess, real WebSocket viewers, real redis-server."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamd.transport.frame import parse_frame

from .conftest import Daemon, RedisServer, free_port, wait_for, write_config
from .viewers import Watcher, decodes, frames

SYNTH = {"source": "synthetic:?width=320&height=180", "fps": 15}


async def test_both_endpoint_paths_stream_decodable_frames(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "front", **SYNTH}])
    for path in ("/ws/front", "/api/v1/video-stream/ws/front"):
        got = await frames(f"ws://{daemon.base}{path}", 5)
        assert all(decodes(f) for f in got)
        seqs = [m.seq for m in (parse_frame(f, 1 << 24).meta for f in got) if m]
        assert len(seqs) == 5 and seqs == sorted(seqs)
    events = [e["event"] for e in daemon.log_events()]
    assert "video stream manager started" in events
    assert "redis subscription started" in events


async def test_ping_pong_and_cached_frame_on_connect(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url, cameras=[{"id": "cam", "source": "synthetic:", "fps": 1}]
    )
    await frames(f"ws://{daemon.base}/ws/cam", 1, timeout=10)  # a frame is now cached
    async with connect(f"ws://{daemon.base}/ws/cam", max_size=None) as ws:
        # At 1 fps the cached frame must arrive long before the next capture.
        first = await asyncio.wait_for(ws.recv(), 0.5)
        assert isinstance(first, bytes) and decodes(first)
        await ws.send("ping")
        async with asyncio.timeout(3):
            while (reply := await ws.recv()) != "pong":
                assert isinstance(reply, bytes)


async def test_invalid_camera_id_is_closed_with_a_reason(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[])
    for bad in ("a*", "..", "x" * 80, "%2A"):
        async with connect(f"ws://{daemon.base}/ws/{bad}") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1008 and "invalid camera id" in info.value.rcvd.reason
    with pytest.raises(InvalidStatus) as status:
        async with connect(f"ws://{daemon.base}/nowhere"):
            pass
    assert status.value.response.status_code == 404


async def test_valid_id_without_frames_waits_then_gets_foreign_plain_jpeg(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    """Another program publishing raw JPEG bytes to video:{id} reaches viewers."""
    daemon = start_daemon(redis_url=redis_server.url, cameras=[])
    image = np.full((40, 60, 3), 200, np.uint8)
    plain = bytes(cv2.imencode(".jpg", image)[1].tobytes())
    async with Watcher(f"ws://{daemon.base}/ws/legacy-cam", keep_payloads=True) as viewer:
        await asyncio.sleep(0.5)
        assert viewer.arrivals == []  # waits quietly, not closed

        async def publish_until_received() -> None:
            client = redis_server.client()
            while not viewer.payloads:
                client.publish("video:legacy-cam", plain)
                client.publish("video:legacy-cam", b"not a jpeg at all")
                await asyncio.sleep(0.1)

        await asyncio.wait_for(publish_until_received(), 10)
        assert viewer.payloads[0] == plain
    assert all(p == plain for p in viewer.payloads)  # junk never reached the viewer
    # How rejections are logged: test_daemon_parts.test_rejected_frames_are_logged_sparsely.


def test_healthz(redis_server: RedisServer, start_daemon: Callable[..., Daemon]) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[])
    status, body = daemon.http("/healthz")
    assert status == 200 and json.loads(body)["detail"] == "subscribed"
    assert daemon.http("/nope")[0] == 404


async def test_sigterm_exits_zero_and_viewers_get_1001(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "c", **SYNTH}])
    children = wait_for(daemon.child_pids, 10, "the camera child")
    assert len(children) == 1
    # An idle keep-alive connection (a browser keeps some) must not hold the stop:
    # it used to be waited on for aiohttp's whole 2 s shutdown timeout.
    idle = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=5)
    idle.request("GET", "/healthz")
    assert idle.getresponse().read()
    async with connect(f"ws://{daemon.base}/ws/c", max_size=None) as ws:
        await ws.recv()
        daemon.process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
        closed_at = time.monotonic()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert idle.sock is not None
    assert await asyncio.to_thread(idle.sock.recv, 1) == b""  # closed by the daemon
    assert time.monotonic() - closed_at < 1.0, "the idle connection was closed late"
    idle.close()
    assert await asyncio.to_thread(daemon.process.wait, 10) == 0
    events: list[dict[str, Any]] = daemon.log_events()
    assert any(e["event"] == "video stream manager stopped" for e in events)


async def test_password_protected_redis_via_credentials_directory(
    tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    password = "Sup3r-secret-pw"
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        server.client().config_set("requirepass", password)
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "redis-password").write_text(password + "\n")
        daemon = start_daemon(
            redis_url=None,
            cameras=[{"id": "sec", **SYNTH}],
            extra=f'\n[redis]\nurl = "{server.url}"\npassword_credential = "redis-password"\n',
            env={"CREDENTIALS_DIRECTORY": str(creds)},
        )
        got = await frames(f"ws://{daemon.base}/ws/sec", 3)
        assert all(decodes(f) for f in got)
        assert any(e["event"] == "redis publish ok" for e in daemon.log_events())
        assert password not in daemon.log_text()
        assert "redis://:***@127.0.0.1" in daemon.log_text()
    finally:
        server.kill()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "s.toml", redis_url=None, port=port, cameras=[])
        daemon = Daemon(config, port, env={"VIDEO_STREAM_USE_REDIS": "0"})
        assert daemon.process.wait(20) == 71
        daemon.stop()
    errors = [e for e in daemon.log_events() if e["event"] == "cannot start the gateway"]
    assert errors and errors[0]["listen"] == f"127.0.0.1:{port}"
    assert "Traceback" not in daemon.log_text()
