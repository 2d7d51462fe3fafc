"""What the supervisor tells a child at start (over the control socket, so
credentials in camera URLs never appear on a command line)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamd.config import CameraConfig, ConfigError, parse_camera


@dataclass(frozen=True)
class WorkerSpec:
    camera: CameraConfig
    redis_url: str | None  # None: Redis disabled, frames go over the control socket
    channel: str
    log_level: str = "info"
    heartbeat_interval: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "camera": self.camera.to_dict(),
            "redis_url": self.redis_url,
            "channel": self.channel,
            "log_level": self.log_level,
            "heartbeat_interval": self.heartbeat_interval,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerSpec:
        try:
            camera = parse_camera("<spec>", 0, data["camera"])
            redis_url = data["redis_url"]
            channel = data["channel"]
            if redis_url is not None and not isinstance(redis_url, str):
                raise ConfigError("<spec>", "redis_url", "must be a string or null")
            if not isinstance(channel, str):
                raise ConfigError("<spec>", "channel", "must be a string")
            return cls(
                camera=camera,
                redis_url=redis_url,
                channel=channel,
                log_level=str(data.get("log_level", "info")),
                heartbeat_interval=float(data.get("heartbeat_interval", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError("<spec>", "", f"malformed worker spec: {exc}") from None
