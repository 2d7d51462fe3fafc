"""Environment overrides the old system used: ``VIDEO_STREAM_USE_REDIS``,
``REDIS_URL``, or ``REDIS_HOST``/``PORT``/``DB``/``PASSWORD``. An empty
variable counts as unset (``Environment=REDIS_URL=`` in a unit clears it)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from streamd.config.model import ConfigError

_FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
# What an unset part of REDIS_HOST/PORT/DB means once any of them is set.
_REDIS_PART_DEFAULTS = {"REDIS_HOST": "localhost", "REDIS_PORT": "6379", "REDIS_DB": "0"}


def redis_url_from_env(env: Mapping[str, str]) -> str | None:
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    if not any(env.get(name) for name in (*_REDIS_PART_DEFAULTS, "REDIS_PASSWORD")):
        return None
    host, port, db = (env.get(name) or default for name, default in _REDIS_PART_DEFAULTS.items())
    password = env.get("REDIS_PASSWORD")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


def env_flag(env: Mapping[str, str], name: str) -> bool | None:
    value = env.get(name)
    if not value:
        return None
    word = value.strip().lower()
    if word in _FALSE_WORDS:
        return False
    if word in _TRUE_WORDS:
        return True
    raise ConfigError(
        f"environment {name}", "", f"must be 1/0, true/false or yes/no, got {value!r}"
    )
