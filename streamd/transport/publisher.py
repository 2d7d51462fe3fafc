"""The child's frame publisher: one long-lived pooled ``redis.asyncio`` client,
a frame link beside it, adaptive batching, and the embedded fallback.

Capture never waits on Redis: ``submit`` (on the event loop, handed over from the
capture thread) writes the frame at once as one pre-packed ``PUBLISH`` on the
frame link (``publish_link``) when no batch is awaiting its replies; otherwise
the frame waits in a small bounded queue that drops its oldest frame when full
(the newest ``queue_size`` frames stay, in order), and when the replies come in,
*everything* queued goes out in one write, so batching grows with load and adds
no latency when idle. The pooled client serves the
rest (PING, events, who watches); its pipelines cost more CPU per frame than
the frame itself, which is why frames have their own connection.

While Redis is down (or disabled) the newest frame goes to ``fallback`` (the
control socket to the supervisor's gateway) and a reconnect loop
(``retry.AsyncRetry``) probes Redis with capped exponential backoff and jitter,
so publishing resumes within one capped delay (``reconnect``'s ``cap``, 1 s by
default) of Redis coming back. A batch whose replies take longer than
``reply_timeout`` counts as failed and Redis as down, as a socket timeout would.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Generic

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from streamd.backoff import Backoff
from streamd.redact import redact_url
from streamd.retry import AsyncRetry
from streamd.states import RedisState
from streamd.stats import CameraCounters
from streamd.transport.cluster import Topology, plain_client
from streamd.transport.frame import EncodedFrame, pack_frame
from streamd.transport.outgoing import CounterNames, DropOldestQueue, T
from streamd.transport.publish_link import PublishLink, open_link
from streamd.transport.resp import RespError, pack_publish, publish_head

log = structlog.get_logger("streamd.publisher")


def pack_for_sending(frame: EncodedFrame) -> bytes:
    """The wire payload, stamped with the time it leaves this process."""
    return pack_frame(frame.meta, frame.jpeg, time.time_ns())


REPLY_TIMEOUT_S = 2.0  # as the pooled client's socket timeout


class Publisher(Generic[T]):
    """The publishing machinery; ``FramePublisher`` and ``unit_publisher.UnitPublisher``
    say how their items are packed, wired to the fallback and counted."""

    names = CounterNames()

    def __init__(
        self,
        *,
        redis_url: str | None,
        channel: str,
        fallback: Callable[[bytes], bool],
        stats: CameraCounters,
        queue_size: int = 4,
        reconnect: Backoff = Backoff(initial=0.1, cap=1.0),
        cluster: bool = False,
        seeds: Sequence[str] = (),
        reply_timeout: float = REPLY_TIMEOUT_S,
    ) -> None:
        self.channel = channel
        self.stats = stats
        self._fallback = fallback
        self._queue: DropOldestQueue[T] = DropOldestQueue(queue_size)
        self.dropped: Counter[str] = self._dropped_counter(stats)
        self._reconnect = reconnect
        self._reply_timeout = reply_timeout
        self._redis_url = redis_url
        # In a Redis Cluster frames go by SPUBLISH to the master of the channel's
        # slot (found again after a failover); elsewhere by PUBLISH to ``redis_url``.
        self._topology = Topology(redis_url, cluster=cluster, seeds=seeds) if redis_url else None
        self._cluster = cluster
        self._head = publish_head(b"SPUBLISH" if cluster else b"PUBLISH", channel.encode())
        self._client_url = redis_url if redis_url and not cluster else None
        self._client = plain_client(self._client_url) if self._client_url else None
        self._side_clients: dict[str, aioredis.Redis] = {}  # other masters (events)
        self._link: PublishLink | None = None  # frames only; open while Redis is up
        self._in_flight: list[T] = []  # the batch awaiting its replies
        self._in_flight_bytes = 0
        self._in_flight_since = 0.0
        self._replied = 0
        self._redis_up = False
        # Until the first PING resolves, Redis is neither up nor known to be down:
        # frames go local without counting as failed publishes.
        self._connecting = self._topology is not None
        self._announce_next_success = True
        self._failure_logged = False  # since the last frame Redis took
        self._down = asyncio.Event()
        self._down.set()  # until the first PING answers
        self._up = asyncio.Event()  # the opposite of _down: set while Redis answers

    @property
    def redis_state(self) -> RedisState:
        if self._topology is None:
            return RedisState.DISABLED
        if self._connecting:
            return RedisState.CONNECTING
        return RedisState.UP if self._redis_up else RedisState.DOWN

    def submit(self, frame: T) -> None:
        """Send or queue a frame without waiting (called on the event loop)."""
        if self._link is None:
            self._deliver_locally(frame)
        elif not self._in_flight:
            self._send([frame])
        else:
            dropped = self._queue.push(frame)  # sent when the replies are in
            if dropped:
                self.dropped["queue_full"] += dropped
            if time.monotonic() - self._in_flight_since > self._reply_timeout:
                self._link_failed(TimeoutError("no reply from redis"))

    async def run(self) -> None:
        """Keep Redis connected (frames themselves are sent from ``submit``)."""
        try:
            if self._topology is not None:
                await self._reconnect_loop()
            else:
                await asyncio.Event().wait()  # nothing to connect: the fallback only
        finally:
            self._close_link()
            for client in [self._client, *self._side_clients.values()]:
                if client is not None:
                    await client.aclose()

    # --- what the items are ------------------------------------------------------------
    def _dropped_counter(self, stats: CameraCounters) -> Counter[str]:
        return stats.dropped

    def _pack(self, head: bytes, item: T, publish_ns: int) -> tuple[bytes, int]:
        """One publish command carrying ``item``, and its payload's size."""
        raise NotImplementedError

    def _wire(self, item: T) -> bytes:
        """``item``'s payload for the fallback (the control socket)."""
        raise NotImplementedError

    def _record(self, batch: list[T], done: float, done_ns: int) -> None:
        """Latency figures of a batch Redis took (none by default)."""

    # --- the frame link -------------------------------------------------------------
    def _send(self, batch: list[T]) -> None:
        assert self._link is not None
        publish_ns = time.time_ns()
        head = self._head
        if len(batch) == 1:
            command, self._in_flight_bytes = self._pack(head, batch[0], publish_ns)
        else:
            packed = [self._pack(head, item, publish_ns) for item in batch]
            command = b"".join(command for command, _ in packed)
            self._in_flight_bytes = sum(size for _, size in packed)
        self._in_flight = batch
        self._in_flight_since = time.monotonic()
        self._replied = 0
        self._link.write(command)

    def _on_replies(self, replies: list[int | RespError]) -> None:
        """On the event loop, from the link: count replies, then send what waited."""
        batch = self._in_flight
        self._replied += len(replies)
        if self._replied > len(batch):
            self._link_failed(RedisError("more replies than frames sent"))
            return
        for reply in replies:
            if isinstance(reply, RespError):  # -MOVED after a failover, -NOPERM, ...
                self._link_failed(RedisError(str(reply)))
                return
        if self._replied < len(batch):
            return  # the rest of this batch's replies are on their way
        self._published(batch)
        waiting = self._queue.take_all()
        if waiting:
            self._send(waiting)

    def _published(self, batch: list[T]) -> None:
        # Attempts are counted with their outcome, so that at any instant
        # attempts == published + failures (no in-flight skew in a snapshot).
        counters, names = self.stats.counters, self.names
        counters[names.attempts] += len(batch)
        counters[names.published] += len(batch)
        counters[names.bytes] += self._in_flight_bytes
        self._in_flight = []
        self._failure_logged = False
        self._record(batch, time.monotonic(), time.time_ns())
        if self._announce_next_success:
            self._announce_next_success = False
            log.info(
                "redis publish ok",
                redis_url=redact_url(self._redis_url or ""),
                channel=self.channel,
                batch=len(batch),
            )

    def _link_failed(self, exc: BaseException) -> None:
        """The link broke (or Redis refused a frame): what was sent or waiting did
        not reach Redis; Redis counts as down until PING answers again."""
        failed, waiting = self._in_flight, self._queue.take_all()
        self._in_flight = []
        self.mark_down(exc)  # closes the link
        self._count_not_published(failed, "publish_error")
        self._count_not_published(waiting, "redis_down")
        newest = (failed + waiting)[-1:]
        if newest and self._fallback(self._wire(newest[0])):
            self.stats.counters[self.names.fallback] += 1

    def _count_not_published(self, frames: list[T], reason: str) -> None:
        if frames:
            self.stats.counters[self.names.attempts] += len(frames)
            self.stats.counters[self.names.failures] += len(frames)
            self.dropped[reason] += len(frames)

    def _deliver_locally(self, frame: T) -> None:
        """No link (Redis down, still connecting, or disabled): the embedded
        fallback. Frames come here one by one, so none goes stale in a queue."""
        counted = self._topology is None or self._connecting
        if not counted:
            self._count_not_published([frame], "redis_down")
        if self._fallback(self._wire(frame)):
            self.stats.counters[self.names.fallback] += 1
        elif counted:  # otherwise already counted as not reaching Redis
            self.dropped["fallback_busy"] += 1

    def _close_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    async def publish_event(self, channel: str, payload: bytes) -> bool:
        """Best effort: True if Redis took it (the caller falls back otherwise)."""
        if self._client is None or self._topology is None or not self._redis_up:
            return False
        try:
            if self._cluster:
                # Events have their own channel, maybe on another shard.
                await (await self._client_for(channel)).spublish(channel, payload)
            else:
                await self._client.publish(channel, payload)
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return False
        return True

    async def wait_up(self) -> None:
        """Return once Redis answers (at once if it does now)."""
        await self._up.wait()

    async def client_for_key(self, key: str) -> aioredis.Redis | None:
        """The client for the Redis serving ``key`` (the master of its slot in a
        cluster) while Redis answers; None while it is down or not yet up."""
        if self._client is None or self._topology is None or not self._redis_up:
            return None
        return await self._client_for(key) if self._cluster else self._client

    async def watched_on_redis(self, *, patterns: bool = True) -> bool | None:
        """Does anyone listen on our channel (or, with ``patterns``, on any
        pattern)? None if unknown."""
        if self._client is None or not self._redis_up:
            return None
        try:
            if self._cluster:  # shard channels have shard subscribers, and no patterns
                shard = await self._client.pubsub_shardnumsub(self.channel)
                return bool(shard and shard[0][1])
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.pubsub_numsub(self.channel)
                pipe.pubsub_numpat()
                numsub, numpat = await pipe.execute()
        except (RedisError, OSError) as exc:
            self.mark_down(exc)
            return None
        return bool(numsub and numsub[0][1]) or (patterns and bool(numpat))

    def mark_down(self, exc: BaseException) -> None:
        self._close_link()
        # Once per outage: a Redis that answers PING but refuses every frame goes
        # up and down with each frame, and must not log each time.
        if self._redis_up and not self._failure_logged:
            self._failure_logged = True
            log.warning(
                "redis publish failed; using local fallback", error=str(exc) or type(exc).__name__
            )
        self._redis_up = False
        self._up.clear()
        self._down.set()

    async def _reconnect_loop(self) -> None:
        """Probe Redis each time it goes down; mark it up when PING answers."""
        retry = AsyncRetry(self._reconnect, (RedisError, OSError))
        up_at: float | None = None
        while True:
            await self._down.wait()
            if up_at is not None and time.monotonic() - up_at < self._reconnect.initial:
                # Up and at once down again (a link Redis drops right away, a refused
                # frame): PING answers, so only this keeps the loop from spinning.
                await asyncio.sleep(self._reconnect.initial)
            await retry.call_with_retry(self._ping, self._on_ping_failed)
            up_at = time.monotonic()
            self._connecting = False
            self._redis_up = True
            self._announce_next_success = True
            self._down.clear()
            self._up.set()

    async def _ping(self) -> None:
        assert self._topology is not None
        if self._cluster:
            await self._topology.refresh()
            url = self._topology.url_for(self.channel)
            if url != self._client_url:
                old, self._client = self._client, None
                if old is not None:
                    await old.aclose()
                if url is not None:
                    self._client = plain_client(url)
                self._client_url = url
                log.info("publishing to shard master", master=redact_url(url or ""))
        assert self._client is not None
        await self._client.ping()
        self._close_link()
        self._link = await open_link(self._client, self._on_replies, self._link_failed)

    async def _client_for(self, name: str) -> aioredis.Redis:
        assert self._topology is not None and self._client is not None
        url = self._topology.url_for(name)
        if url is None or url == self._client_url:
            return self._client
        if url not in self._side_clients:
            # One client per other master (events' channels, the kept-events
            # stream); those of masters gone from the map are closed.
            masters = set(self._topology.master_urls())
            for gone in [u for u in self._side_clients if u not in masters]:
                await self._side_clients.pop(gone).aclose()
            self._side_clients[url] = plain_client(url, max_connections=1)
        return self._side_clients[url]

    def _on_ping_failed(self, exc: Exception, failures: int, _delay: float) -> None:
        self._connecting = False
        if failures == 1:
            log.warning(
                "redis unreachable; frames go to the local gateway",
                redis_url=redact_url(self._redis_url or ""),
                error=str(exc) or type(exc).__name__,
            )


class FramePublisher(Publisher[EncodedFrame]):
    """JPEG frames on ``video:{id}``, with their latency figures."""

    def _pack(self, head: bytes, item: EncodedFrame, publish_ns: int) -> tuple[bytes, int]:
        return pack_publish(head, item.meta, publish_ns, item.jpeg)

    def _wire(self, item: EncodedFrame) -> bytes:
        return pack_for_sending(item)

    def _record(self, batch: list[EncodedFrame], done: float, done_ns: int) -> None:
        latency, capture_to_publish = self.stats.publish_latency, self.stats.capture_to_publish
        for frame in batch:
            latency.record(done - frame.queued_at)
            capture_to_publish.record((done_ns - frame.meta.capture_ns) / 1e9)
