"""The frame link: one Redis connection that carries only the child's frames.

redis-py opens it (``make_connection`` of the publisher's pooled client, so the
URL's address, TLS, credentials and database apply as everywhere else), then the
link takes the socket over with its own small protocol: a frame is one
pre-packed ``PUBLISH``/``SPUBLISH`` written straight to the transport (one
``send``, no task, no pipeline object), and the integer replies are counted as
they arrive in ``data_received`` (no task wakes up for them either). Profiling
showed redis-py's pipeline machinery (pool lock, command stack, ``wait_for``
task per send, parser round trips) costing more CPU per frame than the socket
work itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from streamd.transport.resp import IntegerReplies, RespError, RespProtocolError

Replies = Callable[[list[int | RespError]], None]
Lost = Callable[[BaseException], None]


class PublishLink(asyncio.Protocol):
    """Writes packed commands; hands each chunk of replies to ``on_replies`` and
    a lost connection (or a reply no publish gets) to ``on_lost``, once."""

    def __init__(self, on_replies: Replies, on_lost: Lost, owner: object = None) -> None:
        self._on_replies = on_replies
        self._on_lost = on_lost
        self._replies = IntegerReplies()
        self._transport: asyncio.Transport | None = None
        self._owner = owner  # kept alive with the link (see open_link)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._replies.feed(data)
        except RespProtocolError as exc:
            self._fail(exc)
            return
        if replies:
            self._on_replies(replies)

    def eof_received(self) -> bool:
        self._fail(RedisConnectionError("redis closed the frame link"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or RedisConnectionError("frame link closed"))

    def close(self) -> None:
        """Close without telling ``on_lost`` (the caller knows)."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()  # unsent frames are stale by now

    def _fail(self, exc: BaseException) -> None:
        if self._transport is None:
            return  # already closed or reported
        self.close()
        self._on_lost(exc)


async def open_link(client: aioredis.Redis, on_replies: Replies, on_lost: Lost) -> PublishLink:
    """Connect (and authenticate, select the database) the way ``client`` would,
    then take the socket over. Raises redis-py's errors on failure."""
    connection = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    await connection.connect()
    writer = connection._writer  # redis-py keeps its StreamWriter here
    if writer is None:
        raise RedisConnectionError("frame link not connected")
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    # redis-py's StreamWriter closes the transport when collected: the link keeps it.
    link = PublishLink(on_replies, on_lost, owner=writer)
    transport.set_protocol(link)
    link.connection_made(transport)
    # The socket is ours now; redis-py must neither read it nor close it later.
    connection._reader = connection._writer = None
    return link
