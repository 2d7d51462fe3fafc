"""A real camera child process against a real redis-server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import redis

from streamd.config import CameraConfig
from streamd.states import ExitCode
from streamd.transport.frame import parse_frame
from streamd.transport.local import MessageType, encode_json
from streamd.worker.spec import WorkerSpec

from .conftest import ROOT, RedisServer, wait_for


def spawn_worker(
    spec: WorkerSpec | dict[str, object],
) -> tuple[subprocess.Popen[bytes], socket.socket]:
    parent, child = socket.socketpair()
    camera_id = spec.camera.id if isinstance(spec, WorkerSpec) else "bad"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamd.worker",
            "--camera",
            camera_id,
            "--control-fd",
            str(child.fileno()),
        ],
        pass_fds=(child.fileno(),),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    child.close()
    body = spec.to_json() if isinstance(spec, WorkerSpec) else spec
    parent.sendall(encode_json(MessageType.SPEC, body))
    return process, parent


def collect(
    pubsub: redis.client.PubSub, seconds: float, enough: int = 0
) -> list[tuple[float, bytes]]:
    got: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (enough and len(got) >= enough):
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message and message["type"] == "message":
            got.append((time.monotonic(), message["data"]))
    return got


def test_child_publishes_decodable_frames_at_configured_rate(redis_server: RedisServer) -> None:
    spec = WorkerSpec(
        CameraConfig("cam1", "synthetic:?width=320&height=240", fps=10, width=160),
        redis_server.url,
        "video:cam1",
    )
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("video:cam1")
    process, control = spawn_worker(spec)
    try:
        first = collect(pubsub, 10.0, enough=1)
        assert first, "no frame arrived on video:cam1"
        # Measure the steady rate after start-up.
        frames = collect(pubsub, 3.0)
    finally:
        control.close()
        process.wait(10)
    assert 24 <= len(frames) <= 36, f"{len(frames)} frames in 3 s at fps=10"
    seqs = []
    for _, data in frames:
        parsed = parse_frame(data, 1 << 24)
        assert parsed.meta is not None and parsed.meta.camera_id == "cam1"
        assert parsed.meta.publish_ns >= parsed.meta.capture_ns > 0
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (120, 160, 3)  # resized, aspect kept
        assert (parsed.meta.width, parsed.meta.height) == (160, 120)
        seqs.append(parsed.meta.seq)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_child_exits_when_supervisor_goes_away(redis_server: RedisServer) -> None:
    spec = WorkerSpec(CameraConfig("cam2", "synthetic:", fps=5), redis_server.url, "video:cam2")
    process, control = spawn_worker(spec)
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe("video:cam2")
    assert collect(pubsub, 10.0, enough=1)
    assert process.poll() is None  # still running: the exit below is the close's doing
    control.close()  # what the kernel does when the supervisor is SIGKILLed
    # An orderly stop (threads joined, exit 0), not a crash or the stop deadline's exit 1.
    assert process.wait(5.0) == 0
    output = process.stdout.read().decode() if process.stdout else ""
    assert "supervisor gone" in output


def test_child_with_unusable_spec_exits_with_config_code() -> None:
    process, control = spawn_worker(
        {
            "camera": {"id": "bad id!", "source": "synthetic:"},
            "redis_url": None,
            "channel": "video:x",
        }
    )
    assert process.wait(10) == ExitCode.CONFIG
    output = process.stdout.read().decode() if process.stdout else ""
    assert "unusable camera spec" in output and "cameras[0].id" in output
    control.close()


def test_child_without_redis_sends_frames_over_control_socket() -> None:
    spec = WorkerSpec(
        CameraConfig("cam3", "synthetic:?width=64&height=48", fps=20), None, "video:cam3"
    )
    process, control = spawn_worker(spec)
    control.settimeout(5)
    kinds: set[int] = set()
    buffer = b""
    try:

        def have_frame() -> bool:
            nonlocal buffer
            buffer += control.recv(1 << 16)
            while len(buffer) >= 5:
                kind, length = buffer[0], int.from_bytes(buffer[1:5], "big")
                if len(buffer) < 5 + length:
                    break
                kinds.add(kind)
                buffer = buffer[5 + length :]
            return MessageType.FRAME in kinds

        wait_for(have_frame, 10, "a FRAME message", interval=0)
    finally:
        control.close()
        process.wait(10)
    assert MessageType.STATUS in kinds
