"""Faults on the frame path: Redis absent, killed, restarted, dropping the gateway's
subscription; viewers that never read; an RTSP camera that vanishes for 30 s.
All against real processes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable

import redis

from .cameras import RtspServer
from .conftest import Daemon, RedisServer, free_port, rss_kib, wait_for
from .support import raw_viewer
from .viewers import Watcher

CAMERA = {"id": "cam", "source": "synthetic:?width=320&height=180", "fps": 15}


async def test_no_redis_at_start_viewer_still_gets_frames(
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon(redis_url=f"redis://127.0.0.1:{free_port()}/0", cameras=[CAMERA])
    async with Watcher(f"ws://{daemon.base}/ws/cam") as viewer:
        await viewer.wait_frames(10, timeout=10)
    assert daemon.process.poll() is None


async def test_redis_disabled_by_env_uses_embedded_gateway(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url, cameras=[CAMERA], env={"VIDEO_STREAM_USE_REDIS": "0"}
    )
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("video:cam")
    async with Watcher(f"ws://{daemon.base}/ws/cam") as viewer:
        await viewer.wait_frames(10, timeout=10)
    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
    assert message is None or message["type"] == "subscribe"  # nothing went to Redis


def first_frame_on(port: int, channel: str, timeout: float) -> float:
    client = redis.Redis(port=port, socket_timeout=5)
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message and message["type"] == "message":
            return time.monotonic() - start
    raise AssertionError(f"no frame on {channel} within {timeout}s")


@contextlib.asynccontextmanager
async def watched_camera(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> AsyncIterator[tuple[Daemon, Watcher]]:
    """The daemon with CAMERA on ``redis_server``, and a viewer already receiving it."""
    daemon = start_daemon(redis_url=redis_server.url, cameras=[CAMERA])
    async with Watcher(f"ws://{daemon.base}/ws/cam") as viewer:
        await viewer.wait_frames(5, timeout=10)
        yield daemon, viewer


async def test_redis_killed_and_restarted(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    async with watched_camera(redis_server, start_daemon) as (daemon, viewer):
        killed_at = time.monotonic()
        redis_server.kill()
        await asyncio.sleep(3)
        # Frames kept flowing through the embedded fallback while Redis was down.
        assert viewer.count_since(killed_at + 1.0) >= 15
        assert daemon.process.poll() is None

        redis_server.start()
        delay = await asyncio.to_thread(first_frame_on, redis_server.port, "video:cam", 5.0)
        assert delay <= 2.0, f"publishing resumed {delay:.2f}s after Redis came back"
        back_at = time.monotonic()
        await asyncio.sleep(2)
        assert viewer.count_since(back_at + 0.5) >= 15
        assert viewer.max_gap(killed_at, time.monotonic()) < 1.5
    published = [e for e in daemon.log_events() if e["event"] == "redis publish ok"]
    assert len(published) == 2  # first success after each (re)connect, not every frame


async def test_subscription_killed_by_redis_viewers_resume(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    async with watched_camera(redis_server, start_daemon) as (daemon, viewer):
        killed_at = time.monotonic()
        killed = redis_server.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert int(killed) >= 1
        await asyncio.sleep(3)
        assert viewer.max_gap(killed_at, time.monotonic()) < 2.0
        assert viewer.count_since(killed_at + 2.0) >= 8
    assert any(e["event"] == "redis subscription restored" for e in daemon.log_events())


def stalled_viewer(port: int, path: str) -> socket.socket:
    """A WebSocket viewer that completes the handshake and then never reads."""
    return raw_viewer(port, path)


async def test_viewer_that_never_reads_does_not_slow_others(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    camera = {
        "id": "big",
        "source": "synthetic:?width=1280&height=720",
        "fps": 25,
        "jpeg_quality": 95,
    }
    daemon = start_daemon(redis_url=redis_server.url, cameras=[camera])
    url = f"ws://{daemon.base}/ws/big"
    async with Watcher(url) as alone:
        await alone.wait_frames(5, timeout=10)
        start = time.monotonic()
        await asyncio.sleep(3)
        baseline = alone.count_since(start)
    stalled = [stalled_viewer(daemon.port, "/ws/big") for _ in range(5)]
    try:
        async with Watcher(url) as watched:
            await watched.wait_frames(5, timeout=10)
            rss_before = rss_kib(daemon.process.pid)
            start = time.monotonic()
            await asyncio.sleep(3)
            with_stalled = watched.count_since(start)
            await asyncio.sleep(3)
            rss_after = rss_kib(daemon.process.pid)
    finally:
        for sock in stalled:
            sock.close()
    assert with_stalled >= 0.85 * baseline, (baseline, with_stalled)
    # Each stalled viewer pins at most one frame plus a bounded socket buffer.
    assert rss_after - rss_before < 20 * 1024, (rss_before, rss_after)


RTSP_OUTAGE_S = 30.0
RTSP_RESUME_WITHIN_S = 5.0


async def test_rtsp_camera_gone_for_30s_resumes_within_5s_of_its_return(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    """The camera (GStreamer's RTSP server) vanishes for 30 s and comes back on the
    same port: frames reach a viewer that stayed connected within 5 s of its return,
    the daemon is never restarted, and the camera's child is the same process."""
    camera = RtspServer(free_port())
    camera.start()
    try:
        daemon = start_daemon(
            redis_url=redis_server.url,
            cameras=[{"id": "rtsp-cam", "source": camera.url, "fps": 10}],
        )
        async with Watcher(f"ws://{daemon.base}/ws/rtsp-cam") as viewer:
            await viewer.wait_frames(5, timeout=30)
            children = daemon.child_pids()
            camera.stop()
            gone_at = time.monotonic()
            await asyncio.to_thread(
                wait_for,
                lambda: any(e.get("state") == "reconnecting" for e in daemon.log_events()),
                20,
                "the child to report the camera lost",
            )
            await asyncio.sleep(RTSP_OUTAGE_S - (time.monotonic() - gone_at))
            camera.start()  # returns once the server listens again
            back_at = time.monotonic()
            async with asyncio.timeout(RTSP_RESUME_WITHIN_S + 30):  # long enough to measure
                while viewer.count_since(back_at) == 0:
                    await asyncio.sleep(0.05)
            resumed_after = min(t for t in viewer.arrivals if t >= back_at) - back_at
            print(f"frames resumed {resumed_after:.2f}s after the camera came back")
            # The camera really was gone: nothing arrived during the outage.
            assert viewer.count_since(gone_at + 2) == viewer.count_since(back_at)
        assert resumed_after <= RTSP_RESUME_WITHIN_S, (
            f"frames resumed {resumed_after:.1f}s after the camera came back"
        )
        assert daemon.process.poll() is None
        assert daemon.child_pids() == children, "the camera's child was replaced"
        assert "Traceback" not in daemon.log_text()
    finally:
        camera.stop()
