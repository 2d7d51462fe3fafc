"""The ``[server]`` section: where to listen, who may watch and control
(tokens, the admin token), which Host names and origins are accepted, limits."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from streamd.config.model import ServerConfig, TokenConfig, is_valid_camera_id
from streamd.config.reader import TableReader, is_host_name, parse_listen, present

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SHA256_PROBLEM = "must be 64 lowercase hex digits: printf %s TOKEN | sha256sum"


def _sha256_hex(r: TableReader, name: str) -> str | None:
    digest = r.string(name)
    if digest is not None and not _SHA256_HEX.fullmatch(digest):
        raise r.error(name, _SHA256_PROBLEM)
    return digest


def _server_names(r: TableReader) -> tuple[str, ...] | None:
    names = r.strings("server_names", 'must be a list of host names like ["cams.example.com"]')
    if names is None:
        return None
    for index, name in enumerate(names):
        if not is_host_name(name.removesuffix(".")):
            raise r.error(
                f"server_names[{index}]",
                'must be a host name like "cams.example.com" or "*.example.com" '
                f"(no scheme, port, path or other wildcard), got {name!r}",
            )
    return tuple(name.removesuffix(".").lower() for name in names)


def _parse_tokens(r: TableReader) -> tuple[TokenConfig, ...]:
    tokens = []
    raw = r.array("tokens", "must be an array of tables ([[server.tokens]])") or []
    for index, table in enumerate(raw):
        if not isinstance(table, dict):
            raise r.error(f"tokens[{index}]", "must be a table")
        t = TableReader(r.source, r.key(f"tokens[{index}]"), table)
        digest = _sha256_hex(t, "sha256")
        if digest is None:
            raise t.error("sha256", _SHA256_PROBLEM)
        cameras = t.value("cameras")
        if cameras is not None and (
            not isinstance(cameras, list)
            or not all(isinstance(c, str) and (c == "*" or is_valid_camera_id(c)) for c in cameras)
        ):
            raise t.error("cameras", 'must be a list of camera ids or ["*"]')
        tokens.append(
            TokenConfig(
                name=t.string("name") or f"token{index}",  # unnamed tokens are numbered
                sha256=digest,
                **present(
                    cameras=None if cameras is None else tuple(cameras), admin=t.boolean("admin")
                ),
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


def parse_server(r: TableReader) -> ServerConfig:
    listen = r.string("listen")
    host, port = (None, None) if listen is None else parse_listen(r.source, r.key("listen"), listen)
    origins = r.strings("allowed_origins", 'must be a list like ["https://wall.example.com"]')
    tls_cert, tls_key = r.string("tls_cert"), r.string("tls_key")
    if (tls_cert is None) != (tls_key is None):
        raise r.error(
            "tls_cert" if tls_cert is None else "tls_key", "tls_cert and tls_key go together"
        )
    server = ServerConfig(
        **present(
            enabled=r.boolean("enabled"),
            host=host,
            port=port,
            max_frame_bytes=r.integer("max_frame_bytes", 1024, 256 * 1024 * 1024),
            tokens=_parse_tokens(r),
            allow_anonymous=r.boolean("allow_anonymous"),
            allowed_origins=origins,
            tls_cert=tls_cert,
            tls_key=tls_key,
            max_viewers=r.integer("max_viewers", 1, 100_000),
            max_viewers_per_address=r.integer("max_viewers_per_address", 1, 100_000),
            max_messages_per_second=r.number("max_messages_per_second", 0.1, 10_000.0),
            handshake_timeout=r.number("handshake_timeout", 0.5, 300.0),
            server_names=_server_names(r),
            admin_token_sha256=_sha256_hex(r, "admin_token_sha256"),
        )
    )
    r.reject_unknown()
    if not _is_loopback_host(server.host) and not server.tokens and not server.allow_anonymous:
        raise r.error(
            "listen",
            f"{listen} is not a loopback address: configure [[server.tokens]] "
            "or set allow_anonymous = true explicitly",
        )
    return server


# Applied by a reload (the gateway reads them per request, and closes open
# WebSockets that lose access); the rest needs a restart (the listening socket,
# TLS, the subscriber's message bound).
RELOADABLE = (
    "tokens",
    "allow_anonymous",
    "allowed_origins",
    "admin_token_sha256",
    "server_names",
    "max_viewers",
    "max_viewers_per_address",
    "max_messages_per_second",
    "handshake_timeout",
)
RESTART_ONLY = ("enabled", "host", "port", "tls_cert", "tls_key", "max_frame_bytes")
_ACCESS = ("tokens", "allow_anonymous")


@dataclass(frozen=True)
class ServerReload:
    server: ServerConfig  # what runs from now on
    applied: tuple[str, ...]  # keys changed and applied now
    pending: tuple[str, ...]  # keys changed that wait for a restart (or were refused)


def reload_server(old: ServerConfig, new: ServerConfig) -> ServerReload:
    """What a reload may apply of ``[server]`` (pure). Access settings apply at
    once, so a revoked token stops working without a restart. They are checked
    against the address still listened on: tokens removed from a non-loopback
    listener without ``allow_anonymous`` would open it to everyone, so then the
    running access settings are kept (and reported as not applied)."""
    changes = {
        name: getattr(new, name) for name in RELOADABLE if getattr(old, name) != getattr(new, name)
    }
    pending = [
        "listen" if name in ("host", "port") else name
        for name in RESTART_ONLY
        if getattr(old, name) != getattr(new, name)
    ]
    tokens = changes.get("tokens", old.tokens)
    anonymous = changes.get("allow_anonymous", old.allow_anonymous)
    if not _is_loopback_host(old.host) and not tokens and not anonymous:
        pending += [name for name in _ACCESS if name in changes]
        for name in _ACCESS:
            changes.pop(name, None)
    return ServerReload(
        replace(old, **changes),
        tuple(f"server.{name}" for name in changes),
        tuple(f"server.{name}" for name in dict.fromkeys(pending)),
    )
