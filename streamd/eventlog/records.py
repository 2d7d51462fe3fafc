"""Kept events, pure: stream ids, stream entries and their validation, the
events API's query and the filtering scan (no I/O; unit-tested).

A stream entry (``XADD streamd:events``) has the fields ``camera``, ``time``
(seconds, text), ``labels`` (comma-joined), ``event`` (the event's JSON, boxes
included) and ``snapshot`` (``1`` when ``streamd:snapshot:{entry id}`` holds the
JPEG; in a Redis Cluster the keys are ``streamd:{events}`` and
``streamd:{events}:snapshot:{entry id}``, see ``EventKeys``). Anyone who can
write to Redis can write junk there: ``decode_entry`` returns None for anything
that is not such an entry, and callers count it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from streamd.config import is_valid_camera_id
from streamd.errors import StreamdError
from streamd.untrusted import ascii_decimal, ascii_int, loads

STREAM_KEY = "streamd:events"
SNAPSHOT_PREFIX = "streamd:snapshot:"
SNAPSHOT_INDEX_KEY = "streamd:snapshots"  # ids of kept snapshots, oldest first
STREAM_ID = re.compile(r"([0-9]{1,19})-([0-9]{1,19})", re.ASCII)  # \d would match "٣"
MAX_EVENT_JSON = 64 * 1024
MAX_LIMIT = 500
DEFAULT_LIMIT = 100
MAX_LABEL = 64
_MAX_U64 = 2**64 - 1


@dataclass(frozen=True)
class EventKeys:
    """Where kept events live: the stream, the snapshot keys (prefix + entry id)
    and the index of kept snapshots. In a Redis Cluster every key carries the
    hash tag ``{events}``, so all of them share one slot and one Lua script can
    write them; one Redis keeps the names it always had."""

    stream: str
    snapshot_prefix: str
    snapshot_index: str

    def snapshot(self, event_id: str) -> str:
        return self.snapshot_prefix + event_id

    @property
    def all_names(self) -> tuple[str, ...]:
        return (self.stream, self.snapshot_prefix, self.snapshot_index)


SINGLE_KEYS = EventKeys(STREAM_KEY, SNAPSHOT_PREFIX, SNAPSHOT_INDEX_KEY)
CLUSTER_KEYS = EventKeys(
    "streamd:{events}", "streamd:{events}:snapshot:", "streamd:{events}:snapshots"
)


def event_keys(cluster: bool) -> EventKeys:
    return CLUSTER_KEYS if cluster else SINGLE_KEYS


class QueryError(StreamdError, ValueError):
    """A bad events query parameter; the message names it (a 400 for the client)."""


def parse_stream_id(text: str) -> tuple[int, int] | None:
    """``ms-seq`` as two integers, or None (globs, ``*``, ``-``/``+``, overflow)."""
    match = STREAM_ID.fullmatch(text)
    if match is None:
        return None
    ms, seq = int(match.group(1)), int(match.group(2))
    return (ms, seq) if ms <= _MAX_U64 and seq <= _MAX_U64 else None


def format_stream_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


@dataclass(frozen=True)
class EventRecord:
    id: str
    camera: str
    time: float
    labels: tuple[str, ...]
    event: Mapping[str, Any]  # the detection event as the child sent it
    has_snapshot: bool

    def to_json(self) -> dict[str, Any]:
        out = dict(self.event)
        out.update(
            id=self.id,
            camera_id=self.camera,
            time=self.time,
            labels=list(self.labels),
            snapshot=f"/api/events/{self.id}/snapshot.jpg" if self.has_snapshot else None,
        )
        return out


def entry_fields(event: Mapping[str, Any], has_snapshot: bool) -> dict[str, str]:
    """The stream entry's fields for a detection event (``DetectionEvent.to_json``)."""
    return {
        "camera": str(event["camera_id"]),
        "time": repr(float(event["time"])),
        "labels": ",".join(event.get("labels", [])),
        "event": json.dumps(event, separators=(",", ":")),
        "snapshot": "1" if has_snapshot else "0",
    }


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def decode_entry(entry_id: Any, fields: Any) -> EventRecord | None:
    """An untrusted stream entry as a record, or None when it is junk."""
    ident = _text(entry_id)
    if ident is None or parse_stream_id(ident) is None or not isinstance(fields, Mapping):
        return None
    values = {_text(k): _text(v) for k, v in fields.items()}
    camera, raw_time, raw_event = values.get("camera"), values.get("time"), values.get("event")
    if camera is None or not is_valid_camera_id(camera) or raw_time is None or raw_event is None:
        return None
    if not raw_time.isascii():  # float() reads "٣" as 3
        return None
    if len(raw_event) > MAX_EVENT_JSON:
        return None
    try:
        when = float(raw_time)
        event = loads(raw_event)  # no NaN: it would make every answer carrying it invalid
    except (ValueError, RecursionError):
        return None
    if not math.isfinite(when) or not isinstance(event, dict):
        return None
    if event.get("camera_id") != camera:
        return None
    labels = tuple(
        label for label in (values.get("labels") or "").split(",") if label and len(label) <= 64
    )
    return EventRecord(ident, camera, when, labels, event, values.get("snapshot") == "1")


