"""H.264/H.265 passthrough through the gateway (issue 20): a real daemon with
real camera children on RTSP test cameras, real Redis, and units published
into ``au:{id}`` by ``tests/unit_publisher.py`` (``Demuxer`` + ``Passthrough``
on the same camera, as the child does), so a test controls what arrives.
Viewers are real WebSocket clients; what they get is decoded by FFmpeg (PyAV),
one unit at a time."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from streamd.gateway import protocol
from streamd.gateway.unit_hub import MAX_UNIT_BYTES
from streamd.video import annexb
from streamd.video.annexb import Codec
from streamd.video.demux import Demuxer
from streamd.video.passthrough import Passthrough
from streamd.video.units import check_unit

from .cameras import Clip, RtspServer, make_clip
from .conftest import Daemon, write_config
from .http_client import request
from .support import RedisServer, free_port, raw_viewer, received_for, wait_for
from .test_wall import DevTools, browser  # noqa: F401 - the fixture
from .unit_publisher import UnitPublisher, decode_each, unit_seq
from .viewers import binary_messages

H264 = Clip("h264", 640, 360)
H265 = Clip("h265", 640, 360)
SIZE = (640, 360)
ALL = "token-for-every-camera"
DOOR_ONLY = "token-for-door"
AUTH = {"Authorization": f"Bearer {ALL}"}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    make_clip(folder, H264)
    make_clip(folder, H265)
    return folder


@pytest.fixture(scope="module")
def rtsp(clips: Path) -> Iterator[RtspServer]:
    server = RtspServer(clips=clips)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(
    module_redis: RedisServer, rtsp: RtspServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """``door``: an H.264 camera, ``yard``: an H.265 one; a token for both, one for door."""
    path = tmp_path_factory.mktemp("pt") / "streamd.toml"
    port = free_port()
    cameras = [
        # The children publish no units of their own: here the test is the only
        # publisher (test_passthrough_end_to_end has the child's own units).
        {"id": "door", "source": rtsp.clip_url(H264), "detector": "none", "passthrough": False},
        {"id": "yard", "source": rtsp.clip_url(H265), "detector": "none", "passthrough": False},
    ]
    write_config(path, redis_url=module_redis.url, port=port, cameras=cameras)
    tokens = "".join(
        f'\n[[server.tokens]]\nname = "{name}"\nsha256 = "{sha(token)}"\ncameras = {scope}\n'
        for name, token, scope in (("all", ALL, '["*"]'), ("door", DOOR_ONLY, '["door"]'))
    )
    path.write_text(path.read_text() + tokens)
    started = Daemon(path, port)
    started.wait_healthy(30)
    yield started
    started.stop()
    text = started.log_text()
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture
def door_units(module_redis: RedisServer, rtsp: RtspServer) -> Iterator[UnitPublisher]:
    with UnitPublisher(module_redis.url, "door", rtsp.clip_url(H264)) as publisher:
        publisher.wait_published(1)
        yield publisher
    assert publisher.error is None


def ws_url(daemon: Daemon, path: str) -> str:
    return f"ws://{daemon.base}{path}"


def cameras_info(daemon: Daemon) -> dict[str, dict[str, object]]:
    status, body = request(daemon, "/api/cameras", headers=AUTH)
    assert status == 200
    result: dict[str, dict[str, object]] = json.loads(body)["cameras"]
    return result


def rejected(daemon: Daemon) -> dict[str, int]:
    """Units of door dropped, by reason (``/api/cameras``; the daemon-wide
    ``streamd_frames_rejected_total`` counts them too, shown to unscoped scrapes)."""
    info = cameras_info(daemon)["door"]["passthrough"]
    assert isinstance(info, dict)
    counts: dict[str, int] = info["rejected"]
    return counts


def assert_whole_gops(units: list[bytes], codec: Codec) -> None:
    """The first unit is a keyframe, every unit follows the one before it or is
    a keyframe, and a fresh decoder gives one picture of the camera's size per unit."""
    marks = [unit_seq(u, codec) for u in units]
    assert marks[0][1], "a viewer must start at a keyframe"
    for (before, _), (seq, keyframe) in itertools.pairwise(marks):
        assert seq == before + 1 or keyframe, f"unit {seq} after {before} is not a keyframe"
    assert decode_each(codec, units) == [SIZE] * len(units)


