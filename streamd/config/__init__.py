"""Configuration: TOML file and drop-ins → frozen dataclasses, validated with
errors that name the file, the key and the problem, plus the environment
overrides the old system used.

``model`` holds the dataclasses (the only place a default is written),
``reader`` the typed reader of one table, ``sections`` the parsers of the
document and its cameras, ``server`` the ``[server]`` section, ``urls`` what is
wrong with a URL (never quoting it), ``environment`` the overrides, ``loading``
the files and their limits. Everything other modules use is importable from
here.
"""

from streamd.config.loading import default_dropin_dir, dropin_files, load_config, read_toml
from streamd.config.model import (
    CAMERA_ID_PATTERN,
    DEFAULT_CONFIG_PATH,
    CameraConfig,
    Config,
    ConfigError,
    DetectorConfig,
    EventsConfig,
    RedisConfig,
    ServerConfig,
    SupervisorConfig,
    TokenConfig,
    is_valid_camera_id,
)
from streamd.config.reader import TableReader, parse_listen
from streamd.config.sections import parse_camera, parse_config, validate_source

__all__ = [
    "CAMERA_ID_PATTERN",
    "DEFAULT_CONFIG_PATH",
    "CameraConfig",
    "Config",
    "ConfigError",
    "DetectorConfig",
    "EventsConfig",
    "RedisConfig",
    "ServerConfig",
    "SupervisorConfig",
    "TableReader",
    "TokenConfig",
    "default_dropin_dir",
    "dropin_files",
    "is_valid_camera_id",
    "load_config",
    "parse_camera",
    "parse_config",
    "parse_listen",
    "read_toml",
    "validate_source",
]