@dataclass(frozen=True)
class EventQuery:
    cameras: frozenset[str] | None = None  # None: every camera the caller may see
    after: str | None = None  # exclusive stream id (the cursor, or a replay's last id)
    since_ms: int | None = None
    until_ms: int | None = None
    label: str | None = None
    limit: int = DEFAULT_LIMIT

    def start(self) -> str:
        """XRANGE's start: the later of the cursor (exclusive) and ``since``."""
        after = parse_stream_id(self.after) if self.after else None
        if after is not None and (self.since_ms is None or after[0] >= self.since_ms):
            return "(" + format_stream_id(*after)
        return str(self.since_ms) if self.since_ms is not None else "-"

    def end(self) -> str:
        return str(self.until_ms) if self.until_ms is not None else "+"

    def matches(self, record: EventRecord, allowed: Callable[[str], bool]) -> bool:
        if self.cameras is not None and record.camera not in self.cameras:
            return False
        if self.label is not None and self.label not in record.labels:
            return False
        return allowed(record.camera)


def _time_ms(name: str, value: str) -> int:
    """Unix seconds (``1732860000.5``) or ISO 8601 with a zone (``2026-11-29T03:00:00Z``)."""
    decimal = ascii_decimal(value)  # float() would take "٣", "nan", "1_0" and " 1"
    if decimal is not None:
        seconds = decimal
    else:
        if not value.isascii():
            raise QueryError(f"{name} must be unix seconds or an ISO 8601 time with a zone")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise QueryError(
                f"{name} must be unix seconds or an ISO 8601 time with a zone"
            ) from None
        if parsed.tzinfo is None:
            raise QueryError(f"{name} needs a time zone (e.g. Z or +01:00)") from None
        seconds = parsed.timestamp()
    if not math.isfinite(seconds) or not 0 <= seconds < 2**42 / 1000:
        raise QueryError(f"{name} is out of range")
    return int(seconds * 1000)


_PARAMS = frozenset({"camera", "since", "until", "label", "limit", "cursor", "token"})
MAX_PARAM_LENGTH = 256


def parse_query(params: Iterable[tuple[str, str]]) -> EventQuery:
    """``/api/events`` query parameters → ``EventQuery``; QueryError names the problem."""
    seen: dict[str, str] = {}
    for name, value in params:
        if name not in _PARAMS:
            raise QueryError(f"unknown parameter {name[:40]!r}")
        if name in seen:
            raise QueryError(f"parameter {name} given twice")
        if len(value) > MAX_PARAM_LENGTH:
            raise QueryError(f"parameter {name} is longer than {MAX_PARAM_LENGTH} characters")
        seen[name] = value
    cameras = None
    if "camera" in seen:
        names = seen["camera"].split(",")
        if not all(is_valid_camera_id(c) for c in names):
            raise QueryError("camera must be a camera id or a comma-separated list of them")
        cameras = frozenset(names)
    cursor = seen.get("cursor")
    if cursor is not None and parse_stream_id(cursor) is None:
        raise QueryError("cursor must be an event id like 1732860000000-0")
    label = seen.get("label")
    if label is not None and not 0 < len(label) <= MAX_LABEL:
        raise QueryError(f"label must be 1 to {MAX_LABEL} characters")
    limit = DEFAULT_LIMIT
    if "limit" in seen:
        parsed = ascii_int(seen["limit"], 1, MAX_LIMIT, max_digits=6)
        if parsed is None:
            raise QueryError(f"limit must be an integer from 1 to {MAX_LIMIT}")
        limit = parsed
    since = _time_ms("since", seen["since"]) if "since" in seen else None
    until = _time_ms("until", seen["until"]) if "until" in seen else None
    if since is not None and until is not None and until < since:
        raise QueryError("until is before since")
    return EventQuery(cameras, cursor, since, until, label, limit)


@dataclass
class Page:
    events: list[EventRecord]
    cursor: str | None  # pass as ?cursor= for the next page; None: nothing more now
    junk: int = 0  # entries that were not events (skipped, counted)


class PageBuilder:
    """Fills a page from entries in id order, within a bound on entries examined."""

    def __init__(self, query: EventQuery, allowed: Callable[[str], bool], max_scan: int) -> None:
        self.query = query
        self.allowed = allowed
        self.max_scan = max_scan
        self.page = Page([], None)
        self.scanned = 0
        self.last_id: str | None = None

    @property
    def done(self) -> bool:
        return len(self.page.events) >= self.query.limit or self.scanned >= self.max_scan

    def feed(self, entry_id: str, record: EventRecord | None) -> None:
        self.scanned += 1
        self.last_id = entry_id
        if record is None:
            self.page.junk += 1
        elif self.query.matches(record, self.allowed):
            self.page.events.append(record)

    def finish(self, exhausted: bool) -> Page:
        """``exhausted``: the range has no more entries after the last one fed."""
        self.page.cursor = None if exhausted and not self.done else self.last_id
        return self.page


class EventStore(Protocol):
    """Where kept events are read: ``redis_log.RedisEventStore`` or
    ``local_log.LocalEventLog`` (the gateway's events API and replays)."""

    junk: int  # entries skipped so far that were not events

    async def query(self, query: EventQuery, allowed: Callable[[str], bool]) -> Page: ...

    async def get(self, event_id: str) -> EventRecord | None: ...

    async def snapshot(self, record: EventRecord) -> bytes | None: ...
