"""The gateway's subscriber on a Redis Cluster: sharded pub/sub, one connection
per master that holds a wanted channel.

Frames published with ``SPUBLISH`` stay on their shard (a classic ``PUBLISH`` in
a cluster is copied to every node). ``ShardedFrameSubscriber`` keeps the same
refcounted ``want``/``unwant`` as ``FrameSubscriber`` and routes each channel to
a ``FrameSubscriber(sharded=True)`` on the master of its slot (``Topology``).
When a master fails (its replica is promoted) or a slot moves, that session
fails; the topology loop re-reads ``CLUSTER SLOTS`` and moves the channels to
their new master, which counts in ``moves`` and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

import structlog
from prometheus_client.core import CounterMetricFamily, Metric
from redis.exceptions import RedisError

from streamd.backoff import Backoff
from streamd.redact import redact_url
from streamd.transport.cluster import Topology
from streamd.transport.subscriber import DEFAULT_MAX_MESSAGE_BYTES, FrameSubscriber

log = structlog.get_logger("streamd.subscriber")
CHECK_S = 0.25  # how soon a failed shard session is noticed
REFRESH_S = 5.0  # re-read the slot map this often even when all is well


class ShardedFrameSubscriber(FrameSubscriber):
    def __init__(
        self,
        topology: Topology,
        prefix: str,
        on_frame: Callable[[str, bytes], None],
        reconnect: Backoff = Backoff(initial=0.1, cap=1.0),
        on_event: Callable[[str, bytes], None] = lambda _camera, _data: None,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        on_dropped: Callable[[str, str], None] = lambda _camera, _reason: None,
    ) -> None:
        super().__init__(
            topology.url,
            prefix,
            on_frame,
            reconnect,
            on_event,
            max_message_bytes=max_message_bytes,
            on_dropped=on_dropped,
        )
        self.topology = topology
        self.nodes: dict[str, FrameSubscriber] = {}  # master URL → its subscriber
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.assigned: dict[str, str] = {}  # channel → master URL
        self.moves = 0  # channels moved to another master (failovers, migrations)
        self._running = False
        self._refresh_failures = 0

    # --- routing -------------------------------------------------------------------------
    def _send(self, command: str, channel: str) -> None:
        if command == "subscribe":
            self._assign(channel)
        else:
            url = self.assigned.pop(channel, None)
            if url is not None and url in self.nodes:
                self.nodes[url].remove_channel(channel)
                self._drop_if_idle(url)

    def _assign(self, channel: str) -> None:
        url = self.topology.url_for(channel)
        if url is None or self.assigned.get(channel) == url:
            return  # no map yet: the topology loop assigns it
        old = self.assigned.get(channel)
        if old is not None:
            self.moves += 1
            log.warning(
                "shard channel moved to another master; resubscribing",
                channel=channel,
                old=redact_url(old),
                new=redact_url(url),
                moves=self.moves,
            )
            if old in self.nodes:
                self.nodes[old].remove_channel(channel)
                self._drop_if_idle(old)
        self.assigned[channel] = url
        self._node(url).add_channel(channel)

    def _node(self, url: str) -> FrameSubscriber:
        node = self.nodes.get(url)
        if node is None:
            node = FrameSubscriber(
                url,
                self.prefix,
                self.on_frame,
                on_event=self.on_event,
                sharded=True,
                max_message_bytes=self.max_message_bytes,
                on_dropped=self.on_dropped,
            )
            node.on_unit = lambda camera_id, data: self.on_unit(camera_id, data)
            self.nodes[url] = node
            if self._running:
                self._tasks[url] = asyncio.create_task(node.run(), name=f"shard-{url}")
        return node

    def _drop_if_idle(self, url: str) -> None:
        node = self.nodes.get(url)
        if node is not None and not node.wanted:
            del self.nodes[url]
            task = self._tasks.pop(url, None)
            if task is not None:
                task.cancel()

    # --- the topology loop -------------------------------------------------------------------
    async def run(self) -> None:
        self._running = True
        for url, node in self.nodes.items():
            self._tasks[url] = asyncio.create_task(node.run(), name=f"shard-{url}")
        last_refresh = float("-inf")
        try:
            while True:
                now = time.monotonic()
                broken = any(not n.subscribed for n in self.nodes.values())
                unassigned = any(c not in self.assigned for c in self.wanted)
                if broken or unassigned or now - last_refresh > REFRESH_S:
                    last_refresh = now
                    await self._refresh()
                self.subscribed = self.topology.slots is not None and all(
                    n.subscribed for n in self.nodes.values()
                )
                if self.subscribed:
                    self.sessions = max(self.sessions, 1)
                await asyncio.sleep(CHECK_S)
        finally:
            self._running = False
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._tasks.clear()

    async def _refresh(self) -> None:
        try:
            await self.topology.refresh()
        except (RedisError, OSError) as exc:
            self._refresh_failures += 1
            if self._refresh_failures == 1:
                log.warning("redis cluster map unreadable", error=str(exc) or type(exc).__name__)
            return
        if self._refresh_failures:
            log.info("redis cluster map readable again", failures=self._refresh_failures)
            self._refresh_failures = 0
        for channel in list(self.wanted):
            with contextlib.suppress(KeyError):
                self._assign(channel)


class ShardMovesCollector:
    """Prometheus: shard channels moved to another master, and shard sessions."""

    def __init__(self, subscriber: ShardedFrameSubscriber) -> None:
        self.subscriber = subscriber

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "streamd_redis_shard_moves",
            "Channels the gateway resubscribed on another master (failovers, migrations)",
            value=self.subscriber.moves,
        )
        yield CounterMetricFamily(
            "streamd_redis_shard_sessions",
            "Sharded subscriber sessions started (one per master, plus one per reconnect)",
            value=sum(node.sessions for node in self.subscriber.nodes.values()),
        )
