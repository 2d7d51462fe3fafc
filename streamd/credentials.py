"""Secrets kept out of the TOML: read from a file or from systemd's
``LoadCredential=`` directory (``$CREDENTIALS_DIRECTORY``), then put into the URL
that needs them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from streamd.errors import StreamdError


class SecretError(StreamdError, ValueError):
    """The secret could not be read; the message names the path, never the value."""


def credential_path(name: str, env: Mapping[str, str]) -> Path:
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SecretError("CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)")
    if not name or "/" in name or name in (".", ".."):
        raise SecretError(f"invalid credential name {name!r}")
    return Path(directory) / name


MAX_SECRET_BYTES = 64 * 1024  # a password, not /dev/zero


def read_secret(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise SecretError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:  # a NUL byte in the path
        raise SecretError(f"invalid path {str(path)!r}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(f"{path} is larger than {MAX_SECRET_BYTES} bytes: not a password file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{path} is not UTF-8 text") from None
    secret = text.rstrip("\r\n")  # files written with echo end in a newline
    if not secret:
        raise SecretError(f"{path} is empty")
    return secret


def with_password(url: str, password: str, username: str | None = None) -> str:
    """``url`` with its userinfo replaced by ``username:password`` (percent-encoded)."""
    parts = urlsplit(url)
    user = username if username is not None else (parts.username or "")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return urlunsplit((parts.scheme, userinfo + host, parts.path, parts.query, parts.fragment))
