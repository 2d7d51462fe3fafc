"""The configuration model: frozen dataclasses whose field defaults are the only
place a default is written (the reader leaves a missing key to the field), the
error every config problem raises, and the redacted dump ``streamd check`` prints."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamd.errors import StreamdError
from streamd.redact import MASK, redact_url

DEFAULT_CONFIG_PATH = Path("/etc/streamd.toml")
EXTERNAL_SOURCE = "external:"
CAMERA_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ConfigError(StreamdError, ValueError):
    """A configuration problem, located as precisely as we can: file and key.
    The message never holds a secret: it goes to logs and HTTP bodies."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


def is_valid_camera_id(camera_id: str) -> bool:
    return CAMERA_ID_PATTERN.fullmatch(camera_id) is not None


@dataclass(frozen=True)
class RedisConfig:
    enabled: bool = True
    url: str = "redis://localhost:6379/0"
    channel_prefix: str = "video:"
    # Redis Cluster: frames and events over sharded pub/sub (SPUBLISH/SSUBSCRIBE),
    # topology from ``url`` and ``startup_nodes`` (CLUSTER SLOTS).
    cluster: bool = False
    startup_nodes: tuple[str, ...] = ()
    # The camera registry's lease: a node silent this long is gone, its cameras
    # offline, and a camera it owned may be taken over by another node.
    lease: float = 5.0
    node_name: str | None = None  # default: host name and pid

    @property
    def seeds(self) -> tuple[str, ...]:
        """Where to read the cluster's topology from (the url first)."""
        return (self.url, *(n for n in self.startup_nodes if n != self.url))


@dataclass(frozen=True)
class TokenConfig:
    """A viewer or admin token, stored as its SHA-256 (hex), never in plain."""

    name: str
    sha256: str
    cameras: tuple[str, ...] = ("*",)
    admin: bool = False

    def allows(self, camera_id: str) -> bool:
        return "*" in self.cameras or camera_id in self.cameras


@dataclass(frozen=True)
class ServerConfig:
    enabled: bool = True  # false: a camera node without a gateway (nothing listens)
    host: str = "127.0.0.1"
    port: int = 8765
    max_frame_bytes: int = 8 * 1024 * 1024
    tokens: tuple[TokenConfig, ...] = ()
    allow_anonymous: bool = False  # needed to listen beyond loopback without tokens
    allowed_origins: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    max_viewers: int = 200
    max_viewers_per_address: int = 20
    max_messages_per_second: float = 20.0
    handshake_timeout: float = 10.0
    # Host names accepted besides IP literals, localhost and the listen host (DNS
    # rebinding); lowercase, no trailing dot; "*.example.com" covers subdomains.
    server_names: tuple[str, ...] = ()
    # SHA-256 (hex) of the token that start/stop/reload need, even from loopback.
    admin_token_sha256: str | None = None

    @property
    def listen(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class DetectorConfig:
    """Per-camera detection settings (flat keys in the camera's TOML table)."""

    kind: str = "motion"  # motion | none | onnx | module:attribute
    detect_fps: float | None = None  # None: every published frame
    # Boxes drawn into published frames. Unset: on for object detectors (onnx,
    # plugins), off for motion, whose boxes are noise for most sites (clock digits).
    overlay: bool | None = None
    overlay_timestamp: bool = False
    motion_min_area: int = 400  # px² in frame coordinates
    motion_warmup: float = 2.0  # seconds to learn the background
    ignore_zones: tuple[tuple[tuple[float, float], ...], ...] = ()
    model: str | None = None
    labels: tuple[str, ...] | str | None = None  # a list, or a file with one per line
    input_size: int = 640
    score_threshold: float = 0.5
    nms_threshold: float = 0.45
    event_clear_after: float = 2.0  # a label must be gone this long before "left"

    @property
    def draws_overlay(self) -> bool:
        if self.overlay is not None:
            return self.overlay
        return self.kind not in ("motion", "none")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"detector": self.kind}
        for key, value in asdict(self).items():
            if key == "kind" or value is None:
                continue
            if key == "ignore_zones":
                value = [[list(point) for point in zone] for zone in self.ignore_zones]
            elif key == "labels" and not isinstance(value, str):
                value = list(value)
            out[key] = value
        return out


