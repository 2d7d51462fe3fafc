"""Configuration: TOML file → frozen dataclasses, validated with errors that name
the file, the key and the problem, plus the environment overrides the old system
used (``VIDEO_STREAM_USE_REDIS``, ``REDIS_URL``, ``REDIS_HOST``…).

Nothing here does I/O beyond reading the file; ``parse_config`` works on a dict so
tests and ``streamd check`` share one code path.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from redis.connection import parse_url as parse_redis_url

from streamd.credentials import SecretError, credential_path, read_secret, with_password
from streamd.errors import StreamdError
from streamd.redact import redact_url

DEFAULT_CONFIG_PATH = Path("/etc/streamd.toml")
CAMERA_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


class ConfigError(StreamdError, ValueError):
    """A configuration problem, located as precisely as we can: file and key."""

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

    @property
    def listen(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class DetectorConfig:
    """Per-camera detection settings (flat keys in the camera's TOML table)."""

    kind: str = "motion"  # motion | none | onnx | module:attribute
    detect_fps: float | None = None  # None: every published frame
    overlay: bool = True
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
    detection: DetectorConfig = field(default_factory=DetectorConfig)

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
    stable_after: float = 3.0  # up and delivering frames this long: a good start
    shutdown_timeout: float = 10.0  # whole-daemon stop deadline


@dataclass(frozen=True)
class Config:
    redis: RedisConfig = field(default_factory=RedisConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
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
        return {
            "log_level": self.log_level,
            "stats_interval": self.stats_interval,
            "redis": {
                "enabled": self.redis.enabled,
                "url": redact_url(self.redis.url),
                "channel_prefix": self.redis.channel_prefix,
            },
            "server": {
                "listen": self.server.listen,
                "max_frame_bytes": self.server.max_frame_bytes,
                "allow_anonymous": self.server.allow_anonymous,
                "allowed_origins": list(self.server.allowed_origins),
                "max_viewers": self.server.max_viewers,
                "max_viewers_per_address": self.server.max_viewers_per_address,
                "max_messages_per_second": self.server.max_messages_per_second,
                "handshake_timeout": self.server.handshake_timeout,
                **({"tls_cert": self.server.tls_cert} if self.server.tls_cert else {}),
                "tokens": [
                    {"name": t.name, "cameras": list(t.cameras), "admin": t.admin}
                    for t in self.server.tokens
                ],
            },
            "supervisor": asdict(self.supervisor),
            "cameras": [{**c.to_dict(), "source": redact_url(c.source)} for c in self.cameras],
        }


# --- parsing -----------------------------------------------------------------


class _Reader:
    """Typed access to one TOML table, with errors that carry the full key path."""

    def __init__(self, source: str, prefix: str, table: Mapping[str, Any]) -> None:
        self.source = source
        self.prefix = prefix
        self.table = table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), problem)

    def _get(self, name: str) -> Any:
        self.used.add(name)
        return self.table.get(name)

    def string(self, name: str, default: str | None) -> str | None:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(name, f"must be a string, got {type(value).__name__}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {value!r}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, got {type(value).__name__}")
        if not low <= value <= high:
            raise self.error(name, f"must be between {low:g} and {high:g}, got {value!r}")
        return float(value)

    def integer(self, name: str, default: int | None, low: int, high: int) -> int | None:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, got {value!r}")
        if not low <= value <= high:
            raise self.error(name, f"must be between {low} and {high}, got {value}")
        return value

    def table_of(self, name: str) -> Mapping[str, Any]:
        value = self._get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(name, "must be a table")
        return value

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (check the spelling)")


