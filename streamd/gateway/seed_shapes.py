"""The seed system's shapes (pure): the per-camera stream config and the
camera entries its frontend reads (see /work/shared/seed-api.md and the
README's "Replacing the old video-stream server")."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from redis.typing import EncodableT, FieldT

from streamd.camera_status import CameraStatus
from streamd.config import CameraConfig
from streamd.redact import redact_url
from streamd.states import CameraState, ChildState, SourceState
from streamd.untrusted import ascii_int

MAX_STREAM_INTERVAL = 1000
MAX_LOG_INTERVAL = 86_400
CONFIG_HASH_PREFIX = "video_stream:config:"  # the seed system's detection processes read it
CONFIG_HASH_TTL_S = 3600


@dataclass(frozen=True)
class StreamConfig:
    """``stream_interval`` N: publish every Nth frame; ``frame_by_frame``: every one."""

    camera_id: str
    stream_interval: int = 1
    log_interval: int = 120
    frame_by_frame: bool = False

    @property
    def publish_every(self) -> int:
        return 1 if self.frame_by_frame else self.stream_interval

    def to_json(self) -> dict[str, Any]:
        return {
            "camera_id": self.camera_id,
            "stream_interval": self.stream_interval,
            "log_interval": self.log_interval,
            "frame_by_frame": self.frame_by_frame,
        }

    def to_hash(self) -> dict[FieldT, EncodableT]:
        return {
            "stream_interval": str(self.stream_interval),
            "log_interval": str(self.log_interval),
            "frame_by_frame": "true" if self.frame_by_frame else "false",
        }


def default_interval(env: Mapping[str, str]) -> int:
    """``VIDEO_STREAM_INTERVAL`` as the old server read it; streamd's own default is 1
    (every frame at the configured fps)."""
    raw = env.get("VIDEO_STREAM_INTERVAL", "").strip()
    return ascii_int(raw, 1, MAX_STREAM_INTERVAL, max_digits=6) or 1


def _bounded_int(body: Mapping[str, Any], key: str, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(f"{key} must be an integer from 1 to {high}")
    return value


def apply_update(current: StreamConfig, body: Mapping[str, Any]) -> StreamConfig:
    """The old ``POST /config/{id}`` body applied; ValueError names the bad field."""
    interval = _bounded_int(body, "stream_interval", MAX_STREAM_INTERVAL)
    log_every = _bounded_int(body, "log_interval", MAX_LOG_INTERVAL)
    frame_by_frame = body.get("frame_by_frame")
    if frame_by_frame is not None and not isinstance(frame_by_frame, bool):
        raise ValueError("frame_by_frame must be true or false")
    return replace(
        current,
        stream_interval=current.stream_interval if interval is None else interval,
        log_interval=current.log_interval if log_every is None else log_every,
        frame_by_frame=current.frame_by_frame if frame_by_frame is None else frame_by_frame,
    )


def from_hash(camera_id: str, fields: Mapping[bytes, bytes], default: StreamConfig) -> StreamConfig:
    """A config another gateway stored; junk fields fall back to the default."""
    decoded = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
    body: dict[str, Any] = {}
    for key in ("stream_interval", "log_interval"):
        number = ascii_int(decoded.get(key, ""), max_digits=6)  # "²" is a digit to isdigit
        if number is not None:
            body[key] = number
    if decoded.get("frame_by_frame") in ("true", "false", "1", "0"):
        body["frame_by_frame"] = decoded["frame_by_frame"] in ("true", "1")
    try:
        return apply_update(replace(default, camera_id=camera_id), body)
    except ValueError:
        return replace(default, camera_id=camera_id)


def running(status: CameraStatus | None) -> bool:
    return status is not None and status.child in (ChildState.STARTING, ChildState.RUNNING)


def camera_type(source: str) -> str:
    scheme = source.split(":", 1)[0].lower() if ":" in source else "file"
    return {"rtsps": "rtsp", "https": "http", "synthetic": "synthetic", "device": "usb"}.get(
        scheme, scheme if scheme in ("rtsp", "http") else "file"
    )


def camera_entry(
    camera: CameraConfig,
    status: CameraStatus | None,
    size: tuple[int, int] | None,
    state: CameraState,
) -> dict[str, Any]:
    """One camera as the old ``GET /api/v1/cameras`` listed it. ``state`` is the
    gateway's judgement (for external cameras, by frame age)."""
    active = running(status) if not camera.external else state is SourceState.LIVE
    return {
        "id": camera.id,
        "name": camera.name or camera.id,
        "location": camera.location or "",
        "status": "active" if active else "inactive",
        "camera_type": camera_type(camera.source),
        "resolution": list(size) if size else [camera.width, None],
        "fps": camera.fps,
        "source": redact_url(camera.source),
        "active": active,
        "enabled": camera.external
        or (status is not None and status.child is not ChildState.STOPPED),
        "state": state,
        "created_at": None,
        "updated_at": None,
    }


def remote_camera_entry(
    camera_id: str, info: Mapping[str, Any], size: tuple[int, int] | None, state: CameraState
) -> dict[str, Any]:
    """A camera of another streamd node (the registry's ``info``), in the same shape."""
    node = str(info.get("node", ""))
    return {
        "id": camera_id,
        "name": info.get("name") or camera_id,
        "location": info.get("location") or "",
        "status": "active" if state is SourceState.LIVE else "inactive",
        "camera_type": "remote",
        "resolution": list(size) if size else [None, None],
        "fps": None,
        "source": f"streamd node {node}",
        "active": state is SourceState.LIVE,
        "enabled": True,
        "state": state,
        "node": node,
        "created_at": None,
        "updated_at": None,
    }


def status_entry(camera_id: str, status: CameraStatus | None) -> dict[str, Any]:
    """``GET /cameras/{id}/status``: ``running`` and ``pid`` first, then streamd's own."""
    extra = status.to_json() if status else {"state": "offline"}
    return {"camera_id": camera_id, "running": running(status), "pid": extra.get("pid"), **extra}


def push_token_matches(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())