@dataclass(frozen=True)
class CameraConfig:
    id: str
    source: str
    fps: float = 10.0
    width: int | None = None
    jpeg_quality: int = 80
    loop: bool = True  # file sources start over at the end
    name: str | None = None  # for people (the wall, status); the id stays the key
    location: str | None = None
    detection: DetectorConfig = field(default_factory=DetectorConfig)
    # A second stream of the same camera (its substream) that detection decodes
    # instead of ``source``, at its own size; None: detection reads ``source``.
    detect_source: str | None = None
    # H.264/H.265 access units published as they came on ``au:{id}``. None: on
    # for rtsp(s):// sources, off for the rest (worker/units.py decides).
    passthrough: bool | None = None

    @property
    def external(self) -> bool:
        """``source = "external:"``: another program publishes the frames on Redis
        (an old detection process); streamd lists it, caches and serves it."""
        return self.source == EXTERNAL_SOURCE

    def to_dict(self) -> dict[str, Any]:
        """Flat TOML-shaped table (parse_camera reads it back)."""
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "detection"}
        out.update(self.detection.to_dict())
        return out


@dataclass(frozen=True)
class SupervisorConfig:
    restart_delay_initial: float = 0.5
    restart_delay_max: float = 60.0
    stop_grace: float = 5.0  # SIGTERM → SIGKILL for one child
    stall_timeout: float = 10.0  # no heartbeat for this long: the child is hung
    start_timeout: float = 60.0  # no first heartbeat this long after its start: replaced
    max_starting: int = 0  # children starting at once; 0: four per CPU
    fork_server: bool = True  # fork children from a warm fork server (else exec each)
    stable_after: float = 3.0  # up and delivering frames this long: a good start
    shutdown_timeout: float = 10.0  # whole-daemon stop deadline
    max_cameras: int = 256  # per node, main file and drop-ins together
    child_memory_max: int | None = None  # bytes of RSS; a child above it is replaced


@dataclass(frozen=True)
class EventsConfig:
    """Detection events that are kept (``[events]``): the Redis stream
    ``streamd:events`` and its snapshots, or, without Redis, a ring in the daemon
    and a bounded directory."""

    retention: float = 7 * 86400.0  # seconds an event (and its snapshot) is kept
    max_events: int = 100_000  # stream length (approximate trim) / local ring size
    snapshot_max_bytes: int = 512 * 1024  # a bigger snapshot is re-encoded smaller or left out
    max_snapshots: int = 2000  # snapshots kept (the newest); bounds memory or disk
    # Events a camera's process holds while Redis is down or not yet up (oldest
    # dropped and counted past it); written, with their ids, when Redis answers.
    backlog: int = 100
    # Embedded mode's directory; None: $STATE_DIRECTORY/events (systemd), else
    # ~/.local/state/streamd/events.
    directory: str | None = None


@dataclass(frozen=True)
class Config:
    redis: RedisConfig = field(default_factory=RedisConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    cameras: tuple[CameraConfig, ...] = ()
    log_level: str = "info"
    stats_interval: float = 10.0  # seconds between per-camera stats lines
    source: str = "<defaults>"
    # (camera id, file it came from); informational, ignored by comparisons.
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def camera(self, camera_id: str) -> CameraConfig | None:
        return next((c for c in self.cameras if c.id == camera_id), None)

    def redacted(self) -> dict[str, Any]:
        """The effective config as a TOML-ready dict, with every secret masked."""
        server = self.server
        return {
            "log_level": self.log_level,
            "stats_interval": self.stats_interval,
            "redis": {
                "enabled": self.redis.enabled,
                "url": redact_url(self.redis.url),
                "channel_prefix": self.redis.channel_prefix,
                "cluster": self.redis.cluster,
                "startup_nodes": [redact_url(n) for n in self.redis.startup_nodes],
                "lease": self.redis.lease,
                **({"node_name": self.redis.node_name} if self.redis.node_name else {}),
            },
            "server": {
                "enabled": server.enabled,
                "listen": server.listen,
                "max_frame_bytes": server.max_frame_bytes,
                "allow_anonymous": server.allow_anonymous,
                "allowed_origins": list(server.allowed_origins),
                "max_viewers": server.max_viewers,
                "max_viewers_per_address": server.max_viewers_per_address,
                "max_messages_per_second": server.max_messages_per_second,
                "handshake_timeout": server.handshake_timeout,
                "server_names": list(server.server_names),
                **({"admin_token_sha256": MASK} if server.admin_token_sha256 else {}),
                **({"tls_cert": server.tls_cert} if server.tls_cert else {}),
                "tokens": [
                    {"name": t.name, "cameras": list(t.cameras), "admin": t.admin}
                    for t in server.tokens
                ],
            },
            "supervisor": _without_none(asdict(self.supervisor)),
            "events": _without_none(asdict(self.events)),
            "cameras": [_redacted_camera(c) for c in self.cameras],
        }


def _redacted_camera(camera: CameraConfig) -> dict[str, Any]:
    out = {**camera.to_dict(), "source": redact_url(camera.source)}
    if camera.detect_source is not None:
        out["detect_source"] = redact_url(camera.detect_source)
    return out


def _without_none(table: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: an unset optional value is left out."""
    return {key: value for key, value in table.items() if value is not None}
