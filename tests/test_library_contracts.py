"""Where streamd reaches under a library's public API, the contract it relies on.

A library upgrade that breaks one of these fails here, by name, instead of as
lost frames in production. pyproject.toml bounds each library to the versions
these were checked against.
"""

from __future__ import annotations

import asyncio

import aiohttp
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web

from streamd.gateway.protocol import websocket_binary_header
from streamd.transport.publish_link import open_link
from streamd.transport.resp import RespError

from .conftest import RedisServer


async def test_redis_py_connection_keeps_its_stream_writer_in_writer(
    redis_server: RedisServer,
) -> None:
    """transport/publish_link.py takes the socket of a connected redis-py
    connection from ``_writer`` and clears ``_reader``/``_writer`` so redis-py
    neither reads nor closes it."""
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        connection = client.connection_pool.make_connection()
        await connection.connect()
        assert isinstance(connection._writer, asyncio.StreamWriter)
        assert isinstance(connection._writer.transport, asyncio.Transport)
        assert isinstance(connection._reader, asyncio.StreamReader)
        await connection.disconnect()

        replies: list[int | RespError] = []
        lost: list[BaseException] = []
        link = await open_link(client, replies.extend, lost.append)
        # The taken-over socket carries our PUBLISH and brings its reply back...
        link.write(b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$1\r\nx\r\n")
        async with asyncio.timeout(5):
            while not replies:
                await asyncio.sleep(0.01)
        # ...and redis-py letting go of its connections does not close it.
        await client.connection_pool.disconnect()
        link.write(b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$1\r\ny\r\n")
        async with asyncio.timeout(5):
            while len(replies) < 2:
                await asyncio.sleep(0.01)
        assert not lost and not any(isinstance(r, RespError) for r in replies)
        link.close()
    finally:
        await client.aclose()


async def test_aiohttp_lets_rfc6455_frames_be_written_on_the_websocket_transport() -> None:
    """gateway/viewers.py writes whole unmasked binary messages on
    ``request.transport`` beside aiohttp's own writer, and reads
    ``request.protocol.writing_paused``."""
    sizes = [5, 300, 70_000]  # the three RFC 6455 length forms: 7, 16 and 64 bits
    paused: list[object] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        paused.append(request.protocol.writing_paused)
        assert request.transport is not None
        for size in sizes:
            request.transport.write(websocket_binary_header(size) + bytes([size % 251]) * size)
        await ws.send_bytes(b"aiohttp's own")  # and aiohttp's writer after ours, in order
        await ws.receive()  # until the client closes
        return ws

    server = web.Server(handler)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/") as ws,
        ):
            got = [await ws.receive(timeout=5) for _ in range(len(sizes) + 1)]
    finally:
        await runner.cleanup()
    assert [m.type for m in got] == [WSMsgType.BINARY] * (len(sizes) + 1)
    assert [m.data for m in got] == [
        *(bytes([size % 251]) * size for size in sizes),
        b"aiohttp's own",
    ]
    assert paused == [False]
