"""The child's frame publisher against a real redis-server: the frame link,
batching while replies are awaited, failures, timeouts and the fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from structlog.testing import capture_logs

from streamd.backoff import Backoff
from streamd.stats import CameraCounters
from streamd.transport.frame import EncodedFrame, FrameMeta, pack_frame, parse_frame
from streamd.transport.publisher import FramePublisher
from streamd.transport.resp import (
    IntegerReplies,
    RespError,
    RespProtocolError,
    pack_publish,
    publish_head,
)

from .conftest import RedisServer, free_port

CHANNEL = "video:pub"
FAST = Backoff(initial=0.05, cap=0.2)


def frame(seq: int, size: int = 2000) -> EncodedFrame:
    jpeg = b"\xff\xd8" + bytes([seq % 251]) * size + b"\xff\xd9"
    return EncodedFrame(FrameMeta("pub", seq, time.time_ns(), 0, 64, 48), jpeg, time.monotonic())


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Harness:
    def __init__(self, url: str | None, **kwargs: object) -> None:
        self.local: list[bytes] = []
        self.stats = CameraCounters()
        self.publisher = FramePublisher(
            redis_url=url,
            channel=CHANNEL,
            fallback=self._fallback,
            stats=self.stats,
            reconnect=FAST,
            **kwargs,  # type: ignore[arg-type]
        )
        self.task: asyncio.Task[None] | None = None

    def _fallback(self, payload: bytes) -> bool:
        self.local.append(payload)
        return True

    async def start(self) -> None:
        self.task = asyncio.create_task(self.publisher.run())
        await until(lambda: self.publisher.redis_state.value == "up", 5, "redis up")

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def published(self, count: int) -> Callable[[], bool]:
        return lambda: self.stats.counters["published"] >= count

    def balanced(self) -> bool:
        counters = self.stats.counters
        return counters["attempts"] == counters["published"] + counters["failures"]


@pytest.fixture
async def subscriber(redis_server: RedisServer) -> AsyncIterator[aioredis.client.PubSub]:
    client = aioredis.Redis(port=redis_server.port)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    yield pubsub
    await pubsub.aclose()
    await client.aclose()


async def received(pubsub: aioredis.client.PubSub, count: int, timeout: float = 5) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            got.append(message["data"])
    return got


async def frame_link_id(server: RedisServer) -> int:
    """The frame link is the connection that has run PUBLISH (cmd=publish)."""
    client = aioredis.Redis(port=server.port)
    try:
        for entry in await client.client_list():
            if entry.get("cmd") == "publish":
                return int(entry["id"])
    finally:
        await client.aclose()
    raise AssertionError("no connection has published")


# --- the wire format (pure) -------------------------------------------------------------
def test_packed_publish_is_what_redis_py_would_send() -> None:
    one = frame(7)
    payload = pack_frame(one.meta, one.jpeg, 123)
    packed = pack_publish(publish_head(b"PUBLISH", CHANNEL.encode()), one.meta, 123, one.jpeg)
    expected = b"".join(Connection().pack_command("PUBLISH", CHANNEL, payload))
    assert packed == (expected, len(payload))
    sharded, _ = pack_publish(publish_head(b"SPUBLISH", b"c"), one.meta, 123, one.jpeg)
    assert sharded == b"".join(Connection().pack_command("SPUBLISH", "c", payload))


def test_integer_replies_split_anywhere() -> None:
    stream = b":1\r\n:0\r\n-MOVED 3999 127.0.0.1:6381\r\n:12\r\n"
    for cut in range(len(stream) + 1):
        parser = IntegerReplies()
        replies = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        assert replies == [1, 0, RespError("MOVED 3999 127.0.0.1:6381"), 12]


@pytest.mark.parametrize(
    "data", [b"+OK\r\n", b"$3\r\nabc\r\n", b"*1\r\n", b">3\r\n", b":x\r\n", b":" + b"9" * 600]
)
def test_replies_a_publish_never_gets_are_refused(data: bytes) -> None:
    with pytest.raises(RespProtocolError):
        IntegerReplies().feed(data)


# --- against redis-server ---------------------------------------------------------------
async def test_frames_reach_subscribers_with_stats(
    redis_server: RedisServer, subscriber: aioredis.client.PubSub
) -> None:
    harness = Harness(redis_server.url)
    await harness.start()
    try:
        for seq in range(1, 6):
            harness.publisher.submit(frame(seq))
            await until(harness.published(seq), 5, f"frame {seq}")
        got = await received(subscriber, 5)
    finally:
        await harness.stop()
    metas = [parse_frame(data, 1 << 20).meta for data in got]
    assert [m.seq for m in metas if m] == [1, 2, 3, 4, 5]
    assert all(m and m.publish_ns >= m.capture_ns for m in metas)
    counters = harness.stats.counters
    assert counters["published"] == counters["attempts"] == 5 and counters["failures"] == 0
    assert counters["bytes_published"] == sum(len(d) for d in got)  # payloads, as before
    assert harness.stats.publish_latency.total == 5
    assert harness.stats.capture_to_publish.total == 5
    assert harness.local == []


async def test_frames_submitted_while_a_batch_awaits_replies_go_in_one_batch(
    redis_server: RedisServer, subscriber: aioredis.client.PubSub
) -> None:
    harness = Harness(redis_server.url, queue_size=4)
    await harness.start()
    try:
        # All in one event-loop turn: the first is written at once, the rest
        # wait for its reply in the drop-oldest queue (capacity 4).
        for seq in range(1, 11):
            harness.publisher.submit(frame(seq))
        await until(lambda: harness.stats.counters["published"] == 5, 5, "the second batch")
        got = await received(subscriber, 5)
    finally:
        await harness.stop()
    assert [parse_frame(d, 1 << 20).meta.seq for d in got] == [1, 7, 8, 9, 10]  # type: ignore[union-attr]
    assert harness.stats.dropped["queue_full"] == 5
    assert harness.balanced()


async def test_link_killed_counts_failure_falls_back_and_recovers(
    redis_server: RedisServer, subscriber: aioredis.client.PubSub
) -> None:
    harness = Harness(redis_server.url)
    await harness.start()
    try:
        harness.publisher.submit(frame(1))
        await until(lambda: harness.stats.counters["published"] == 1, 5, "first frame")
        admin = aioredis.Redis(port=redis_server.port)
        await admin.client_kill_filter(_id=str(await frame_link_id(redis_server)))
        await admin.aclose()
        # The link notices by itself (no frame needed), then comes back.
        await until(lambda: harness.publisher.redis_state.value != "up", 5, "link lost seen")
        await until(lambda: harness.publisher.redis_state.value == "up", 5, "redis up again")
        harness.publisher.submit(frame(2))
        await until(lambda: harness.stats.counters["published"] == 2, 5, "frame after recovery")
        got = await received(subscriber, 2)
    finally:
        await harness.stop()
    assert [parse_frame(d, 1 << 20).meta.seq for d in got] == [1, 2]  # type: ignore[union-attr]
    assert harness.balanced()


async def test_redis_that_stops_answering_times_out_to_the_fallback(
    redis_server: RedisServer,
) -> None:
    harness = Harness(redis_server.url, reply_timeout=0.3)
    await harness.start()
    admin = aioredis.Redis(port=redis_server.port)
    try:
        await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")  # PUBLISH waits
        harness.publisher.submit(frame(1))  # written; its reply will not come in time
        await asyncio.sleep(0.4)
        harness.publisher.submit(frame(2))  # finds the batch overdue
        assert harness.stats.dropped["publish_error"] == 1
        assert harness.stats.dropped["redis_down"] == 1
        assert [parse_frame(p, 1 << 20).meta.seq for p in harness.local] == [2]  # type: ignore[union-attr]
        assert harness.publisher.redis_state.value == "down"
        await until(lambda: harness.publisher.redis_state.value == "up", 5, "redis up again")
        harness.publisher.submit(frame(3))
        await until(lambda: harness.stats.counters["published"] == 1, 5, "frame after pause")
    finally:
        await admin.aclose()
        await harness.stop()
    assert harness.balanced()


async def test_refused_publish_falls_back_without_spinning(redis_server: RedisServer) -> None:
    admin = aioredis.Redis(port=redis_server.port)
    # A user that may PING and ask who listens, but not PUBLISH.
    await admin.execute_command("ACL", "SETUSER", "cam", "on", ">pw", "+ping", "+client", "+hello")
    await admin.aclose()
    url = f"redis://cam:pw@127.0.0.1:{redis_server.port}/0"
    harness = Harness(url)
    await harness.start()
    try:
        harness.publisher.submit(frame(1))
        await until(lambda: harness.stats.counters["failures"] == 1, 5, "the refusal")
        assert harness.local and parse_frame(harness.local[0], 1 << 20).meta.seq == 1  # type: ignore[union-attr]
        # Every refused frame marks Redis down, and PING still answers: without a
        # pause between such rounds each frame would cost a PING and a new link.
        before = await _command_calls(redis_server, "ping")
        with capture_logs() as logs:
            for seq in range(2, 102):  # 100 frames in about 0.5 s
                harness.publisher.submit(frame(seq))
                await asyncio.sleep(0.005)
        pings = await _command_calls(redis_server, "ping") - before
        assert pings <= 30, f"{pings} PINGs for 100 refused frames"
        warnings = [e for e in logs if e["event"].startswith("redis publish failed")]
        assert warnings == [], "one warning per outage, not one per refused frame"
    finally:
        await harness.stop()
    assert harness.balanced()
    assert harness.stats.counters["published"] == 0


async def _command_calls(server: RedisServer, command: str) -> int:
    client = aioredis.Redis(port=server.port)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_without_redis_frames_go_to_the_fallback() -> None:
    harness = Harness(None)
    task = asyncio.create_task(harness.publisher.run())
    try:
        for seq in range(1, 4):
            harness.publisher.submit(frame(seq))
        assert [parse_frame(p, 1 << 20).meta.seq for p in harness.local] == [1, 2, 3]  # type: ignore[union-attr]
        assert harness.stats.counters["fallback"] == 3
        assert harness.stats.counters["attempts"] == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_frame_link_is_opened_the_way_the_url_says(tmp_path: Path) -> None:
    """Unix socket, user and password, database: redis-py's handshake, our socket.
    The default user may not publish, so a link that skipped AUTH would fail."""
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(free_port(), tmp_path, ("--unixsocket", str(socket_path)))
    server.start()
    admin = aioredis.Redis(port=server.port)
    pubsub = admin.pubsub()
    try:
        await admin.execute_command("ACL", "SETUSER", "cam", "on", ">pw", "+@all", "~*", "&*")
        await pubsub.subscribe(CHANNEL)
        await admin.execute_command("ACL", "SETUSER", "default", "-publish")
        harness = Harness(f"unix://cam:pw@{socket_path}?db=3")
        await harness.start()
        try:
            harness.publisher.submit(frame(1))
            await until(harness.published(1), 5, "a frame over the unix socket")
            got = await received(pubsub, 1)
        finally:
            await harness.stop()
    finally:
        await pubsub.aclose()
        await admin.aclose()
        server.kill()
    assert [parse_frame(d, 1 << 20).meta.seq for d in got] == [1]  # type: ignore[union-attr]
    assert harness.stats.counters["failures"] == 0
