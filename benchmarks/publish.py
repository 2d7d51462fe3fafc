"""100 KiB frames through streamd's publisher vs a connection-per-frame publisher
(the old fix), both against the same redis-server with a subscriber in another
process. Prints frames/s for each and the ratio.

Usage: python benchmarks/publish.py [--seconds 3] [--kib 100]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from collections.abc import Coroutine
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import redis
import redis.asyncio as aioredis

from benchmarks._redis import fake_jpeg, redis_server
from streamd.states import RedisState
from streamd.stats import CameraCounters
from streamd.transport.frame import EncodedFrame, FrameMeta
from streamd.transport.publisher import FramePublisher

CHANNEL = "video:bench"


def subscriber(port: int, ready: MpEvent, counter: Any) -> None:
    pubsub = redis.Redis(port=port, protocol=2).pubsub()
    pubsub.subscribe(CHANNEL)
    pubsub.get_message(timeout=1)
    ready.set()
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 1.5:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message:
            counter.value += 1
            idle_since = time.monotonic()


async def connection_per_frame(port: int, jpeg: bytes, seconds: float) -> tuple[int, None]:
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client = aioredis.Redis(port=port)
        try:
            await client.publish(CHANNEL, jpeg)
        finally:
            await client.aclose()
        sent += 1
    return sent, None


async def streamd_publisher(
    port: int, jpeg: bytes, seconds: float
) -> tuple[int, CameraCounters | None]:
    stats = CameraCounters()
    publisher = FramePublisher(
        redis_url=f"redis://127.0.0.1:{port}/0",
        channel=CHANNEL,
        fallback=lambda _payload: False,
        stats=stats,
        queue_size=32,
    )
    task = asyncio.create_task(publisher.run())
    while publisher.redis_state is not RedisState.UP:
        await asyncio.sleep(0.01)
    seq = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        # The capture side submits and moves on; it never waits for Redis.
        for _ in range(8):
            seq += 1
            publisher.submit(
                EncodedFrame(
                    FrameMeta("bench", seq, time.time_ns(), 0, 1280, 720), jpeg, time.monotonic()
                )
            )
        await asyncio.sleep(0)
    await asyncio.sleep(0.2)
    task.cancel()
    return stats.counters["published"], stats


def measure(
    port: int, label: str, run: Coroutine[Any, Any, tuple[int, CameraCounters | None]]
) -> float:
    ready = mp.Event()
    counter = mp.Value("i", 0)
    proc = mp.Process(target=subscriber, args=(port, ready, counter))
    proc.start()
    ready.wait()
    start = time.monotonic()
    sent, stats = asyncio.run(run)
    elapsed = time.monotonic() - start
    proc.join()
    rate = sent / elapsed
    extra = ""
    if stats is not None:
        lat = stats.publish_latency.summary_ms("publish")
        extra = (
            f" dropped(queue_full)={stats.dropped['queue_full']} "
            f"latency p50={lat['publish_p50_ms']}ms p99={lat['publish_p99_ms']}ms"
        )
    print(f"{label:28s} {rate:8.0f} frames/s  delivered {counter.value}/{sent}{extra}", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--kib", type=int, default=100)
    args = parser.parse_args()
    jpeg = fake_jpeg(args.kib * 1024)
    with redis_server() as port:
        baseline = measure(
            port, "connection per frame (old)", connection_per_frame(port, jpeg, args.seconds)
        )
        ours = measure(port, "streamd FramePublisher", streamd_publisher(port, jpeg, args.seconds))
    print(f"ratio streamd / connection-per-frame: {ours / baseline:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
