"""Each camera's recent log records, kept by the supervisor in a bounded ring
for ``GET /api/v1/cameras/{id}/logs`` (the journal keeps everything; this is
what an operator's browser can see without shell access).

What goes in: what the supervisor itself sees of the camera, as it logs it:
its child started, exited (with the code), stalled, passed the memory cap, was
replaced, sent a bad heartbeat or control message; the source state changes
the child reports in its heartbeats (``live``, ``reconnecting``, …) and a
detector failure it reports there; starts and stops asked for through the API.
The child's own log lines go straight to the journal (its stderr is the
service's), not through the supervisor, so they are not in the ring.

Bounded twice: ``MAX_RECORDS`` records per camera (oldest dropped), and every
text value cut to ``MAX_TEXT`` characters, URLs redacted (a source URL may hold
a password).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from streamd.redact import redact_url

MAX_RECORDS = 200
MAX_TEXT = 300
DEFAULT_LINES = 50


@dataclass(frozen=True)
class LogRecord:
    time: float  # Unix seconds
    level: str
    message: str
    fields: tuple[tuple[str, str | int | float | bool | None], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "time": round(self.time, 3),
            "level": self.level,
            "message": self.message,
            **dict(self.fields),
        }


def _value(value: object) -> str | int | float | bool | None:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_url(str(value))[:MAX_TEXT]


class CameraLog:
    """One camera's ring of recent records (oldest dropped past ``MAX_RECORDS``)."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self.records: deque[LogRecord] = deque(maxlen=max_records)

    def add(self, level: str, message: str, **fields: object) -> None:
        values = tuple((k, _value(v)) for k, v in list(fields.items())[:16])
        self.records.append(LogRecord(time.time(), level, message[:MAX_TEXT], values))

    def tail(self, lines: int) -> list[dict[str, Any]]:
        """The newest ``lines`` records, oldest first."""
        if lines <= 0:
            return []
        return [r.to_json() for r in list(self.records)[-lines:]]


class RecordingLogger:
    """A bound structlog logger that also keeps each record in a ``CameraLog``."""

    def __init__(self, logger: Any, ring: CameraLog) -> None:
        self.logger = logger
        self.ring = ring

    def info(self, message: str, **fields: Any) -> None:
        self.logger.info(message, **fields)
        self.ring.add("info", message, **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self.logger.warning(message, **fields)
        self.ring.add("warning", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self.logger.error(message, **fields)
        self.ring.add("error", message, **fields)


def parse_lines(values: list[str], maximum: int = MAX_RECORDS) -> int | str:
    """``?lines=N``: ASCII digits only (``int()`` would take ``٣`` or ``+3``),
    at least 1, clamped to ``maximum``; a problem in words otherwise."""
    if not values:
        return DEFAULT_LINES
    if len(values) > 1:
        return "give lines once"
    raw = values[0]
    if not raw or not (raw.isascii() and raw.isdigit()):
        return f"lines must be a whole number from 1 to {maximum} (ASCII digits)"
    if len(raw) > 9:  # clamp without converting an arbitrarily long number
        return maximum
    lines = int(raw)
    if lines < 1:
        return f"lines must be a whole number from 1 to {maximum} (ASCII digits)"
    return min(lines, maximum)
