"""One Redis connection in pub/sub mode, read straight into a ``RespReader``'s
buffer (``asyncio.BufferedProtocol``: the event loop ``recv_into``s it) and
every reply handed to a callback from within the read, with no task switch.

redis-py's asyncio connection copies each frame-sized message at least three
times on the way (socket → ``StreamReader`` buffer → ``read()`` → parser → bytes)
and wakes a task per read; here the kernel writes into our buffer and the
payload is copied once, into the ``bytes`` handed on.

The URL is read by redis-py (host, port, unix socket path, username, password,
TLS options), so every URL the rest of streamd accepts works here too. Only
``AUTH`` is sent before subscribing: pub/sub ignores the database number.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable, Iterable

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from streamd.transport.resp import Reply, RespError, RespReader, encode_command

ReplyHandler = Callable[[Reply], None]


class PubSubConnection(asyncio.BufferedProtocol):
    """Replies go to the oldest ``request`` waiting for one, else to ``on_reply``.
    ``closed`` resolves (with the reason as its exception) when the connection ends."""

    def __init__(self, reader: RespReader, on_reply: ReplyHandler) -> None:
        self.reader = reader
        self.on_reply = on_reply
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting: deque[asyncio.Future[Reply]] = deque()

    # --- asyncio.BufferedProtocol -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        try:
            for reply in self.reader.advance(nbytes):
                if self._waiting:
                    self._waiting.popleft().set_result(reply)
                else:
                    self.on_reply(reply)
                if self.closed.done():
                    return  # the handler failed the connection: read no further
        except Exception as exc:  # garbage from the peer, or a handler that gave up
            self.fail(exc)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        lost = RedisConnectionError("redis closed the connection")
        lost.__cause__ = exc
        self._end(lost)

    # --- use ----------------------------------------------------------------------------------
    def send(self, *args: str | bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_command(*args))

    def send_many(self, commands: Iterable[tuple[str | bytes, ...]]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(encode_command(*c) for c in commands))

    async def request(self, *args: str | bytes) -> Reply:
        """Send a command and wait for its reply (before subscribing only: then
        replies come in order)."""
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self.send(*args)
        done, _ = await asyncio.wait((waiter, self.closed), return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            await self.closed  # raises why it closed
        return waiter.result()

    def fail(self, exc: BaseException) -> None:
        """End the connection because of ``exc`` (raised by ``closed``)."""
        self._end(exc)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.fail(RedisConnectionError("closed by us"))
        if not self.closed.cancelled():
            self.closed.exception()  # retrieved: nobody need wait for it

    def _end(self, exc: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_exception(exc)
        for waiter in self._waiting:
            waiter.cancel()
        self._waiting.clear()


def connection_params(url: str) -> AbstractConnection:
    """redis-py's reading of ``url`` (no I/O): where to connect and how."""
    kwargs = dict(parse_url(url))
    connection_class = kwargs.pop("connection_class", Connection)
    return connection_class(**kwargs)  # type: ignore[no-any-return, operator]


async def open_pubsub(
    url: str, reader: RespReader, on_reply: ReplyHandler, connect_timeout: float
) -> PubSubConnection:
    """Connect (TCP, TLS or a unix socket) and authenticate; nothing subscribed yet."""
    params = connection_params(url)
    loop = asyncio.get_running_loop()
    protocol = PubSubConnection(reader, on_reply)
    try:
        async with asyncio.timeout(connect_timeout):
            if isinstance(params, UnixDomainSocketConnection):
                await loop.create_unix_connection(lambda: protocol, params.path)
            else:
                assert isinstance(params, Connection)
                tls = params.ssl_context.get() if isinstance(params, SSLConnection) else None
                transport, _ = await loop.create_connection(
                    lambda: protocol, params.host, params.port, ssl=tls
                )
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if params.username or params.password:
                credentials = [params.password or ""]
                if params.username:
                    credentials.insert(0, params.username)
                reply = await protocol.request("AUTH", *credentials)
                if isinstance(reply, RespError):
                    raise AuthenticationError(str(reply))
    except BaseException:
        protocol.close()
        raise
    return protocol
