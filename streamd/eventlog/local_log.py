"""Events kept without Redis (embedded mode): a bounded ring in the daemon, and
a bounded directory so they survive a restart.

The directory holds two JSON-lines segments (``events.jsonl``, rotated to
``events.1.jsonl`` after ``segment_lines`` lines) and one ``{id}.jpg`` per kept
snapshot (at most ``max_snapshots``, each at most ``snapshot_max_bytes``): disk
use is bounded by count and bytes. Ids have the stream's form (``ms-seq``), so
the API, cursors and ``/ws`` replay work the same with or without Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from streamd.config import EventsConfig
from streamd.eventlog.records import (
    EventQuery,
    EventRecord,
    Page,
    PageBuilder,
    decode_entry,
    entry_fields,
    format_stream_id,
    parse_stream_id,
)

log = structlog.get_logger("streamd.events")
MAX_RING = 10_000  # events kept in memory without Redis, whatever max_events says
SEGMENT = "events.jsonl"
OLD_SEGMENT = "events.1.jsonl"


def default_directory(env: Mapping[str, str]) -> Path:
    """``$STATE_DIRECTORY/events`` under systemd (``StateDirectory=``), else the
    XDG state directory (``/var/lib/streamd/events`` for root)."""
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / "events"
    if os.geteuid() == 0:
        return Path("/var/lib/streamd/events")
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "streamd" / "events"


class LocalEventLog:
    def __init__(self, config: EventsConfig, directory: Path | None) -> None:
        self.config = config
        self.capacity = min(config.max_events, MAX_RING)
        self.ring: deque[EventRecord] = deque(maxlen=self.capacity)
        self.snapshots: deque[str] = deque()  # ids with a file, oldest first
        self.segment_lines = max(1, self.capacity // 2)
        self.junk = 0
        self._lines = 0
        self._last = (0, 0)
        self.directory = self._prepare(directory)

    # --- disk ------------------------------------------------------------------
    def _prepare(self, directory: Path | None) -> Path | None:
        if directory is None:
            return None
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._load(directory)
        except OSError as exc:
            log.error(
                "events directory unusable; keeping events in memory only",
                directory=str(directory),
                error=str(exc),
            )
            return None
        return directory

    def _load(self, directory: Path) -> None:
        for name in (OLD_SEGMENT, SEGMENT):
            path = directory / name
            if not path.exists():
                continue
            with path.open("rb") as lines:
                for line in lines:
                    self._lines += name == SEGMENT
                    try:
                        item = json.loads(line)
                        record = decode_entry(item["id"], item["fields"])
                    except (ValueError, KeyError, TypeError):
                        record = None
                    if record is None:
                        self.junk += 1
                        continue
                    self.ring.append(record)
        if self.ring:
            last = parse_stream_id(self.ring[-1].id)
            self._last = last if last is not None else (0, 0)
        known = {r.id for r in self.ring if r.has_snapshot}
        files = sorted(directory.glob("*.jpg"), key=lambda p: parse_stream_id(p.stem) or (0, 0))
        for path in files:
            if path.stem in known:
                self.snapshots.append(path.stem)
            else:
                path.unlink(missing_ok=True)  # its event is gone
        self._expire(time.time())

    def _write_line(self, record_id: str, fields: dict[str, str]) -> None:
        assert self.directory is not None
        if self._lines >= self.segment_lines:
            os.replace(self.directory / SEGMENT, self.directory / OLD_SEGMENT)
            self._lines = 0
        line = json.dumps({"id": record_id, "fields": fields}, separators=(",", ":")) + "\n"
        with (self.directory / SEGMENT).open("a", encoding="utf-8") as out:
            out.write(line)
        self._lines += 1

    # --- append ----------------------------------------------------------------
    def next_id(self, now: float) -> str:
        ms = int(now * 1000)
        last_ms, last_seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return format_stream_id(*self._last)

    def append(self, event: dict[str, Any], snapshot: bytes | None) -> EventRecord | None:
        """Keep a validated event from a child; None when it is not one."""
        now = time.time()
        keep_snapshot = (
            snapshot is not None
            and self.directory is not None
            and self.config.max_snapshots > 0
            and len(snapshot) <= self.config.snapshot_max_bytes
        )
        record_id = self.next_id(now)
        try:
            fields = entry_fields(event, keep_snapshot)
        except (KeyError, TypeError, ValueError):
            fields = {}
        record = decode_entry(record_id, fields)
        if record is None:
            self.junk += 1
            return None
        self.ring.append(record)
        if self.directory is not None:
            try:
                if keep_snapshot and snapshot is not None:
                    # Room first: the directory never holds more than the bound,
                    # not even between this write and the expiry below.
                    self._drop_snapshots(self.config.max_snapshots - 1)
                    (self.directory / f"{record_id}.jpg").write_bytes(snapshot)
                    self.snapshots.append(record_id)
                self._write_line(record_id, fields)
            except OSError as exc:
                log.warning("event not written to disk", error=str(exc))
        self._expire(now)
        return record

    def _expire(self, now: float) -> None:
        """Drop what is older than the retention, and snapshots over the count."""
        horizon = now - self.config.retention
        while self.ring and self.ring[0].time < horizon:
            self.ring.popleft()
        oldest = parse_stream_id(self.ring[0].id) if self.ring else None
        while self.snapshots and (
            oldest is None or (parse_stream_id(self.snapshots[0]) or (0, 0)) < oldest
        ):
            self._drop_snapshots(len(self.snapshots) - 1)
        self._drop_snapshots(self.config.max_snapshots)

    def _drop_snapshots(self, keep: int) -> None:
        """Delete the oldest snapshots until at most ``keep`` are left."""
        while len(self.snapshots) > max(0, keep):
            gone = self.snapshots.popleft()
            if self.directory is not None:
                with contextlib.suppress(OSError):
                    (self.directory / f"{gone}.jpg").unlink()

    # --- read (the same interface as RedisEventStore) -----------------------------
    async def query(self, query: EventQuery, allowed: Callable[[str], bool]) -> Page:
        self._expire(time.time())
        builder = PageBuilder(query, allowed, max_scan=len(self.ring) + 1)
        start = query.start()
        after = parse_stream_id(start[1:]) if start.startswith("(") else None
        since = (query.since_ms, 0) if query.since_ms is not None else None
        until = query.until_ms
        for record in self.ring:
            key = parse_stream_id(record.id) or (0, 0)
            if (after is not None and key <= after) or (since is not None and key < since):
                continue
            if until is not None and key[0] > until:
                break
            builder.feed(record.id, record)
            if builder.done:
                return builder.finish(False)
        return builder.finish(True)

    async def get(self, event_id: str) -> EventRecord | None:
        if parse_stream_id(event_id) is None:
            return None
        return next((r for r in self.ring if r.id == event_id), None)

    async def snapshot(self, record: EventRecord) -> bytes | None:
        if not record.has_snapshot or self.directory is None or record.id not in self.snapshots:
            return None
        try:
            return (self.directory / f"{record.id}.jpg").read_bytes()
        except OSError:
            return None