# --- delivery -------------------------------------------------------------------------------


async def test_passthrough_units_decode_one_by_one_and_jpeg_viewers_are_unchanged(
    daemon: Daemon, door_units: UnitPublisher
) -> None:
    single = ws_url(daemon, f"/ws/door?format=h264&token={ALL}")
    # Each viewer goes unread while the other is read. With websockets' default
    # max_queue (16 messages) a client that falls behind stops reading its socket,
    # so at the end it cannot read the gateway's answer to its close frame and
    # waits out its 10 s close_timeout: 20 s here. Unbounded, as a browser reads.
    async with (
        connect(single, max_size=None, max_queue=None) as ws,
        connect(
            ws_url(daemon, "/ws/door"), additional_headers=AUTH, max_size=None, max_queue=None
        ) as jpeg_ws,
    ):
        units = await binary_messages(ws, 40)
        jpegs = await binary_messages(jpeg_ws, 3)
    # Forwarded as published: each is a unit the child's pipeline made, accepted again.
    assert all(check_unit(u, Codec.H264, "door", MAX_UNIT_BYTES).ok for u in units)
    assert_whole_gops(units, Codec.H264)
    assert all(j[:2] == b"\xff\xd8" for j in jpegs)  # /ws/door: JPEG as ever

    async with connect(ws_url(daemon, "/ws"), additional_headers=AUTH, max_size=None) as mux:
        await mux.send(json.dumps({"op": "subscribe", "cameras": ["door"], "format": "h264"}))
        messages = await binary_messages(mux, 30)
    decoded = [protocol.decode_unit(m) for m in messages]
    assert {(d.camera_id, d.codec) for d in decoded} == {("door", Codec.H264)}
    assert [d.keyframe for d in decoded] == [unit_seq(d.data, Codec.H264)[1] for d in decoded]
    assert all(d.capture_ns > 0 for d in decoded)
    assert_whole_gops([d.data for d in decoded], Codec.H264)


async def test_a_late_joiner_starts_at_once_from_the_cached_gop(
    daemon: Daemon, door_units: UnitPublisher
) -> None:
    single = ws_url(daemon, f"/ws/door?format=h264&token={ALL}")
    async with connect(single, max_size=None) as first:
        # Join mid-GOP: the first viewer has seen a keyframe and a few units since.
        seen = await binary_messages(first, 1)
        while True:
            seen += await binary_messages(first, 1)
            seq, keyframe = unit_seq(seen[-1], Codec.H264)
            if not keyframe and any(unit_seq(u, Codec.H264)[1] for u in seen[1:]):
                break
        joined = time.monotonic()
        async with connect(single, max_size=None) as late:
            burst = await binary_messages(late, 3, timeout=2)
            waited = time.monotonic() - joined
    nals = annexb.split_nals(burst[0])
    kinds = {annexb.nal_type(n, Codec.H264) for n in nals}
    assert {7, 8, 5} <= kinds  # SPS, PPS, IDR in its first message
    assert decode_each(Codec.H264, burst[:1]) == [SIZE]  # a picture at once, alone
    first_seq = unit_seq(burst[0], Codec.H264)[0]
    assert first_seq < seq, "the first unit came from the cache, not the next keyframe"
    assert waited < 1.0, f"{waited:.2f} s for three units: they were not cached"


