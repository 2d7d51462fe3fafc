"""From a decoded TOML document to a ``Config``: one function per section,
each reading its keys through ``TableReader`` and leaving every missing key to
the dataclass default."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamd.config.environment import env_flag, redis_url_from_env
from streamd.config.events import parse_events
from streamd.config.model import (
    CAMERA_ID_PATTERN,
    EXTERNAL_SOURCE,
    CameraConfig,
    Config,
    ConfigError,
    DetectorConfig,
    RedisConfig,
    SupervisorConfig,
    is_valid_camera_id,
)
from streamd.config.reader import (
    TableReader,
    byte_size,
    display_text,
    present,
)
from streamd.config.server import parse_server
from streamd.config.urls import has_raw_whitespace, redis_url_problem
from streamd.credentials import SecretError, credential_path, read_secret, with_password
from streamd.untrusted import is_ascii_digits

_SOURCE_SCHEMES = ("synthetic:", "rtsp://", "rtsps://", "http://", "https://", "device:")
_PLUGIN_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_DISPLAY_TEXT = 200  # characters of a camera's name or location
_MIB = 1024 * 1024


def validate_source(source: str, key: str, value: str) -> None:
    if not value.strip():
        raise ConfigError(source, key, "must not be empty")
    if value.startswith("device:") and not is_ascii_digits(value[len("device:") :]):
        raise ConfigError(source, key, f"device sources look like device:0, got {value!r}")
    if "://" in value and not value.startswith(_SOURCE_SCHEMES):
        scheme = value.split("://", 1)[0]
        raise ConfigError(
            source, key, f"unsupported scheme {scheme!r} (use rtsp, http(s), a file path)"
        )
    if "://" in value and has_raw_whitespace(value):
        # A URL may hold a password: say what is wrong without quoting it.
        raise ConfigError(
            source, key, "a URL must not contain spaces or control characters (percent-encode: %20)"
        )


def _secret(r: TableReader, env: Mapping[str, str]) -> str | None:
    """The password named by ``password_file`` or ``password_credential``, if any."""
    from_file = r.string("password_file")
    credential = r.string("password_credential")
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


# --- cameras -------------------------------------------------------------------------


def parse_camera(
    source: str, index: int, raw: Any, env: Mapping[str, str] | None = None
) -> CameraConfig:
    prefix = f"cameras[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix, "must be a table ([[cameras]])")
    r = TableReader(source, prefix, raw)
    camera_id = r.required_string("id")
    if not is_valid_camera_id(camera_id):
        raise r.error("id", f"{camera_id!r} is not a valid camera id ({CAMERA_ID_PATTERN.pattern})")
    cam_source = r.required_string("source")
    validate_source(source, r.key("source"), cam_source)
    detect_source = r.string("detect_source")
    if detect_source is not None:
        validate_source(source, r.key("detect_source"), detect_source)
        if not _demuxable(detect_source) or cam_source == EXTERNAL_SOURCE:
            raise r.error("detect_source", "must be a camera stream (rtsp, http(s), a file)")
    username = r.string("username")
    password = _secret(r, env or {})
    if password is not None or username is not None:
        if "://" not in cam_source:
            raise r.error(
                "password_file", "credentials apply to rtsp:// and http(s):// sources only"
            )
        if password is None:
            raise r.error("username", "needs password_file or password_credential")
        cam_source = with_password(cam_source, password, username)
        if detect_source is not None and "://" in detect_source:
            # The same camera, the same account.
            detect_source = with_password(detect_source, password, username)
    passthrough = r.boolean("passthrough")
    if passthrough and not _demuxable(cam_source):
        raise r.error("passthrough", "needs an rtsp, http(s) or file source (H.264/H.265)")
    camera = CameraConfig(
        id=camera_id,
        source=cam_source,
        **present(
            fps=r.number("fps", 0.1, 120.0),
            width=r.integer("width", 16, 7680),
            jpeg_quality=r.integer("jpeg_quality", 1, 100),
            loop=r.boolean("loop"),
            name=display_text(r, "name", MAX_DISPLAY_TEXT),
            location=display_text(r, "location", MAX_DISPLAY_TEXT),
            detect_source=detect_source,
            passthrough=passthrough,
        ),
        detection=_parse_detection(r),
    )
    r.reject_unknown()
    return camera


def _demuxable(source: str) -> bool:
    return not source.startswith(("synthetic:", "device:", EXTERNAL_SOURCE))


def _parse_zones(r: TableReader) -> tuple[tuple[tuple[float, float], ...], ...] | None:
    raw = r.value("ignore_zones")
    if raw is None:
        return None
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


def _parse_labels(r: TableReader) -> tuple[str, ...] | str | None:
    raw = r.value("labels")
    if isinstance(raw, str) and raw.strip():
        return raw
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return tuple(raw)
    if raw is None:
        return None
    raise r.error("labels", "must be a list of names or the path of a file with one per line")


def _parse_detection(r: TableReader) -> DetectorConfig:
    kind = r.string("detector")
    builtin = ("motion", "none", "onnx")
    if kind is not None and kind not in builtin and not _PLUGIN_SPEC.fullmatch(kind):
        raise r.error(
            "detector", f'must be "motion", "none", "onnx" or "module:attribute", got {kind!r}'
        )
    detection = DetectorConfig(
        **present(
            kind=kind,
            detect_fps=r.number("detect_fps", 0.01, 120.0),
            overlay=r.boolean("overlay"),
            overlay_timestamp=r.boolean("overlay_timestamp"),
            motion_min_area=r.integer("motion_min_area", 1, 100_000_000),
            motion_warmup=r.number("motion_warmup", 0.0, 600.0),
            ignore_zones=_parse_zones(r),
            model=r.string("model"),
            labels=_parse_labels(r),
            input_size=r.integer("input_size", 32, 4096),
            score_threshold=r.number("score_threshold", 0.0, 1.0),
            nms_threshold=r.number("nms_threshold", 0.0, 1.0),
            event_clear_after=r.number("event_clear_after", 0.0, 3600.0),
        )
    )
    if detection.kind == "onnx" and detection.model is None:
        raise r.error("model", 'is required with detector = "onnx"')
    return detection


def parse_cameras(
    top: TableReader, env: Mapping[str, str], room: int, cap: int
) -> list[CameraConfig]:
    """The file's ``[[cameras]]``, refused before parsing any when there are more
    than ``room`` (what ``cap``, ``[supervisor] max_cameras``, leaves)."""
    raw_cameras = top.array("cameras", "must be an array of tables ([[cameras]])") or []
    if len(raw_cameras) > room:
        counted = f"{len(raw_cameras)} cameras" if room == cap else "the cameras of this file"
        raise top.error(
            "cameras",
            f"{counted} is more than [supervisor] max_cameras = {cap} for this node "
            "(main file and drop-ins together)",
        )
    return [parse_camera(top.source, i, raw, env) for i, raw in enumerate(raw_cameras)]


def check_unique(origins: list[tuple[CameraConfig, str, int]]) -> None:
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


# --- redis and supervisor ----------------------------------------------------------


def _parse_redis(r: TableReader, env: Mapping[str, str]) -> RedisConfig:
    file_url = r.string("url")
    enabled = r.boolean("enabled")
    prefix = r.string("channel_prefix")
    password = _secret(r, env)
    cluster = r.boolean("cluster")
    nodes = r.strings("startup_nodes", 'must be a list like ["redis://10.0.0.2:7000"]')
    startup_nodes = None if nodes is None else list(nodes)
    lease = r.number("lease", 1.0, 300.0)
    node_name = r.string("node_name")
    r.reject_unknown()
    if node_name is not None and not is_valid_camera_id(node_name):
        raise r.error(
            "node_name", f"{node_name!r} must look like a camera id ({CAMERA_ID_PATTERN.pattern})"
        )
    for index, node in enumerate(nodes or ()):
        node_problem = redis_url_problem(node)
        if node_problem is not None:
            raise ConfigError(r.source, r.key(f"startup_nodes[{index}]"), node_problem)
        if startup_nodes is not None and password is not None and node.startswith("redis"):
            startup_nodes[index] = with_password(node, password)
    if prefix is not None and any(ch in prefix for ch in "*?[]"):
        raise r.error("channel_prefix", "must be a plain prefix without glob characters")
    env_url = redis_url_from_env(env)
    url = env_url or file_url or RedisConfig.url
    if password is not None and not env_url and url.startswith(("redis://", "rediss://")):
        url = with_password(url, password)
    key = "REDIS_URL" if env_url else r.key("url")
    problem = redis_url_problem(url)  # fail here, not in every child
    if problem is not None:
        raise ConfigError(r.source, key, problem)
    env_enabled = env_flag(env, "VIDEO_STREAM_USE_REDIS")
    return RedisConfig(
        url=url,
        **present(
            enabled=enabled if env_enabled is None else env_enabled,
            channel_prefix=prefix,
            cluster=cluster if cluster is not None else (True if startup_nodes else None),
            startup_nodes=None if startup_nodes is None else tuple(startup_nodes),
            lease=lease,
            node_name=node_name,
        ),
    )


def _parse_supervisor(r: TableReader) -> SupervisorConfig:
    supervisor = SupervisorConfig(
        **present(
            restart_delay_initial=r.number("restart_delay_initial", 0.01, 60.0),
            restart_delay_max=r.number("restart_delay_max", 0.1, 3600.0),
            stop_grace=r.number("stop_grace", 0.1, 120.0),
            stall_timeout=r.number("stall_timeout", 1.0, 3600.0),
            start_timeout=r.number("start_timeout", 1.0, 3600.0),
            max_starting=r.integer("max_starting", 0, 10_000),
            fork_server=r.boolean("fork_server"),
            stable_after=r.number("stable_after", 0.0, 3600.0),
            shutdown_timeout=r.number("shutdown_timeout", 1.0, 600.0),
            max_cameras=r.integer("max_cameras", 1, 100_000),
            child_memory_max=byte_size(r, "child_memory_max", 32 * _MIB, 1024**4),
        )
    )
    r.reject_unknown()
    return supervisor


def parse_config(data: Mapping[str, Any], source: str, env: Mapping[str, str]) -> Config:
    """Validate a decoded TOML document; ``env`` supplies the overrides."""
    top = TableReader(source, "", data)
    redis = _parse_redis(top.table_of("redis"), env)
    server = parse_server(top.table_of("server"))
    supervisor = _parse_supervisor(top.table_of("supervisor"))
    events = parse_events(top.table_of("events"))
    cap = supervisor.max_cameras
    cameras = parse_cameras(top, env, room=cap, cap=cap)
    check_unique([(c, source, i) for i, c in enumerate(cameras)])
    stats_interval = top.number("stats_interval", 0.5, 3600.0)
    log_level = top.string("log_level")
    if log_level is not None:
        log_level = log_level.lower()
        if log_level not in _LOG_LEVELS:
            raise top.error(
                "log_level", f"must be debug, info, warning or error, got {log_level!r}"
            )
    config = Config(
        redis=redis,
        server=server,
        supervisor=supervisor,
        events=events,
        cameras=tuple(cameras),
        source=source,
        **present(log_level=log_level, stats_interval=stats_interval),
    )
    top.reject_unknown()
    return config
