"""Native journald logging: each event as one datagram of journal fields, so that
``journalctl -u streamd CAMERA_ID=door -p warning`` works.

Used when stdout is journald's stream (``$JOURNAL_STREAM`` names stdout's device
and inode: the standard detection). Fields: ``MESSAGE``, ``PRIORITY`` (syslog
levels), ``SYSLOG_IDENTIFIER=streamd``, ``EVENT`` (the event name), and every
key/value of the event upper-cased (``camera_id`` → ``CAMERA_ID``); non-string
values are JSON. The wire format (``journal-native-protocol``): ``KEY=value\\n``,
or ``KEY\\n`` + 64-bit little-endian length + value + ``\\n`` when the value has
a newline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

from streamd.untrusted import is_ascii_digits

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SOCKET_OVERRIDE_ENV = "STREAMD_JOURNAL_SOCKET"  # for tests: a socket in place of journald's
PRIORITIES = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "exception": 3,
    "critical": 2,
}
_FIELD_INVALID = re.compile(r"[^A-Z0-9_]")
_SKIP = frozenset({"event", "level", "timestamp", "exc_info"})


def stdout_is_journal(stream: TextIO, env: Mapping[str, str]) -> bool:
    """True when ``stream`` is the journal stream systemd connected us to."""
    value = env.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not is_ascii_digits(device) or not is_ascii_digits(inode):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return stat.st_dev == int(device) and stat.st_ino == int(inode)


def field_name(key: str) -> str:
    name = _FIELD_INVALID.sub("_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = f"F_{name}"
    return name[:64]


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def encode_fields(fields: Mapping[str, str]) -> bytes:
    parts = []
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            parts.append(name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(name.encode() + b"=" + data + b"\n")
    return b"".join(parts)


def journal_fields(event: Mapping[str, Any], identifier: str = "streamd") -> dict[str, str]:
    level = str(event.get("level", "info"))
    name = str(event.get("event", ""))
    extras = {k: v for k, v in event.items() if k not in _SKIP}
    summary = " ".join(f"{k}={_value_text(v)}" for k, v in extras.items())
    fields = {
        "MESSAGE": f"{name} {summary}".strip(),
        "PRIORITY": str(PRIORITIES.get(level, 6)),
        "SYSLOG_IDENTIFIER": identifier,
        "EVENT": name,
    }
    if "exception" in event:
        fields["MESSAGE"] += "\n" + str(event["exception"])
    for key, value in extras.items():
        fields.setdefault(field_name(key), _value_text(value))
    return fields


class JournaldRenderer:
    """Last structlog processor: turns the event into a journal datagram."""

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> bytes:
        return encode_fields(journal_fields(event))


class JournaldLogger:
    """structlog logger that sends rendered datagrams; falls back to the stream
    (e.g. a message too large for one datagram) so nothing is lost."""

    def __init__(self, address: str, fallback: TextIO | None = None) -> None:
        self.address = address
        self.fallback = fallback or sys.stdout
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def msg(self, data: bytes) -> None:
        try:
            self._socket.sendto(data, self.address)
        except OSError:
            with contextlib.suppress(OSError, ValueError):
                self.fallback.write(data.decode("utf-8", "replace").replace("\n", " ") + "\n")
                self.fallback.flush()

    debug = info = warning = warn = error = critical = exception = fatal = failure = msg


class JournaldLoggerFactory:
    def __init__(self, env: Mapping[str, str], fallback: TextIO | None = None) -> None:
        self.address = env.get(SOCKET_OVERRIDE_ENV) or JOURNAL_SOCKET
        self.fallback = fallback
        self._logger: JournaldLogger | None = None

    def __call__(self, *args: Any) -> JournaldLogger:
        if self._logger is None:
            self._logger = JournaldLogger(self.address, self.fallback)
        return self._logger
