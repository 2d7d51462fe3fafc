"""The gateway's Redis subscriber against a real redis-server: frames of every
size arrive whole and in order, oversized messages are counted and skipped,
subscriptions follow what is wanted, and password, TLS and unix-socket URLs
work (the subscriber reads with its own RESP reader, not redis-py's)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis

from streamd.backoff import Backoff
from streamd.transport.subscriber import FrameSubscriber
from tests.support import RedisServer, free_port

Received = list[tuple[str, str, bytes]]


async def until(predicate: Callable[[], object], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def subscriber_for(url: str, received: Received, **kwargs: object) -> FrameSubscriber:
    return FrameSubscriber(
        url,
        "video:",
        lambda camera, data: received.append(("frame", camera, data)),
        on_event=lambda camera, data: received.append(("event", camera, data)),
        on_dropped=lambda camera, reason: received.append(("dropped", camera, reason.encode())),
        reconnect=Backoff(initial=0.05, cap=0.2),
        **kwargs,  # type: ignore[arg-type]
    )


async def running(subscriber: FrameSubscriber) -> AsyncIterator[FrameSubscriber]:
    task = asyncio.create_task(subscriber.run())
    try:
        await until(lambda: subscriber.subscribed)
        yield subscriber
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_frames_of_every_size_arrive_whole_and_in_order(redis_server: RedisServer) -> None:
    received: Received = []
    subscriber = subscriber_for(redis_server.url, received)
    subscriber.want("door")
    subscriber.want_events("door")
    client = redis_server.client()
    # 0 B to 3 MiB: below, across and above the reader's 1 MiB buffer
    sizes = [0, 1, 100, 64 * 1024, 100 * 1024, 1024 * 1024 - 40, 1024 * 1024, 3 << 20, 7, 5000]
    payloads = [bytes([i]) * size for i, size in enumerate(sizes)]
    async for _ in running(subscriber):
        pipe = client.pipeline(transaction=False)
        for payload in payloads:
            pipe.publish("video:door", payload)
            pipe.publish("video:other", b"not wanted")  # not subscribed: never arrives
            pipe.publish("streamd:events:door", b'{"n": %d}' % len(payload))
        await asyncio.to_thread(pipe.execute)
        await until(lambda: len(received) == 2 * len(payloads))
    frames = [data for kind, camera, data in received if kind == "frame"]
    events = [data for kind, camera, data in received if kind == "event"]
    assert frames == payloads
    assert events == [b'{"n": %d}' % len(p) for p in payloads]
    assert {camera for _, camera, _ in received} == {"door"}


async def test_oversized_messages_are_read_past_and_reported(redis_server: RedisServer) -> None:
    received: Received = []
    subscriber = subscriber_for(redis_server.url, received, max_message_bytes=64 * 1024)
    subscriber.want("door")
    subscriber.want_events("door")
    client = redis_server.client()
    async for _ in running(subscriber):
        pipe = client.pipeline(transaction=False)
        pipe.publish("video:door", b"\xff" * (5 << 20))
        pipe.publish("streamd:events:door", b"{" * (70 * 1024))
        pipe.publish("video:door", b"\xff\xd8honest\xff\xd9")
        await asyncio.to_thread(pipe.execute)
        await until(lambda: len(received) == 3)
    assert received == [
        ("dropped", "door", b"too_large"),
        ("dropped", "door", b"bad_event"),
        ("frame", "door", b"\xff\xd8honest\xff\xd9"),
    ]


async def test_subscriptions_follow_what_is_wanted(redis_server: RedisServer) -> None:
    received: Received = []
    subscriber = subscriber_for(redis_server.url, received)
    client = redis_server.client()

    def subscribers(channel: str) -> int:
        return int(client.pubsub_numsub(channel)[0][1])

    async for _ in running(subscriber):
        subscriber.want("door")
        subscriber.want("door")  # refcounted: two viewers
        await until(lambda: subscribers("video:door") == 1)
        await asyncio.to_thread(client.publish, "video:door", b"one")
        await until(lambda: received)
        subscriber.unwant("door")
        await asyncio.sleep(0.2)
        assert subscribers("video:door") == 1  # one viewer left
        subscriber.unwant("door")
        await until(lambda: subscribers("video:door") == 0)
        await asyncio.to_thread(client.client_kill_filter, _type="pubsub")
        subscriber.want("gate")  # wanted while down or just back: subscribed either way
        await until(lambda: subscriber.sessions == 2 and subscriber.subscribed)
        await until(lambda: subscribers("video:gate") == 1)
        assert subscribers("video:door") == 0
    assert received == [("frame", "door", b"one")]


PASSWORD = "Sup3r-secret"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int]]:
    """A redis-server on TCP, TLS and a unix socket, with a password; and its TLS port."""
    # Never skipped: scripts/test installs openssl, and Debian's redis-server has TLS.
    assert shutil.which("openssl"), "openssl is not installed (scripts/test installs it)"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    tls_port = free_port()
    server = RedisServer(
        free_port(),
        tmp_path,
        (
            *("--tls-port", str(tls_port), "--tls-cert-file", str(cert)),
            *("--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)),
            *("--tls-auth-clients", "no", "--unixsocket", str(tmp_path / "redis.sock")),
        ),
    )
    try:
        server.start()
    except AssertionError:
        server.kill()
        raise AssertionError("redis-server would not start with TLS (built without it?)") from None
    server.client().config_set("requirepass", PASSWORD)
    yield server, tls_port
    server.kill()


async def test_password_tls_and_unix_socket_urls(
    tmp_path: Path, tls_redis: tuple[RedisServer, int]
) -> None:
    server, tls_port = tls_redis
    client = redis.Redis(port=server.port, password=PASSWORD)
    urls = [
        f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0",
        f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0?ssl_ca_certs={tmp_path}/cert.pem",
        f"unix://{tmp_path}/redis.sock?password={PASSWORD}",
        f"redis://default:{PASSWORD}@127.0.0.1:{server.port}/0",  # AUTH with a user name
    ]
    for url in urls:
        received: Received = []
        subscriber = subscriber_for(url, received)
        subscriber.want("door")
        async for _ in running(subscriber):
            await asyncio.to_thread(client.publish, "video:door", b"x" * 300_000)
            await until(lambda r=received: r)  # type: ignore[misc]
        assert received == [("frame", "door", b"x" * 300_000)], url
    # No password or a wrong one: refused, retried, never subscribed, never a crash.
    for url in (server.url, f"redis://:wrong@127.0.0.1:{server.port}/0"):
        wrong = subscriber_for(url, [])
        task = asyncio.create_task(wrong.run())
        await asyncio.sleep(0.5)
        assert not task.done() and not wrong.subscribed and wrong.sessions == 0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
