"""The child's frame publisher: one long-lived pooled ``redis.asyncio`` client,
adaptive pipelining, and the embedded fallback.

Capture never waits on Redis: ``submit`` puts the frame in a small bounded queue
where the newest frame wins, and returns at once. One sender task takes
*everything* queued whenever the connection is free and sends it in a single
pipeline, so batching grows with load and adds no latency when idle.

While Redis is down (or disabled) the newest frame goes to ``fallback`` (the
control socket to the supervisor's gateway) and a reconnect loop
(``retry.AsyncRetry``) probes Redis with capped exponential backoff and jitter,
so publishing resumes within one capped delay (``reconnect``'s ``cap``, 1 s by
default) of Redis coming back.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace

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

log = structlog.get_logger("streamd.publisher")


def pack_for_sending(frame: EncodedFrame) -> bytes:
    """The wire payload, stamped with the time it leaves this process."""
    return pack_frame(replace(frame.meta, publish_ns=time.time_ns()), frame.jpeg)


class LatestWinsQueue:
    """Bounded FIFO that drops the oldest entry when full (pure)."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[EncodedFrame] = deque()
        self.capacity = capacity

    def push(self, item: EncodedFrame) -> int:
        """Add ``item``; return how many old items were dropped to make room."""
        dropped = 0
        while len(self._items) >= self.capacity:
            self._items.popleft()
            dropped += 1
        self._items.append(item)
        return dropped

    def take_all(self) -> list[EncodedFrame]:
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)


class FramePublisher:
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
    ) -> None:
        self.channel = channel
        self.stats = stats
        self._fallback = fallback
        self._queue = LatestWinsQueue(queue_size)
        self._wakeup = asyncio.Event()
        self._reconnect = reconnect
        self._redis_url = redis_url
        # In a Redis Cluster frames go by SPUBLISH to the master of the channel's
        # slot (found again after a failover); elsewhere by PUBLISH to ``redis_url``.
        self._topology = Topology(redis_url, cluster=cluster, seeds=seeds) if redis_url else None
        self._cluster = cluster
        self._client_url = redis_url if redis_url and not cluster else None
        self._client = plain_client(self._client_url) if self._client_url else None
        self._side_clients: dict[str, aioredis.Redis] = {}  # other masters (events)
        self._redis_up = False
        # Until the first PING resolves, Redis is neither up nor known to be down:
        # frames go local without counting as failed publishes.
        self._connecting = self._topology is not None
        self._announce_next_success = True
        self._down = asyncio.Event()
        self._down.set()  # until the first PING answers

    @property
    def redis_state(self) -> RedisState:
        if self._topology is None:
            return RedisState.DISABLED
        if self._connecting:
            return RedisState.CONNECTING
        return RedisState.UP if self._redis_up else RedisState.DOWN

    def submit(self, frame: EncodedFrame) -> None:
        """Queue a frame without waiting (called from the event loop)."""
        dropped = self._queue.push(frame)
        if dropped:
            self.stats.dropped["queue_full"] += dropped
        self._wakeup.set()

    async def run(self) -> None:
        reconnector = asyncio.create_task(self._reconnect_loop()) if self._topology else None
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                batch = self._queue.take_all()
                if batch:
                    await self._deliver(batch)
        finally:
            if reconnector is not None:
                reconnector.cancel()
            for client in [self._client, *self._side_clients.values()]:
                if client is not None:
                    await client.aclose()

    async def _deliver(self, batch: list[EncodedFrame]) -> None:
        if self._topology is not None and not self._connecting:
            # Attempts are counted with their outcome, so that at any instant
            # attempts == published + failures (no in-flight skew in a snapshot).
            was_up = self._redis_up
            if was_up and await self._publish(batch):
                self.stats.counters["attempts"] += len(batch)
                return
            # Frames that did not reach Redis, by reason; the newest still goes local.
            self.stats.counters["attempts"] += len(batch)
            self.stats.counters["failures"] += len(batch)
            self.stats.dropped["publish_error" if was_up else "redis_down"] += len(batch)
        elif len(batch) > 1:
            self.stats.dropped["fallback_stale"] += len(batch) - 1
        counted = self._topology is None or self._connecting
        # Embedded fallback: only the newest frame matters to a live viewer.
        if self._fallback(pack_for_sending(batch[-1])):
            self.stats.counters["fallback"] += 1
        elif counted:  # otherwise already counted as not reaching Redis
            self.stats.dropped["fallback_busy"] += 1

    async def _publish(self, batch: list[EncodedFrame]) -> bool:
        assert self._client is not None
        size = 0
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for frame in batch:
                    payload = pack_for_sending(frame)
                    size += len(payload)
                    if self._cluster:
                        pipe.spublish(self.channel, payload)
                    else:
                        pipe.publish(self.channel, payload)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._mark_down(exc)
            return False
        done = time.monotonic()
        done_ns = time.time_ns()
        self.stats.counters["published"] += len(batch)
        self.stats.counters["bytes_published"] += size
        for frame in batch:
            self.stats.publish_latency.record(done - frame.queued_at)
            self.stats.capture_to_publish.record((done_ns - frame.meta.capture_ns) / 1e9)
        if self._announce_next_success:
            self._announce_next_success = False
            log.info(
                "redis publish ok",
                redis_url=redact_url(self._redis_url or ""),
                channel=self.channel,
                batch=len(batch),
            )
        return True

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
            self._mark_down(exc)
            return False
        return True

    def client_if_up(self) -> aioredis.Redis | None:
        """The Redis client while Redis answers (events go to the stream with it).
        None in a Redis Cluster: the kept-events keys do not share a hash slot yet
        (events are still published live, by SPUBLISH)."""
        return self._client if self._redis_up and not self._cluster else None

    def mark_down(self, exc: BaseException) -> None:
        """A caller's Redis command failed: probe and fall back like a failed publish."""
        self._mark_down(exc)

    async def watched_on_redis(self) -> bool | None:
        """Does anyone listen on our channel (or on any pattern)? None if unknown."""
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
            self._mark_down(exc)
            return None
        return bool(numsub and numsub[0][1]) or bool(numpat)

    def _mark_down(self, exc: BaseException) -> None:
        if self._redis_up:
            log.warning(
                "redis publish failed; using local fallback", error=str(exc) or type(exc).__name__
            )
        self._redis_up = False
        self._down.set()

    async def _reconnect_loop(self) -> None:
        """Probe Redis each time it goes down; mark it up when PING answers."""
        retry = AsyncRetry(self._reconnect, (RedisError, OSError))
        while True:
            await self._down.wait()
            await retry.call_with_retry(self._ping, self._on_ping_failed)
            self._connecting = False
            self._redis_up = True
            self._announce_next_success = True
            self._down.clear()

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

    async def _client_for(self, name: str) -> aioredis.Redis:
        assert self._topology is not None and self._client is not None
        url = self._topology.url_for(name)
        if url is None or url == self._client_url:
            return self._client
        if url not in self._side_clients:
            for stale in self._side_clients.values():  # the map changed: start over
                await stale.aclose()
            self._side_clients = {url: plain_client(url, max_connections=1)}
        return self._side_clients[url]

    def _on_ping_failed(self, exc: Exception, failures: int, _delay: float) -> None:
        self._connecting = False
        if failures == 1:
            log.warning(
                "redis unreachable; frames go to the local gateway",
                redis_url=redact_url(self._redis_url or ""),
                error=str(exc) or type(exc).__name__,
            )
