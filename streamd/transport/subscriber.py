"""The gateway's Redis subscriber: one dedicated connection, explicit channels.

It subscribes to ``{prefix}{camera_id}`` only for cameras a viewer of this
gateway watches (not to a pattern), so Redis itself knows which cameras are
watched (``PUBSUB NUMSUB``) and a camera nobody watches need not be encoded.
Detection events (``streamd:events:{camera_id}``) and passthrough access
units (``au:{camera_id}``, only while a passthrough viewer watches) are wanted
separately.

Frames are read by ``pubsub_connection`` (the event loop reads into one buffer,
each payload is copied once and handed to ``on_frame`` from within the read),
not by redis-py, whose asyncio reader copies every frame-sized message several
times and wakes a task per read. A message larger than ``max_message_bytes`` is
read past without being kept and reported to ``on_dropped``. It speaks RESP2:
redis-py's RESP3 push handling drained frame-sized messages far slower, until
Redis' output-buffer limit disconnected the client (``python -m
benchmarks.gateway_drain`` measures the subscribers in one run).

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

import structlog
from redis.exceptions import RedisError, ResponseError

from streamd.backoff import Backoff
from streamd.config import is_valid_camera_id
from streamd.redact import redact_url
from streamd.retry import AsyncRetry
from streamd.states import EVENT_CHANNEL_PREFIX, GATEWAY_CONTROL_CHANNEL, UNIT_CHANNEL_PREFIX
from streamd.transport.pubsub_connection import PubSubConnection, open_pubsub
from streamd.transport.resp import Reply, RespError, RespReader, Skipped

log = structlog.get_logger("streamd.subscriber")
PING_INTERVAL_S = 5.0
PING_DEADLINE_S = 15.0
CONNECT_TIMEOUT_S = 2.0
CONFIRM_TIMEOUT_S = 5.0  # the first subscription confirmed, or the session failed
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_ROUTES = 1024
# What a channel carries (``_route``).
FRAMES, EVENTS, UNITS = 0, 1, 2


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
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        on_dropped: Callable[[str, str], None] = lambda _camera, _reason: None,
    ) -> None:
        self.url = url
        # Sharded: SSUBSCRIBE on one cluster master (``transport.sharded`` routes
        # each channel to its master); no always-subscribed control channel.
        self.sharded = sharded
        self.prefix = prefix
        self.on_frame = on_frame
        self.on_event = on_event
        # (camera id, access unit) of ``au:{id}``; set by the gateway that wants units
        self.on_unit: Callable[[str, bytes], object] = lambda _camera, _data: None
        # (camera id, reason) of a message read past: too large to keep
        self.on_dropped = on_dropped
        self.max_message_bytes = max_message_bytes
        self._retry = AsyncRetry(reconnect, (RedisError, OSError, TimeoutError))
        self.wanted: Counter[str] = Counter()
        self.subscribed = False
        self.sessions = 0
        self._connection: PubSubConnection | None = None
        self._confirmed: asyncio.Future[None] | None = None
        self._last_pong = time.monotonic()
        self._routes: dict[bytes, tuple[int, str]] = {}  # channel → _route(channel)
        self._prefixes = (
            (FRAMES, prefix.encode()),
            (EVENTS, EVENT_CHANNEL_PREFIX.encode()),
            (UNITS, UNIT_CHANNEL_PREFIX.encode()),
        )
        self._message = b"smessage" if sharded else b"message"
        self._subscribe = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self._unsubscribe = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"

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

    def want_units(self, camera_id: str) -> None:
        """Passthrough access units of ``camera_id`` (``au:{id}``)."""
        self._add(UNIT_CHANNEL_PREFIX + camera_id)

    def unwant_units(self, camera_id: str) -> None:
        self._remove(UNIT_CHANNEL_PREFIX + camera_id)

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
        connection = self._connection
        if connection is None:
            return  # the next session subscribes to everything wanted
        # A write that fails means the connection broke: run() resubscribes all.
        connection.send(self._subscribe if command == "subscribe" else self._unsubscribe, channel)

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
        reader = RespReader(self.max_message_bytes)
        self._confirmed = asyncio.get_running_loop().create_future()
        connection = await open_pubsub(self.url, reader, self._on_reply, CONNECT_TIMEOUT_S)
        watchdog: asyncio.Task[None] | None = None
        try:
            channels = list(self.wanted)
            if self.sharded:
                # One SSUBSCRIBE per channel: a batch must not span hash slots.
                connection.send_many((self._subscribe, channel) for channel in channels)
            else:
                # Always subscribed: the connection is in pub/sub mode even with no camera wanted.
                channels.insert(0, GATEWAY_CONTROL_CHANNEL)
                connection.send(self._subscribe, *channels)
            # From here on (no await since ``channels`` was read) every change of
            # what is wanted goes out at once, also while the first is confirmed.
            self._connection = connection
            if channels:
                async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                    await asyncio.wait(
                        (self._confirmed, connection.closed), return_when=asyncio.FIRST_COMPLETED
                    )
                if connection.closed.done():
                    await connection.closed  # raises why
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
            watchdog = asyncio.create_task(self._ping_watchdog(connection))
            await connection.closed  # raises why it ended
        finally:
            self.subscribed = False
            self._connection = None
            if watchdog is not None:
                watchdog.cancel()
            connection.close()

    def _on_reply(self, reply: Reply) -> None:
        """Every reply of the connection, from within the read (keep it lean)."""
        # RESP2 pub/sub replies: [b"message", channel, data], [b"pong", b""], ...
        if type(reply) is list and len(reply) == 3 and reply[0] == self._message:
            channel, data = reply[1], reply[2]
            route = self._routes.get(channel)  # type: ignore[arg-type]
            if route is None:
                route = self._route(channel)
            kind, camera_id = route
            if not camera_id:
                return
            if type(data) is bytes:
                if kind == FRAMES:
                    self.on_frame(camera_id, data)
                elif kind == EVENTS:
                    self.on_event(camera_id, data)
                else:
                    self.on_unit(camera_id, data)
            elif isinstance(data, Skipped):
                self.on_dropped(camera_id, _TOO_LARGE[kind])
            return
        self._on_control_reply(reply)

    def _route(self, channel: object) -> tuple[int, str]:
        """(FRAMES, EVENTS or UNITS, camera id) of a channel; "" for no camera of ours."""
        route = (FRAMES, "")
        if isinstance(channel, bytes):
            for kind, prefix in self._prefixes:
                if channel.startswith(prefix):
                    camera_id = channel[len(prefix) :].decode("ascii", "replace")
                    route = (kind, camera_id if is_valid_camera_id(camera_id) else "")
                    break
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()  # channels are ours, so few; bounded all the same
            self._routes[channel] = route
        return route

    def _on_control_reply(self, reply: Reply) -> None:
        if isinstance(reply, RespError):
            raise ResponseError(str(reply))  # ends the session: run() reconnects
        if reply == b"PONG" or (isinstance(reply, list) and reply[:1] == [b"pong"]):
            self._last_pong = time.monotonic()
        elif isinstance(reply, list) and len(reply) == 3:
            kind, channel = reply[0], reply[1]
            if kind in (b"subscribe", b"ssubscribe"):
                if self._confirmed is not None and not self._confirmed.done():
                    self._confirmed.set_result(None)
            elif kind == b"sunsubscribe" and isinstance(channel, bytes):
                name = channel.decode("ascii", "replace")
                if name in self.wanted:
                    # The server dropped it: its slot moved to another master.
                    raise SlotMovedError(f"redis moved shard channel {name} away")

    async def _ping_watchdog(self, connection: PubSubConnection) -> None:
        """Close a connection that stopped answering, so ``run`` reconnects."""
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            if time.monotonic() - self._last_pong > PING_DEADLINE_S:
                log.warning(
                    "redis subscription silent; reconnecting", redis_url=redact_url(self.url)
                )
                connection.fail(TimeoutError("redis did not answer PING"))
                return
            with contextlib.suppress(RedisError, OSError):
                connection.send("PING")


# The rejected-counter reason of a message too large to keep, by channel kind.
_TOO_LARGE = {FRAMES: "too_large", EVENTS: "bad_event", UNITS: "unit_oversized"}


class SlotMovedError(RedisError):
    """A shard channel we still want was unsubscribed by the server."""
