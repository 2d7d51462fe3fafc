"""The ``[events]`` section: how long detection events and their snapshots are kept."""

from __future__ import annotations

import re

from streamd.config.model import EventsConfig
from streamd.config.reader import TableReader, byte_size, present

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)", re.ASCII)
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
MAX_RETENTION_S = 366 * 86400.0


def duration(r: TableReader, name: str, low: float, high: float) -> float | None:
    """Seconds from a number or a string like ``"7d"``, ``"12h"``, ``"90s"``."""
    value = r.value(name)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise r.error(name, 'must be seconds or a duration like "7d", "12h", "30m", "90s"')
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not low <= seconds <= high:
        raise r.error(name, f"must be between {low:g} s and {high:g} s, got {seconds:g} s")
    return seconds


def parse_events(r: TableReader) -> EventsConfig:
    events = EventsConfig(
        **present(
            retention=duration(r, "retention", 1.0, MAX_RETENTION_S),
            max_events=r.integer("max_events", 1, 10_000_000),
            snapshot_max_bytes=byte_size(r, "snapshot_max_bytes", 4096, 16 * 1024 * 1024),
            max_snapshots=r.integer("max_snapshots", 0, 1_000_000),
            backlog=r.integer("backlog", 1, 10_000),
            directory=r.string("directory"),
        )
    )
    r.reject_unknown()
    return events
