"""What the supervisor tells a child at start (over the control socket, so
credentials in camera URLs never appear on a command line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamd.config import CameraConfig, ConfigError, EventsConfig, TableReader, parse_camera
from streamd.config.events import parse_events


@dataclass(frozen=True)
class WorkerSpec:
    camera: CameraConfig
    redis_url: str | None  # None: Redis disabled, frames go over the control socket
    channel: str
    log_level: str = "info"
    heartbeat_interval: float = 1.0
    redis_cluster: bool = False  # SPUBLISH to the channel's shard (Redis Cluster)
    redis_seeds: tuple[str, ...] = ()  # where to read the cluster's slot map
    events: EventsConfig = field(default_factory=EventsConfig)

    def to_json(self) -> dict[str, Any]:
        return {
            "camera": self.camera.to_dict(),
            "redis_url": self.redis_url,
            "channel": self.channel,
            "log_level": self.log_level,
            "heartbeat_interval": self.heartbeat_interval,
            "redis_cluster": self.redis_cluster,
            "redis_seeds": list(self.redis_seeds),
            "events": {
                "retention": self.events.retention,
                "max_events": self.events.max_events,
                "snapshot_max_bytes": self.events.snapshot_max_bytes,
                "max_snapshots": self.events.max_snapshots,
                "backlog": self.events.backlog,
            },
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
            seeds = data.get("redis_seeds", [])
            if not isinstance(seeds, list) or not all(isinstance(s, str) for s in seeds):
                raise ConfigError("<spec>", "redis_seeds", "must be a list of strings")
            return cls(
                camera=camera,
                redis_url=redis_url,
                channel=channel,
                log_level=str(data.get("log_level", "info")),
                heartbeat_interval=float(data.get("heartbeat_interval", 1.0)),
                redis_cluster=bool(data.get("redis_cluster", False)),
                redis_seeds=tuple(seeds),
                events=parse_events(TableReader("<spec>", "events", data.get("events", {}))),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError("<spec>", "", f"malformed worker spec: {exc}") from None