def read_frames(sock: socket.socket, seconds: float) -> list[bytes]:
    """Server WebSocket messages (unmasked binary) read from a raw socket."""
    data = b"".join(received_for(sock, seconds))
    messages, pos = [], 0
    while pos + 2 <= len(data):
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        head = 2
        if length == 126:
            (length,), head = struct.unpack_from(">H", data, pos + 2), 4
        elif length == 127:
            (length,), head = struct.unpack_from(">Q", data, pos + 2), 10
        if pos + head + length > len(data):
            break
        if opcode == 2:
            messages.append(data[pos + head : pos + head + length])
        pos += head + length
    return messages


def test_a_never_reading_viewer_only_ever_gets_whole_gops(
    daemon: Daemon, module_redis: RedisServer, clips: Path
) -> None:
    """A burst of the camera's clip, read unpaced from its file 40 times (~40
    MB), while the viewer reads nothing: far more than every socket buffer, so
    the gateway's queue must skip, a GOP at a time."""
    sock = raw_viewer(daemon.port, f"/ws/door?format=h264&token={ALL}", rcvbuf=8192)
    try:
        time.sleep(0.5)  # subscribed
        source = str(clips / H264.filename)
        with UnitPublisher(module_redis.url, "door", source, loops=40) as burst:
            wait_for(lambda: burst.published >= 40 * 60 or burst.error is not None, 60, "burst")
            info = cameras_info(daemon)["door"]["passthrough"]
        assert burst.error is None
        assert isinstance(info, dict) and info["skipped"], info  # it fell behind: skipped
        units = read_frames(sock, 4)
    finally:
        sock.close()
    assert len(units) > 20
    assert_whole_gops(units, Codec.H264)


# --- demand and subscriptions ---------------------------------------------------------------


async def test_au_channel_is_subscribed_only_while_a_passthrough_viewer_watches(
    daemon: Daemon, module_redis: RedisServer
) -> None:
    client = redis.Redis.from_url(module_redis.url)

    def numsub(channel: str) -> int:
        return int(client.pubsub_numsub(channel)[0][1])

    assert numsub("au:door") == 0
    async with connect(ws_url(daemon, f"/ws/door?format=h264&token={ALL}")):
        await asyncio.to_thread(wait_for, lambda: numsub("au:door") == 1, 5, "au:door")
        assert numsub("video:door") == 0  # nobody needs its JPEG
    await asyncio.to_thread(wait_for, lambda: numsub("au:door") == 0, 5, "au:door left")
    client.close()


# --- hostile units --------------------------------------------------------------------------


def _hostile_units(rtsp: RtspServer, good: list[bytes]) -> dict[str, bytes]:
    keyframe = next(u for u in good if unit_seq(u, Codec.H264)[1])
    nals = annexb.split_nals(keyframe)
    kind = [annexb.nal_type(n, Codec.H264) for n in nals]
    without_sets = annexb.join_nals(n for n, k in zip(nals, kind, strict=True) if k not in (7, 8))
    without_sei = annexb.join_nals(n for n, k in zip(nals, kind, strict=True) if k != 6)
    with Demuxer(rtsp.clip_url(H265)) as source:  # an H.265 delta unit named "door"
        pipeline = Passthrough("door", Codec.H265)
        h265 = []
        for unit in source:
            message = pipeline.feed(unit, time.time_ns())
            if message is not None:
                h265.append(message)
            if len(h265) == 3:
                break
    return {
        "unit_garbage": b"\x00\x00\x00\x01\x88" + b"not an access unit" * 300,
        "unit_oversized": b"\x00\x00\x00\x01\x65" + b"\x11" * MAX_UNIT_BYTES,
        "unit_wrong_codec": h265[2],
        "unit_missing_parameter_sets": without_sets,
        "unit_no_metadata": without_sei,
    }


