"""Passthrough end to end (issue 20): a real camera child on an RTSP test camera
publishes its own H.264 access units, and a real daemon's gateway hands them to
a real WebSocket viewer (``/ws/{id}?format=h264``), with Redis between them and
without it (the units then travel over the child's control socket). Nothing on
the test side publishes: what the viewer decodes came from the child."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from streamd.video.annexb import Codec
from streamd.video.units import Reason, check_unit

from .cameras import Clip, RtspServer, make_clip
from .conftest import Daemon, write_config
from .support import RedisServer, free_port, wait_for
from .unit_publisher import decode_each

CLIP = Clip("h264", 640, 360)
UNITS = 30  # two seconds at 15 fps: at least one keyframe after the first


@pytest.fixture(scope="module")
def rtsp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
    folder = tmp_path_factory.mktemp("clips")
    make_clip(folder, CLIP)
    server = RtspServer(clips=folder)
    server.start()
    yield server
    server.stop()


def start_daemon(tmp_path: Path, rtsp: RtspServer, redis_url: str | None) -> Daemon:
    port = free_port()
    camera = {"id": "door", "source": rtsp.clip_url(CLIP), "detector": "none"}
    config = write_config(
        tmp_path / "streamd.toml",
        redis_url=redis_url,
        port=port,
        cameras=[camera],
        head="" if redis_url else "[redis]\nenabled = false\n",
    )
    daemon = Daemon(config, port)
    try:
        wait_for(lambda: healthy(daemon), 30, "daemon healthy")
    except BaseException:
        daemon.stop()  # never left running when it does not come up
        raise
    return daemon


def healthy(daemon: Daemon) -> bool:
    assert daemon.process.poll() is None, daemon.log_text()
    try:
        return daemon.http("/healthz")[0] == 200
    except OSError:  # not listening yet
        return False


async def units_seen_by_a_viewer(daemon: Daemon, count: int) -> list[bytes]:
    got: list[bytes] = []
    async with connect(f"ws://{daemon.base}/ws/door?format=h264") as ws:
        async with asyncio.timeout(30):
            while len(got) < count:
                message = await ws.recv()
                if isinstance(message, bytes):
                    got.append(message)
    return got


def assert_a_decodable_stream(units: list[bytes]) -> None:
    verdicts = [check_unit(unit, Codec.H264, "door", 4 << 20) for unit in units]
    assert [v.reason for v in verdicts] == [Reason.OK] * len(units)
    assert verdicts[0].meta is not None and verdicts[0].meta.keyframe
    assert decode_each(Codec.H264, units) == [(CLIP.width, CLIP.height)] * len(units)


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "embedded"])
async def test_a_viewer_decodes_the_childs_own_units(
    tmp_path: Path, rtsp: RtspServer, redis_server: RedisServer, with_redis: bool
) -> None:
    daemon = start_daemon(tmp_path, rtsp, redis_server.url if with_redis else None)
    try:
        units = await units_seen_by_a_viewer(daemon, UNITS)
        assert_a_decodable_stream(units)
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log_text()
