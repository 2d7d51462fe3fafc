"""Passthrough end to end (issue 20): a real camera child on an RTSP test camera
publishes its own H.264 access units, and a real daemon's gateway hands them to
a real WebSocket viewer (``/ws/{id}?format=h264``), with Redis between them and
without it (the units then travel over the child's control socket). Nothing on
the test side publishes: what the viewer decodes came from the child."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamd.video.annexb import Codec
from streamd.video.units import Reason, check_unit

from .cameras import Clip, RtspServer, make_clip
from .conftest import Daemon, launch_daemon
from .support import RedisServer
from .unit_publisher import decode_each
from .viewers import frames

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
    camera = {"id": "door", "source": rtsp.clip_url(CLIP), "detector": "none"}
    return launch_daemon(
        tmp_path / "streamd.toml",
        redis_url=redis_url,
        cameras=[camera],
        head="" if redis_url else "[redis]\nenabled = false\n",
        timeout=30,
    )


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
        units = await frames(f"ws://{daemon.base}/ws/door?format=h264", UNITS, timeout=30)
        assert_a_decodable_stream(units)
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log_text()