async def test_hostile_units_are_counted_and_dropped(
    daemon: Daemon, door_units: UnitPublisher, module_redis: RedisServer, rtsp: RtspServer
) -> None:
    client = redis.Redis.from_url(module_redis.url)
    single = ws_url(daemon, f"/ws/door?format=h264&token={ALL}")
    async with connect(single, max_size=None) as ws:
        await binary_messages(ws, 5)  # the camera's codec is known: H.264
        hostile = _hostile_units(rtsp, list(door_units.recent))
        for reason, data in hostile.items():
            assert not check_unit(data, Codec.H264, "door", MAX_UNIT_BYTES).ok, reason
        before = rejected(daemon)
        for data in hostile.values():
            client.publish("au:door", data)
        got = await binary_messages(ws, 45)
        after = rejected(daemon)
    for reason in hostile:
        name = reason.removeprefix("unit_")
        assert after.get(name, 0) - before.get(name, 0) == 1, (reason, after)
    hostile_payloads = set(hostile.values())
    assert not hostile_payloads & set(got)
    start = next(i for i, u in enumerate(got) if unit_seq(u, Codec.H264)[1])
    assert_whole_gops(got[start:], Codec.H264)
    client.close()


# --- codecs ---------------------------------------------------------------------------------


async def test_h264_asked_of_an_h265_camera_is_closed_with_a_reason_mux_falls_back(
    daemon: Daemon, module_redis: RedisServer, rtsp: RtspServer
) -> None:
    with UnitPublisher(module_redis.url, "yard", rtsp.clip_url(H265)) as yard:
        yard.wait_published(1)
        async with connect(ws_url(daemon, f"/ws/yard?format=h265&token={ALL}")) as ws:
            units = await binary_messages(ws, 20)
        assert_whole_gops(units, Codec.H265)
        async with connect(ws_url(daemon, f"/ws/yard?format=h264&token={ALL}")) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await binary_messages(ws, 1)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4415
        assert "h265" in closed.value.rcvd.reason
        async with connect(ws_url(daemon, "/ws"), additional_headers=AUTH, max_size=None) as mux:
            await mux.send(json.dumps({"op": "subscribe", "cameras": ["yard"], "format": "h264"}))
            texts: list[dict[str, object]] = []
            jpeg = None
            async with asyncio.timeout(15):
                while jpeg is None:
                    message = await mux.recv()
                    if isinstance(message, str):
                        texts.append(json.loads(message))
                    elif message[0] == protocol.JPEG_TYPE:
                        jpeg = message
                    else:
                        raise AssertionError("an H.265 unit for an H.264 subscription")
        assert {"type": "format", "camera": "yard", "format": "jpeg"}.items() <= next(
            t for t in texts if t["type"] == "format"
        ).items()
        assert protocol.decode_frame(jpeg)[3][:2] == b"\xff\xd8"


# --- the JPEG path's guards apply unchanged -------------------------------------------------


async def test_tokens_scopes_origins_and_host_apply_to_passthrough(daemon: Daemon) -> None:
    for path, expected in (
        ("/ws/door?format=h264", 401),  # no token
        (f"/ws/yard?format=h264&token={DOOR_ONLY}", 403),  # scope
        (f"/ws/door?format=vp9&token={ALL}", 400),  # no such format
    ):
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(daemon, path)):
                pass
        assert info.value.response.status_code == expected, path
    # A cross-site page (its Origin), and a rebound DNS name (its Host).
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            ws_url(daemon, f"/ws/door?format=h264&token={ALL}"),
            origin=Origin("http://evil.example"),
        ):
            pass
    assert info.value.response.status_code == 403
    sock = socket.create_connection(("127.0.0.1", daemon.port))
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            f"ws://evil.example:{daemon.port}/ws/door?format=h264&token={ALL}",
            sock=sock,
            origin=Origin(f"http://evil.example:{daemon.port}"),
        ):
            pass
    assert info.value.response.status_code == 400
    # /ws: a passthrough subscribe outside the token's scope is denied.
    url = ws_url(daemon, f"/ws?token={DOOR_ONLY}")
    async with connect(url) as mux:
        await mux.send(json.dumps({"op": "subscribe", "cameras": ["yard"], "format": "h264"}))
        async with asyncio.timeout(5):
            while True:
                reply = json.loads(await mux.recv())
                if reply["type"] == "subscribed":
                    break
    assert reply["cameras"] == [] and reply["denied"][0]["camera"] == "yard"


