"""streamd as a drop-in for the old API server (issue 11): its video-stream
router and camera runtime API in the shapes of /work/shared/seed-api.md, against
a real daemon, real Redis, an old-style detection process and an HTTP pusher."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from websockets.asyncio.client import connect

from streamd.config import DetectorConfig

from .conftest import Daemon, write_config
from .support import RedisServer, free_port, wait_for

PUSH_TOKEN = "push-secret"
JSON_TYPE = {"Content-Type": "application/json"}
OLD_DETECTION_PROCESS = """
import sys, time, redis, cv2, numpy as np
url, channel, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(count):
    image = np.full((48, 64, 3), i % 256, np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    client = redis.from_url(url)  # the old fix: a new connection per frame
    client.publish(channel, jpeg)
    client.close()
    time.sleep(0.05)
"""


def jpeg_bytes(value: int) -> bytes:
    image = np.full((48, 64, 3), value, np.uint8)
    return bytes(cv2.imencode(".jpg", image)[1].tobytes())


def same_jpeg(sent: bytes, original: bytes) -> bool:
    """The pushed JPEG, with streamd's metadata segment inserted after SOI."""
    return sent[:2] == b"\xff\xd8" and sent.endswith(original[2:])


@pytest.fixture(scope="module")
def daemon(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    path = tmp_path_factory.mktemp("old") / "streamd.toml"
    port = free_port()
    cameras: list[dict[str, Any]] = [
        {
            "id": "door",
            "source": "synthetic:?width=160&height=120",
            "fps": 15,
            "detector": "none",
            "name": "Front door",
            "location": "Building A",
        },
        {"id": "yard", "source": "rtsp://admin:hunter2@127.0.0.1:9/stream", "detector": "none"},
        {"id": "legacy", "source": "external:"},
        {"id": "pushed", "source": "external:"},
    ]
    write_config(path, redis_url=module_redis.url, port=port, cameras=cameras)
    started = Daemon(path, port, env={"VIDEO_PUSH_TOKEN": PUSH_TOKEN})
    started.wait_healthy()
    yield started
    started.stop()
    text = started.log_text()
    assert "Traceback" not in text and "hunter2" not in text


def call(
    daemon: Daemon,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://{daemon.base}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = response.read()
            kind = response.headers["Content-Type"]
            return int(response.status), json.loads(data) if "json" in kind else data
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


def post_json(daemon: Daemon, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    return call(daemon, path, "POST", data, JSON_TYPE)


def test_camera_list_in_the_old_shape(daemon: Daemon) -> None:
    wait_for(lambda: call(daemon, "/api/v1/cameras")[1]["cameras"][0]["active"], 15, "door up")
    status, body = call(daemon, "/api/v1/cameras")
    assert status == 200
    cameras = {c["id"]: c for c in body["cameras"]}
    assert list(cameras) == ["door", "yard", "legacy", "pushed"]
    door = cameras["door"]
    for key in (
        "id",
        "name",
        "location",
        "status",
        "camera_type",
        "resolution",
        "fps",
        "source",
        "active",
        "enabled",
        "created_at",
        "updated_at",
    ):
        assert key in door, key
    assert door["name"] == "Front door" and door["location"] == "Building A"
    assert door["status"] == "active" and door["active"] and door["enabled"]
    assert door["camera_type"] == "synthetic" and door["fps"] == 15
    assert cameras["yard"]["camera_type"] == "rtsp"
    assert "hunter2" not in cameras["yard"]["source"] and "admin" in cameras["yard"]["source"]
    assert cameras["legacy"]["name"] == "legacy"  # falls back to the id


def test_runtime_control_in_the_old_shape(daemon: Daemon) -> None:
    status, body = call(daemon, "/api/v1/cameras/door/status")
    assert status == 200 and body["running"] is True and isinstance(body["pid"], int)
    first_pid = body["pid"]
    status, body = post_json(daemon, "/api/v1/cameras/door/stop")
    assert status == 200 and body["ok"] is True and body["running"] is False
    wait_for(lambda: call(daemon, "/api/v1/cameras/door/status")[1]["running"] is False, 10, "stop")
    status, body = post_json(daemon, "/api/v1/cameras/door/start")
    assert status == 200 and body["ok"] is True and body["running"] is True
    wait_for(lambda: call(daemon, "/api/v1/cameras/door/status")[1]["pid"], 10, "started")
    status, body = post_json(daemon, "/api/v1/cameras/door/restart")
    assert status == 200 and body["ok"] and body["running"]
    wait_for(
        lambda: call(daemon, "/api/v1/cameras/door/status")[1]["pid"] not in (None, first_pid),
        10,
        "a new child",
    )
    status, body = post_json(daemon, "/api/v1/cameras/batch-status", {"camera_ids": ["door", "x"]})
    assert status == 200 and set(body) == {"door"} and "running" in body["door"]
    status, body = post_json(daemon, "/api/v1/cameras/batch-status")
    assert status == 200 and set(body) == {"door", "yard", "legacy", "pushed"}
    status, body = call(daemon, "/api/v1/cameras/door/stats")
    assert status == 200 and "frames_sent" in body and "restarts" in body


def test_errors_and_unsupported_in_the_old_shape(daemon: Daemon) -> None:
    status, body = call(daemon, "/api/v1/cameras/nope/status")
    assert status == 404 and set(body["detail"]) == {"error", "message"}
    status, body = post_json(daemon, "/api/v1/cameras/nope/start")
    assert status == 404 and "detail" in body
    for method, path in (
        ("POST", "/api/v1/cameras"),
        ("DELETE", "/api/v1/cameras/door"),
        ("PUT", "/api/v1/cameras/door"),
    ):
        status, body = call(daemon, path, method, b"{}", JSON_TYPE)
        assert status == 405 and "streamd camera" in body["detail"]["message"], (method, path)
    # Cross-site and rebinding rules hold on the old paths too.
    evil = {**JSON_TYPE, "Origin": "http://evil.example"}
    assert call(daemon, "/api/v1/cameras/door/stop", "POST", b"{}", evil)[0] == 403
    assert call(daemon, "/api/v1/cameras/door/stop", "POST", b"{}")[0] == 415
    assert call(daemon, "/api/v1/cameras", headers={"Host": "evil.example"})[0] == 400
    assert call(daemon, "/api/v1/video-stream/config/door", "POST", b"{}")[0] == 415
    status, body = post_json(daemon, "/api/v1/video-stream/config/door", {"stream_interval": 0})
    assert status == 422 and "stream_interval" in body["detail"]["message"]
    assert post_json(daemon, "/api/v1/video-stream/config/door", [1])[0] == 400


async def test_old_detection_process_reaches_viewers_and_late_joiners(
    daemon: Daemon, module_redis: RedisServer
) -> None:
    url = f"ws://{daemon.base}/api/v1/video-stream/ws/legacy"
    async with connect(url) as ws:
        process = subprocess.Popen(
            [sys.executable, "-c", OLD_DETECTION_PROCESS, module_redis.url, "video:legacy", "20"]
        )
        got = await asyncio.wait_for(ws.recv(), 15)
        assert isinstance(got, bytes) and got[:2] == b"\xff\xd8"
        await ws.send("ping")
        while (reply := await asyncio.wait_for(ws.recv(), 5)) != "pong":
            assert isinstance(reply, bytes)
    await asyncio.to_thread(process.wait, 30)
    last = jpeg_bytes(19)
    started = time.monotonic()
    async with connect(url) as late:  # the publisher is done: only the cache can answer
        cached = await asyncio.wait_for(late.recv(), 5)
    assert cached == last and time.monotonic() - started < 1.0
    status, body = call(daemon, "/api/v1/video-stream/status/legacy")
    assert status == 200 and body == {
        "camera_id": "legacy",
        "has_clients": False,
        "client_count": 0,
    }


async def test_http_frame_push_reaches_viewers_redis_and_late_joiners(
    daemon: Daemon, module_redis: RedisServer
) -> None:
    push = "/api/v1/video-stream/frame/pushed"
    frame = jpeg_bytes(77)
    assert call(daemon, push, "POST", frame)[0] == 401  # VIDEO_PUSH_TOKEN is set
    assert call(daemon, push, "POST", frame, {"X-Video-Token": "nope"})[0] == 401
    token = {"X-Video-Token": PUSH_TOKEN}
    assert call(daemon, push, "POST", b"", token)[0] == 400
    assert call(daemon, push, "POST", b"not a jpeg", token)[0] == 400
    assert call(daemon, push, "POST", frame, {**token, "Origin": "http://evil.example"})[0] == 403
    pubsub = module_redis.client().pubsub()
    pubsub.subscribe("video:pushed")
    async with connect(f"ws://{daemon.base}/ws/pushed") as ws:
        status, body = call(daemon, push, "POST", frame, token)
        assert status == 200 and body == {"ok": True, "camera_id": "pushed", "size": len(frame)}
        received = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(received, bytes) and same_jpeg(received, frame)
        stats = call(daemon, "/api/v1/video-stream/stats")[1]
        assert stats["active_cameras_detail"] == {"pushed": 1} and stats["total_connections"] == 1
        for key in ("active_cameras", "frames_sent", "frames_dropped", "frames_received"):
            assert isinstance(stats[key], int), key
    on_redis = [
        m for m in iter(lambda: pubsub.get_message(timeout=2), None) if m["type"] == "message"
    ]
    assert on_redis and same_jpeg(on_redis[0]["data"], frame)
    async with connect(f"ws://{daemon.base}/ws/pushed") as late:
        cached = await asyncio.wait_for(late.recv(), 2)
        assert isinstance(cached, bytes) and same_jpeg(cached, frame)


def published_per_second(module_redis: RedisServer, channel: str, seconds: float) -> float:
    pubsub = module_redis.client().pubsub()
    pubsub.subscribe(channel)
    deadline = time.monotonic() + 1.0  # let demand reach the child first
    while time.monotonic() < deadline:
        pubsub.get_message(timeout=0.1)
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "message":
            count += 1
    pubsub.close()
    return count / seconds


def test_stream_interval_cuts_the_published_rate_live(
    daemon: Daemon, module_redis: RedisServer
) -> None:
    path = "/api/v1/video-stream/config/door"
    status, body = call(daemon, path)
    assert status == 200 and body == {
        "camera_id": "door",
        "stream_interval": 1,
        "log_interval": 120,
        "frame_by_frame": False,
    }
    pid = call(daemon, "/api/v1/cameras/door/status")[1]["pid"]
    before = published_per_second(module_redis, "video:door", 3.0)
    status, body = post_json(daemon, path, {"stream_interval": 3})
    assert status == 200 and body["stream_interval"] == 3 and "message" in body
    after = published_per_second(module_redis, "video:door", 3.0)
    assert 0.2 < after / before < 0.45, (before, after)
    assert call(daemon, "/api/v1/cameras/door/status")[1]["pid"] == pid  # no restart
    stored = module_redis.client().hgetall("video_stream:config:door")
    assert stored[b"stream_interval"] == b"3"
    assert 0 < module_redis.client().ttl("video_stream:config:door") <= 3600
    assert call(daemon, path)[1]["stream_interval"] == 3
    status, body = post_json(daemon, path, {"frame_by_frame": True})
    assert status == 200 and body["frame_by_frame"] is True
    restored = published_per_second(module_redis, "video:door", 2.0)
    assert restored / before > 0.8


def test_preview_is_the_newest_frame(daemon: Daemon) -> None:
    status, body = call(daemon, "/api/v1/cameras/door/preview")
    assert status == 200 and body[:2] == b"\xff\xd8"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR) is not None


def test_overlays_default_by_detector_kind() -> None:
    assert not DetectorConfig(kind="motion").draws_overlay
    assert DetectorConfig(kind="onnx", model="m.onnx").draws_overlay
    assert DetectorConfig(kind="pkg.mod:Detector").draws_overlay
    assert DetectorConfig(kind="motion", overlay=True).draws_overlay
    assert not DetectorConfig(kind="pkg.mod:Detector", overlay=False).draws_overlay
