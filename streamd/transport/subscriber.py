"""The gateway's Redis subscriber: one dedicated connection, explicit channels.

It subscribes to ``{prefix}{camera_id}`` only for cameras a viewer of this
gateway watches (not to a pattern), so Redis itself knows which cameras are
watched (``PUBSUB NUMSUB``) and a camera nobody watches need not be encoded.
Detection events (``streamd:events:{camera_id}``) are wanted separately. It speaks RESP2:
redis-py's RESP3 push handling drains frame-sized messages far slower, until Redis'
output-buffer limit disconnects the client (``python -m benchmarks.gateway_drain``
measures both in one run).

Redis drops subscribers (output-buffer limit, ``CLIENT KILL``, restarts): the
``run`` loop notices, reconnects with capped backoff and resubscribes everything
on its own. A ping watchdog also catches a connection that silently went dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from streamd.backoff import Backoff
from streamd.config import is_valid_camera_id
from streamd.redact import redact_url
from streamd.retry import AsyncRetry
from streamd.states import EVENT_CHANNEL_PREFIX, GATEWAY_CONTROL_CHANNEL

log = structlog.get_logger("streamd.subscriber")
PING_INTERVAL_S = 5.0
PING_DEADLINE_S = 15.0


class FrameSubscriber:
    def __init__(
        self,
        url: str,
        prefix: str,
        on_frame: Callable[[str, bytes], object],
        reconnect: Backoff = Backoff(initial=0.1, cap=1.0),
        on_event: Callable[[str, bytes], None] = lambda _camera, _data: None,
        *,
        sharded: bool = False,
    ) -> None:
        self.url = url
        # Sharded: SSUBSCRIBE on one cluster master (``transport.sharded`` routes
        # each channel to its master); no always-subscribed control channel.
        self.sharded = sharded
        self.prefix = prefix
        self.on_frame = on_frame
        self.on_event = on_event
        self._retry = AsyncRetry(reconnect, (RedisError, OSError, TimeoutError))
        self.wanted: Counter[str] = Counter()
        self.subscribed = False
        self.sessions = 0
        self._pubsub: PubSub | None = None
        self._last_pong = time.monotonic()

    # --- what to subscribe to -----------------------------------------------------
    def want(self, camera_id: str) -> None:
        """Frames of ``camera_id`` (refcounted)."""
        self._add(self.prefix + camera_id)

    def unwant(self, camera_id: str) -> None:
        self._remove(self.prefix + camera_id)

    def want_events(self, camera_id: str) -> None:
        self._add(EVENT_CHANNEL_PREFIX + camera_id)

    def unwant_events(self, camera_id: str) -> None:
        self._remove(EVENT_CHANNEL_PREFIX + camera_id)

    def add_channel(self, channel: str) -> None:
        self._add(channel)

    def remove_channel(self, channel: str) -> None:
        self._remove(channel)

    def _add(self, channel: str) -> None:
        self.wanted[channel] += 1
        if self.wanted[channel] == 1:
            self._send("subscribe", channel)

    def _remove(self, channel: str) -> None:
        if self.wanted[channel] <= 0:
            return
        self.wanted[channel] -= 1
        if self.wanted[channel] == 0:
            del self.wanted[channel]
            self._send("unsubscribe", channel)

    def _send(self, command: str, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None or not self.subscribed:
            return  # the next session subscribes to everything wanted
        if self.sharded:
            call = (
                pubsub.ssubscribe(channel)
                if command == "subscribe"
                else pubsub.sunsubscribe(channel)
            )
        else:
            call = (
                pubsub.subscribe(channel) if command == "subscribe" else pubsub.unsubscribe(channel)
            )
        task = asyncio.ensure_future(call)
        task.add_done_callback(_ignore_result)

    # --- the connection -------------------------------------------------------------
    async def run(self) -> None:
        """Subscribe, read until the connection is lost, and again, for ever."""
        await self._retry.call_with_retry(self._session, self._on_session_failed)

    def _on_session_failed(self, exc: Exception, failures: int, delay: float) -> None:
        # Once per outage: the first failure after a session that worked, or at start.
        if failures == 1:
            log.warning(
                "redis subscription lost; reconnecting",
                redis_url=redact_url(self.url),
                error=str(exc) or type(exc).__name__,
                retry_in_s=round(delay, 2),
            )

    async def _session(self) -> None:
        client = aioredis.Redis.from_url(
            self.url,
            protocol=2,
            socket_connect_timeout=2.0,
            socket_timeout=None,  # a subscriber blocks in read for as long as it likes
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            socket_read_size=1 << 20,
        )
        pubsub = client.pubsub()
        watchdog: asyncio.Task[None] | None = None
        try:
            channels = list(self.wanted)
            if self.sharded:
                # One SSUBSCRIBE per channel: a batch must not span hash slots.
                for channel in channels:
                    await pubsub.ssubscribe(channel)
            else:
                # Always subscribed: the connection is in pub/sub mode even with no camera wanted.
                channels.insert(0, GATEWAY_CONTROL_CHANNEL)
                await pubsub.subscribe(*channels)
            self._pubsub = pubsub
            self.subscribed = True
            self.sessions += 1
            self._retry.succeeded()
            self._last_pong = time.monotonic()
            log.info(
                "redis subscription started"
                if self.sessions == 1
                else "redis subscription restored",
                redis_url=redact_url(self.url),
                channels=len(channels),
            )
            watchdog = asyncio.create_task(self._ping_watchdog(pubsub))
            await self._read_loop(pubsub)
        finally:
            self.subscribed = False
            self._pubsub = None
            if watchdog is not None:
                watchdog.cancel()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _read_loop(self, pubsub: PubSub) -> None:
        prefix = self.prefix.encode()
        cut = len(prefix)
        events = EVENT_CHANNEL_PREFIX.encode()
        message = b"smessage" if self.sharded else b"message"
        while True:
            response = await pubsub.parse_response(block=True)
            # RESP2 pub/sub replies: [b"message", channel, data], [b"pong", b""], ...
            if not isinstance(response, list) or not response:
                continue
            kind = response[0]
            if kind == message and len(response) == 3:
                channel, data = response[1], response[2]
                if channel.startswith(prefix):
                    camera_id = channel[cut:].decode("ascii", "replace")
                    if is_valid_camera_id(camera_id):
                        self.on_frame(camera_id, data)
                        continue
                elif channel.startswith(events):
                    camera_id = channel[len(events) :].decode("ascii", "replace")
                    if is_valid_camera_id(camera_id):
                        self.on_event(camera_id, data)
                        continue
            elif kind == b"pong":
                self._last_pong = time.monotonic()
            elif kind == b"sunsubscribe" and len(response) == 3:
                channel = response[1].decode("ascii", "replace")
                if channel in self.wanted:
                    # The server dropped it: its slot moved to another master.
                    raise SlotMovedError(f"redis moved shard channel {channel} away")

    async def _ping_watchdog(self, pubsub: PubSub) -> None:
        """Close a connection that stopped answering, so ``run`` reconnects."""
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            if time.monotonic() - self._last_pong > PING_DEADLINE_S:
                log.warning(
                    "redis subscription silent; reconnecting", redis_url=redact_url(self.url)
                )
                if pubsub.connection is not None:
                    await pubsub.connection.disconnect()
                return
            with contextlib.suppress(RedisError, OSError):
                await pubsub.ping()


class SlotMovedError(RedisError):
    """A shard channel we still want was unsubscribed by the server."""


def _ignore_result(task: asyncio.Future[object]) -> None:
    # A failed (un)subscribe means the connection broke; run() resubscribes all.
    if not task.cancelled():
        task.exception()