# --- the wall in Chromium -------------------------------------------------------------------

WALL_TILES = """JSON.stringify(Object.fromEntries(Object.entries(window.streamdWall ?
  streamdWall.tiles : {}).map(([id, t]) => [id, {path: t.path, fps: t.fps, frames: t.frames,
  latency_ms_p50: t.latency_ms_p50, latency_ms_p99: t.latency_ms_p99, reason: t.reason,
  lit: (() => { const c = t.canvas; if (!c.width) return 0;
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let s = 0; for (let i = 0; i < d.length; i += 97) s += d[i]; return s; })(),
  width: t.pictureWidth || 0}])))"""


async def wall_until(
    page: DevTools, predicate: Callable[[dict[str, dict[str, Any]]], bool], what: str
) -> dict[str, dict[str, Any]]:
    current: dict[str, dict[str, Any]] = {}
    try:
        async with asyncio.timeout(30):
            while True:
                current = json.loads(await page.evaluate(WALL_TILES))
                if predicate(current):
                    return current
                await asyncio.sleep(0.25)
    except TimeoutError:
        raise AssertionError(f"{what}: {current}") from None


async def open_wall(page: DevTools, daemon: Daemon, *, webcodecs: bool) -> None:
    await page.call("Page.enable")
    if not webcodecs:  # a browser without WebCodecs (or where it is switched off)
        await page.call(
            "Page.addScriptToEvaluateOnNewDocument", source="delete window.VideoDecoder;"
        )
    await page.call("Page.navigate", url=f"http://{daemon.base}/?cameras=door,yard&token={ALL}")


def moving(tile: dict[str, Any], frames: int = 20) -> bool:
    return bool(tile["frames"] >= frames and tile["lit"] > 0 and tile["fps"] > 5)


async def test_the_wall_decodes_h264_with_webcodecs_and_h265_falls_back_to_jpeg(
    browser: DevTools,  # noqa: F811 - the fixture from test_wall
    daemon: Daemon,
    module_redis: RedisServer,
    rtsp: RtspServer,
) -> None:
    with (
        UnitPublisher(module_redis.url, "door", rtsp.clip_url(H264)),
        UnitPublisher(module_redis.url, "yard", rtsp.clip_url(H265)),
    ):
        await open_wall(browser, daemon, webcodecs=True)
        tiles = await wall_until(
            browser,
            lambda ts: len(ts) == 2 and all(moving(t) for t in ts.values()),
            "both tiles drawing",
        )
        door, yard = tiles["door"], tiles["yard"]
        assert door["path"] == "webcodecs", door
        assert door["width"] == SIZE[0]  # the main stream's pictures, not the JPEG's
        assert 0 <= door["latency_ms_p50"] <= door["latency_ms_p99"] < 2000
        assert yard["path"] == "jpeg" and "h265" in yard["reason"], yard
        info = cameras_info(daemon)
        assert isinstance(info["door"]["passthrough"], dict)
        assert info["door"]["viewers"] == 0  # no JPEG viewer of door: nobody encodes for it


async def test_the_wall_without_webcodecs_shows_jpeg(
    browser: DevTools,  # noqa: F811 - the fixture from test_wall
    daemon: Daemon,
    door_units: UnitPublisher,
) -> None:
    await open_wall(browser, daemon, webcodecs=False)
    tiles = await wall_until(browser, lambda ts: moving(ts.get("door", {"frames": 0}), 10), "door")
    assert tiles["door"]["path"] == "jpeg", tiles
    assert cameras_info(daemon)["door"]["passthrough"] is None  # no unit viewer
