"""What is wrong with a URL from the config, said without quoting it: a URL may
hold a password, and these words reach ``streamd check``, the reload log and the
control API's 422 body."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

from redis.connection import parse_url as parse_redis_url

REDIS_SCHEMES = ("redis", "rediss", "unix")
_ENCODE_HINT = "percent-encode / ? # @ and spaces in a password (%2F %3F %23 %40 %20)"
_SAFE_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,15}")
# redis-py's messages for a bad query value name only the argument: safe to repeat.
_SAFE_REDIS_MESSAGE = re.compile(r"Invalid value for '[a-z_]+' in connection URL\.")


def has_raw_whitespace(url: str) -> bool:
    return any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in url)


def redis_url_problem(url: str) -> str | None:
    """None for a Redis URL redis-py reads as written; else the problem in words."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in REDIS_SCHEMES:
        named = f", not {scheme}://" if sep and _SAFE_SCHEME.fullmatch(scheme) else ""
        return f"must be a redis://, rediss:// or unix:// URL{named}"
    if has_raw_whitespace(url):
        return f"invalid Redis URL: it contains a space or control character ({_ENCODE_HINT})"
    parts = urlsplit(url)
    if parts.fragment or url.endswith("#"):
        return f"invalid Redis URL: it contains '#' ({_ENCODE_HINT})"
    after_host = parts.path if scheme != "unix" else ""
    stray_query = any("=" not in item for item in parts.query.split("&") if item)
    if "@" in after_host or stray_query:
        return f"invalid Redis URL: its path or query does not parse ({_ENCODE_HINT})"
    try:
        parse_redis_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        message = str(exc)
        if _SAFE_REDIS_MESSAGE.fullmatch(message):
            return f"invalid Redis URL: {message}"
        if message.startswith("Port"):
            return f"invalid Redis URL: the port is not a number 0-65535 ({_ENCODE_HINT})"
        return f"invalid Redis URL: redis-py cannot parse it ({_ENCODE_HINT})"
    return None
