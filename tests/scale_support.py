"""Several streamd nodes for the scaling tests: config files with roles, a
daemon started without waiting for a listener (camera nodes have none), and a
Redis subscriber that reads frames' metadata."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import redis

from streamd.transport.frame import parse_frame

from .conftest import Daemon, free_port, wait_for


def node_config(
    path: Path,
    *,
    redis_url: str,
    node: str,
    cameras: list[dict[str, Any]],
    gateway: bool = True,
    lease: float = 2.0,
    redis_extra: str = "",
) -> tuple[Path, int]:
    port = free_port()
    lines = [
        "[redis]",
        f'url = "{redis_url}"',
        f'node_name = "{node}"',
        f"lease = {lease}",
        redis_extra,
        "",
        "[server]",
        f"enabled = {'true' if gateway else 'false'}",
        f'listen = "127.0.0.1:{port}"',
        "",
    ]
    for camera in cameras:
        lines.append("[[cameras]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in camera.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path, port


def start_node(config: Path, port: int, *, gateway: bool) -> Daemon:
    daemon = Daemon(config, port)
    if gateway:
        daemon.wait_healthy()
    else:
        wait_for(lambda: _started(daemon), 20, "camera node start-up")
    return daemon


def _started(daemon: Daemon) -> bool:
    assert daemon.process.poll() is None, f"node exited:\n{daemon.log_text()}"
    return any(e.get("event") == "video stream manager started" for e in daemon.log_events())


def api_cameras(daemon: Daemon) -> dict[str, Any]:
    status, body = daemon.http("/api/cameras")
    assert status == 200, body
    cameras: dict[str, Any] = json.loads(body)["cameras"]
    return cameras


def state_of(daemon: Daemon, camera_id: str) -> str | None:
    info = api_cameras(daemon).get(camera_id)
    return None if info is None else str(info["state"])


def events_named(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == name]


class FrameTap:
    """A classic or sharded Redis subscriber that keeps each frame's metadata."""

    def __init__(self, client: redis.Redis, channel: str, *, sharded: bool = False) -> None:
        self.pubsub = client.pubsub()
        self.sharded = sharded
        if sharded:
            self.pubsub.ssubscribe(channel)
        else:
            self.pubsub.subscribe(channel)
        self.frames: list[tuple[float, int]] = []  # arrival, seq

    def read_for(self, seconds: float) -> list[tuple[float, int]]:
        end = time.monotonic() + seconds
        got = []
        while time.monotonic() < end:
            if self.sharded:
                message = self.pubsub.get_sharded_message(timeout=0.1)
            else:
                message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] in ("message", "smessage"):
                meta = parse_frame(message["data"], 64 << 20).meta
                assert meta is not None
                got.append((time.monotonic(), meta.seq))
        self.frames += got
        return got

    def close(self) -> None:
        self.pubsub.close()
