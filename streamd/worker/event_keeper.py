"""A camera child's detection events, from the detection thread to where they
are kept: an event's snapshot is encoded in the detection thread; on the loop
it goes into a bounded backlog (``event_backlog``) that ``keep_events`` writes
to Redis (kept in the stream, then published live with its id) whenever the
publisher says Redis answers, or, without Redis, over the control socket as
``EVENT`` to the daemon's local log. Split from ``main`` along that seam.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import numpy as np
import structlog
from redis.exceptions import RedisError

from streamd.eventlog.records import event_keys
from streamd.eventlog.redis_log import RedisEventWriter
from streamd.sparse import should_log
from streamd.states import event_channel
from streamd.stats import CameraCounters
from streamd.transport.local import MessageType, encode_message
from streamd.transport.publisher import FramePublisher
from streamd.worker.event_backlog import (
    EventBacklog,
    EventRoute,
    PendingEvent,
    route_event,
    worth_retrying,
)
from streamd.worker.events import DetectionEvent
from streamd.worker.snapshot import event_snapshot
from streamd.worker.spec import WorkerSpec

log = structlog.get_logger("streamd.worker")


class EventKeeper:
    def __init__(
        self,
        spec: WorkerSpec,
        publisher: FramePublisher,
        stats: CameraCounters,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.spec = spec
        self.publisher = publisher
        self.stats = stats
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.event_writer = RedisEventWriter(spec.events, event_keys(spec.redis_cluster))
        # Events waiting for Redis (down, or not yet up), written in order by
        # keep_events: a live event always carries the id it is kept under.
        self.backlog = EventBacklog(spec.events.backlog)
        self._backlog_ready = asyncio.Event()

    def from_thread_event(self, event: DetectionEvent, image: np.ndarray) -> None:
        """In the detection thread: encode the snapshot here, off the event loop."""
        snapshot = event_snapshot(
            image,
            event.detections,
            self.spec.camera.jpeg_quality,
            self.spec.events.snapshot_max_bytes,
        )
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._on_event, event, snapshot)

    def _on_event(self, event: DetectionEvent, snapshot: bytes | None) -> None:
        """One log line per event (never per frame), then to the supervisor (no
        Redis) or into the backlog, which ``keep_events`` writes to Redis."""
        self.stats.counters["events"] += 1
        log.info(
            "detection event",
            appeared=list(event.appeared),
            left=list(event.left),
            labels=sorted({d.label for d in event.detections}),
        )
        pending = PendingEvent(event.to_json(), snapshot)
        if route_event(self.publisher.redis_state) is EventRoute.LOCAL:
            self._send_event_to_supervisor(pending)
            return
        self._count_dropped_events(self.backlog.add(pending))
        self._backlog_ready.set()

    def _count_dropped_events(self, dropped: int) -> None:
        if not dropped:
            return
        counters = self.stats.counters
        counters["events_dropped"] += dropped
        total = counters["events_dropped"]
        if should_log(total) or dropped > 1:  # the 1st, 2nd, 4th… only
            log.warning(
                "events dropped: the backlog waiting for redis is full",
                backlog=self.backlog.capacity,
                dropped_total=total,
            )

    async def keep_events(self) -> None:
        """Write the backlog in order while Redis answers: each event kept in the
        stream (with its snapshot), then published live with its id."""
        while True:
            await self._backlog_ready.wait()
            # Taken only once Redis answers: while it is away, every waiting event
            # is in the backlog, where the oldest are the ones dropped.
            await self.publisher.wait_up()
            pending = self.backlog.take()
            if pending is None:
                self._backlog_ready.clear()
                continue
            try:
                client = await self.publisher.client_for_key(self.event_writer.keys.stream)
                if client is None:  # down again since wait_up returned
                    self._count_dropped_events(self.backlog.put_back(pending))
                    continue
                event_id = await self.event_writer.append(client, pending.event, pending.snapshot)
            except (RedisError, OSError) as exc:
                self._not_kept(pending, exc)
                continue
            event = dict(pending.event, id=event_id)
            event["snapshot"] = f"/api/events/{event_id}/snapshot.jpg" if pending.snapshot else None
            await self._publish_kept(event)

    def _not_kept(self, pending: PendingEvent, exc: BaseException) -> None:
        error = str(exc) or type(exc).__name__
        if worth_retrying(exc):  # Redis went away: the event waits for it
            self._count_dropped_events(self.backlog.put_back(pending))
            self.publisher.mark_down(exc)
            return
        counters = self.stats.counters
        counters["events_not_kept"] += 1
        total = counters["events_not_kept"]
        if should_log(total):
            log.warning("event not kept: redis refused it", error=error, not_kept_total=total)

    async def _publish_kept(self, event: dict[str, Any]) -> None:
        """Live, by Redis; if that fails, through the supervisor (it has its id)."""
        payload = json.dumps(event, separators=(",", ":")).encode()
        if not await self.publisher.publish_event(event_channel(self.spec.camera.id), payload):
            self._send_event_to_supervisor(PendingEvent(event, None), payload)

    def _send_event_to_supervisor(self, pending: PendingEvent, payload: bytes = b"") -> None:
        """The event's JSON, then its snapshot after a NUL byte (JSON never has
        one): without Redis the daemon's local log keeps both."""
        transport = self.writer.transport
        if transport.is_closing():
            return
        payload = payload or json.dumps(pending.event, separators=(",", ":")).encode()
        body = payload + b"\0" + pending.snapshot if pending.snapshot else payload
        self.writer.write(encode_message(MessageType.EVENT, body))