def parse_listen(source: str, key: str, value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ConfigError(source, key, f"must look like HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(source, key, f"port must be 0-65535, got {port}")
    return host.strip("[]"), port


_SOURCE_SCHEMES = ("synthetic:", "rtsp://", "rtsps://", "http://", "https://", "device:")


def validate_source(source: str, key: str, value: str) -> None:
    if not value.strip():
        raise ConfigError(source, key, "must not be empty")
    if value.startswith("device:") and not value[len("device:") :].isdigit():
        raise ConfigError(source, key, f"device sources look like device:0, got {value!r}")
    if "://" in value and not value.startswith(_SOURCE_SCHEMES):
        scheme = value.split("://", 1)[0]
        raise ConfigError(
            source, key, f"unsupported scheme {scheme!r} (use rtsp, http(s), a file path)"
        )


def _secret(r: _Reader, env: Mapping[str, str]) -> str | None:
    """The password named by ``password_file`` or ``password_credential``, if any."""
    from_file = r.string("password_file", None)
    credential = r.string("password_credential", None)
    if from_file is not None and credential is not None:
        raise r.error("password_file", "set password_file or password_credential, not both")
    key = "password_file" if from_file is not None else "password_credential"
    try:
        if from_file is not None:
            return read_secret(Path(from_file))
        if credential is not None:
            return read_secret(credential_path(credential, env))
    except SecretError as exc:
        raise r.error(key, str(exc)) from None
    return None


def parse_camera(
    source: str, index: int, raw: Any, env: Mapping[str, str] | None = None
) -> CameraConfig:
    prefix = f"cameras[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix, "must be a table ([[cameras]])")
    r = _Reader(source, prefix, raw)
    camera_id = r.string("id", None)
    if camera_id is None:
        raise r.error("id", "is required")
    if not is_valid_camera_id(camera_id):
        raise r.error("id", f"{camera_id!r} is not a valid camera id ({CAMERA_ID_PATTERN.pattern})")
    cam_source = r.string("source", None)
    if cam_source is None:
        raise r.error("source", "is required")
    validate_source(source, r.key("source"), cam_source)
    username = r.string("username", None)
    password = _secret(r, env or {})
    if password is not None or username is not None:
        if "://" not in cam_source:
            raise r.error(
                "password_file", "credentials apply to rtsp:// and http(s):// sources only"
            )
        if password is None:
            raise r.error("username", "needs password_file or password_credential")
        cam_source = with_password(cam_source, password, username)
    camera = CameraConfig(
        id=camera_id,
        source=cam_source,
        fps=r.number("fps", 10.0, 0.1, 120.0),
        width=r.integer("width", None, 16, 7680),
        jpeg_quality=r.integer("jpeg_quality", 80, 1, 100) or 80,
        loop=r.boolean("loop", True),
        detection=_parse_detection(r),
    )
    r.reject_unknown()
    return camera


_PLUGIN_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def _parse_zones(r: _Reader) -> tuple[tuple[tuple[float, float], ...], ...]:
    raw = r._get("ignore_zones")
    if raw is None:
        return ()
    problem = "must be a list of polygons, each a list of at least 3 [x, y] points"
    if not isinstance(raw, list):
        raise r.error("ignore_zones", problem)
    zones = []
    for index, zone in enumerate(raw):
        if not isinstance(zone, list) or len(zone) < 3:
            raise r.error(f"ignore_zones[{index}]", problem)
        points = []
        for point in zone:
            if (
                not isinstance(point, list)
                or len(point) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
            ):
                raise r.error(f"ignore_zones[{index}]", problem)
            points.append((float(point[0]), float(point[1])))
        zones.append(tuple(points))
    return tuple(zones)


def _parse_labels(r: _Reader) -> tuple[str, ...] | str | None:
    raw = r._get("labels")
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return tuple(raw)
    raise r.error("labels", "must be a list of names or the path of a file with one per line")


def _parse_detection(r: _Reader) -> DetectorConfig:
    kind = r.string("detector", "motion") or "motion"
    if kind not in ("motion", "none", "onnx") and not _PLUGIN_SPEC.fullmatch(kind):
        raise r.error(
            "detector", f'must be "motion", "none", "onnx" or "module:attribute", got {kind!r}'
        )
    detection = DetectorConfig(
        kind=kind,
        detect_fps=r.number("detect_fps", 0.0, 0.01, 120.0) or None,
        overlay=r.boolean("overlay", True),
        overlay_timestamp=r.boolean("overlay_timestamp", False),
        motion_min_area=r.integer("motion_min_area", 400, 1, 100_000_000) or 400,
        motion_warmup=r.number("motion_warmup", 2.0, 0.0, 600.0),
        ignore_zones=_parse_zones(r),
        model=r.string("model", None),
        labels=_parse_labels(r),
        input_size=r.integer("input_size", 640, 32, 4096) or 640,
        score_threshold=r.number("score_threshold", 0.5, 0.0, 1.0),
        nms_threshold=r.number("nms_threshold", 0.45, 0.0, 1.0),
        event_clear_after=r.number("event_clear_after", 2.0, 0.0, 3600.0),
    )
    if kind == "onnx" and detection.model is None:
        raise r.error("model", 'is required with detector = "onnx"')
    return detection


def _redis_url_from_env(env: Mapping[str, str]) -> str | None:
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    parts = ("REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD")
    if not any(env.get(p) for p in parts):
        return None
    host = env.get("REDIS_HOST") or "localhost"
    port = env.get("REDIS_PORT") or "6379"
    db = env.get("REDIS_DB") or "0"
    password = env.get("REDIS_PASSWORD")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


def _env_flag(env: Mapping[str, str], name: str) -> bool | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    word = value.strip().lower()
    if word in _FALSE_WORDS:
        return False
    if word in _TRUE_WORDS:
        return True
    raise ConfigError(
        f"environment {name}", "", f"must be 1/0, true/false or yes/no, got {value!r}"
    )


def _parse_tokens(r: _Reader) -> tuple[TokenConfig, ...]:
    raw = r._get("tokens")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise r.error("tokens", "must be an array of tables ([[server.tokens]])")
    tokens = []
    for index, table in enumerate(raw):
        if not isinstance(table, dict):
            raise r.error(f"tokens[{index}]", "must be a table")
        t = _Reader(r.source, r.key(f"tokens[{index}]"), table)
        digest = t.string("sha256", None)
        if digest is None or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise t.error("sha256", "must be 64 lowercase hex digits: printf %s TOKEN | sha256sum")
        cameras = t._get("cameras")
        if cameras is None:
            cameras = ["*"]
        if not isinstance(cameras, list) or not all(
            isinstance(c, str) and (c == "*" or is_valid_camera_id(c)) for c in cameras
        ):
            raise t.error("cameras", 'must be a list of camera ids or ["*"]')
        tokens.append(
            TokenConfig(
                name=t.string("name", f"token{index}") or f"token{index}",
                sha256=digest,
                cameras=tuple(cameras),
                admin=t.boolean("admin", False),
            )
        )
        t.reject_unknown()
    return tuple(tokens)


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name that may resolve anywhere


def _parse_server(r: _Reader) -> ServerConfig:
    listen = r.string("listen", "127.0.0.1:8765") or "127.0.0.1:8765"
    host, port = parse_listen(r.source, "server.listen", listen)
    origins = r._get("allowed_origins")
    if origins is None:
        origins = []
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise r.error("allowed_origins", 'must be a list like ["https://wall.example.com"]')
    tls_cert, tls_key = r.string("tls_cert", None), r.string("tls_key", None)
    if (tls_cert is None) != (tls_key is None):
        raise r.error(
            "tls_cert" if tls_cert is None else "tls_key", "tls_cert and tls_key go together"
        )
    server = ServerConfig(
        host=host,
        port=port,
        max_frame_bytes=r.integer("max_frame_bytes", 8 * 1024 * 1024, 1024, 256 * 1024 * 1024)
        or 8 * 1024 * 1024,
        tokens=_parse_tokens(r),
        allow_anonymous=r.boolean("allow_anonymous", False),
        allowed_origins=tuple(origins),
        tls_cert=tls_cert,
        tls_key=tls_key,
        max_viewers=r.integer("max_viewers", 200, 1, 100_000) or 200,
        max_viewers_per_address=r.integer("max_viewers_per_address", 20, 1, 100_000) or 20,
        max_messages_per_second=r.number("max_messages_per_second", 20.0, 0.1, 10_000.0),
        handshake_timeout=r.number("handshake_timeout", 10.0, 0.5, 300.0),
    )
    r.reject_unknown()
    if not _is_loopback_host(host) and not server.tokens and not server.allow_anonymous:
        raise r.error(
            "listen",
            f"{listen} is not a loopback address: configure [[server.tokens]] "
            "or set allow_anonymous = true explicitly",
        )
    return server


def _parse_cameras(top: _Reader, env: Mapping[str, str]) -> list[CameraConfig]:
    raw_cameras = top._get("cameras")
    if raw_cameras is None:
        return []
    if not isinstance(raw_cameras, list):
        raise top.error("cameras", "must be an array of tables ([[cameras]])")
    return [parse_camera(top.source, i, raw, env) for i, raw in enumerate(raw_cameras)]


def _check_unique(origins: list[tuple[CameraConfig, str, int]]) -> None:
    seen: dict[str, tuple[str, int]] = {}
    for camera, source, index in origins:
        if camera.id in seen:
            other_source, other_index = seen[camera.id]
            where = f"cameras[{other_index}]" + (
                "" if other_source == source else f" in {other_source}"
            )
            raise ConfigError(
                source, f"cameras[{index}].id", f"duplicate camera id {camera.id!r} (also {where})"
            )
        seen[camera.id] = (source, index)


def parse_config(data: Mapping[str, Any], source: str, env: Mapping[str, str]) -> Config:
    """Validate a decoded TOML document; ``env`` supplies the overrides."""
    top = _Reader(source, "", data)

    redis_table = _Reader(source, "redis", top.table_of("redis"))
    url = redis_table.string("url", None)
    enabled = redis_table.boolean("enabled", True)
    prefix = redis_table.string("channel_prefix", "video:") or "video:"
    password = _secret(redis_table, env)
    redis_table.reject_unknown()
    env_url = _redis_url_from_env(env)
    url = env_url or url or "redis://localhost:6379/0"
    if password is not None and not env_url and url.startswith(("redis://", "rediss://")):
        url = with_password(url, password)
    key = "REDIS_URL" if env_url else "redis.url"
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            source, key, f"must be a redis://, rediss:// or unix:// URL, got {redact_url(url)!r}"
        )
    try:
        parse_redis_url(url)  # type: ignore[no-untyped-call]  # fail here, not in every child
    except ValueError as exc:
        raise ConfigError(source, key, f"invalid Redis URL: {redact_url(str(exc))}") from None
    env_enabled = _env_flag(env, "VIDEO_STREAM_USE_REDIS")
    if env_enabled is not None:
        enabled = env_enabled
    if any(ch in prefix for ch in "*?[]") or not prefix:
        raise redis_table.error("channel_prefix", "must be a plain prefix without glob characters")

    server = _parse_server(_Reader(source, "server", top.table_of("server")))

    sup = _Reader(source, "supervisor", top.table_of("supervisor"))
    supervisor = SupervisorConfig(
        restart_delay_initial=sup.number("restart_delay_initial", 0.5, 0.01, 60.0),
        restart_delay_max=sup.number("restart_delay_max", 60.0, 0.1, 3600.0),
        stop_grace=sup.number("stop_grace", 5.0, 0.1, 120.0),
        stall_timeout=sup.number("stall_timeout", 10.0, 1.0, 3600.0),
        stable_after=sup.number("stable_after", 3.0, 0.0, 3600.0),
        shutdown_timeout=sup.number("shutdown_timeout", 10.0, 1.0, 600.0),
    )
    sup.reject_unknown()

    cameras = _parse_cameras(top, env)
    _check_unique([(c, source, i) for i, c in enumerate(cameras)])

    stats_interval = top.number("stats_interval", 10.0, 0.5, 3600.0)
    log_level = (top.string("log_level", "info") or "info").lower()
    if log_level not in {"debug", "info", "warning", "error"}:
        raise top.error("log_level", f"must be debug, info, warning or error, got {log_level!r}")
    top.reject_unknown()

    return Config(
        redis=RedisConfig(enabled=enabled, url=url, channel_prefix=prefix),
        server=server,
        supervisor=supervisor,
        cameras=tuple(cameras),
        log_level=log_level,
        stats_interval=stats_interval,
        source=source,
    )


def default_dropin_dir(path: Path) -> Path:
    """``/etc/streamd.toml`` → ``/etc/streamd.d``."""
    return path.parent / f"{path.stem}.d"


def _read_toml(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from None


def dropin_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.toml") if p.is_file())


def load_config(path: Path, env: Mapping[str, str], dropin_dir: Path | None = None) -> Config:
    """Read and validate ``path`` plus every ``*.toml`` drop-in (cameras only) in
    ``dropin_dir`` (default: ``/etc/streamd.d`` beside ``/etc/streamd.toml``).
    Every failure is a ``ConfigError`` naming the file and the key."""
    config = parse_config(_read_toml(path), str(path), env)
    origins = [(c, str(path), i) for i, c in enumerate(config.cameras)]
    for dropin in dropin_files(dropin_dir or default_dropin_dir(path)):
        reader = _Reader(str(dropin), "", _read_toml(dropin))
        cameras = _parse_cameras(reader, env)
        reader.reject_unknown()  # drop-ins hold [[cameras]] only
        origins += [(c, str(dropin), i) for i, c in enumerate(cameras)]
    _check_unique(origins)
    return replace(
        config,
        cameras=tuple(c for c, _, _ in origins),
        origins=tuple((c.id, source) for c, source, _ in origins),
    )
