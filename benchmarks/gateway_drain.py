"""How fast the gateway's subscriber drains 100 KiB frames from Redis, against a
baseline subscriber in the same run (redis-py defaults: RESP3, get_message).

A publisher process sends frames at fixed rates; at each rate we report what each
subscriber delivered into the gateway and whether Redis disconnected it (its
output-buffer limit: 32 MB hard for pub/sub clients). A subscriber "sustains" a
rate when it receives every frame on one connection.

Usage: python -m benchmarks.gateway_drain [--frames 6000] [--rates 1000,2500,4000,6000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from multiprocessing.synchronize import Event as MpEvent

import redis
import redis.asyncio as aioredis

from benchmarks._redis import fake_jpeg, redis_server
from streamd.config import Config
from streamd.gateway.control import NoControl
from streamd.gateway.hub import Hub
from streamd.gateway.server import Gateway
from streamd.transport.frame import FrameMeta, pack_frame
from streamd.transport.subscriber import FrameSubscriber

CHANNEL = "video:bench"


def publisher(port: int, go: MpEvent, rate: float, frames: int) -> None:
    client = redis.Redis(port=port)
    jpeg = fake_jpeg(100 * 1024)
    payloads = [
        pack_frame(FrameMeta("bench", i, time.time_ns(), 0, 1280, 720), jpeg) for i in range(1, 17)
    ]
    go.wait()
    time.sleep(0.2)
    start = time.perf_counter()
    batch = 8
    for sent in range(0, frames, batch):
        pipe = client.pipeline(transaction=False)
        for k in range(batch):
            pipe.publish(CHANNEL, payloads[(sent + k) % len(payloads)])
        pipe.execute()
        ahead = (sent + batch) / rate - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)


async def drain_streamd(port: int, go: MpEvent, frames: int) -> tuple[int, float, int]:
    hub = Hub()
    config = Config()
    subscriber: FrameSubscriber
    gateway = Gateway(config, hub, None, NoControl())
    subscriber = FrameSubscriber(f"redis://127.0.0.1:{port}/0", "video:", gateway.ingest)
    subscriber.want("bench")
    task = asyncio.create_task(subscriber.run())
    while not subscriber.subscribed:
        await asyncio.sleep(0.01)
    go.set()
    first = last = 0.0
    idle_deadline = time.monotonic() + 10
    seen = 0
    while time.monotonic() < idle_deadline:
        await asyncio.sleep(0.05)
        feed = hub.feeds.get("bench")
        count = feed.frames + hub.duplicates if feed else 0
        if count != seen:
            first = first or time.monotonic()
            last = time.monotonic()
            seen = count
            idle_deadline = last + 1.5
        if seen >= frames:
            break
    task.cancel()
    return seen, max(last - first, 1e-9), subscriber.sessions


async def drain_baseline(port: int, go: MpEvent, frames: int) -> tuple[int, float, int]:
    client = aioredis.Redis(port=port)  # redis-py defaults (RESP3 in redis-py 8)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    await pubsub.get_message(timeout=1)
    go.set()
    seen = 0
    first = last = 0.0
    disconnected = 0
    while seen < frames:
        try:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.5)
        except (redis.ConnectionError, OSError):
            disconnected = 1
            break
        if message is None:
            break
        seen += 1
        last = time.monotonic()
        first = first or last
    # Still subscribed? Redis drops a pub/sub client past its output-buffer limit.
    if not redis.Redis(port=port).pubsub_numsub(CHANNEL)[0][1]:
        disconnected = 1
    await client.aclose()
    return seen, max(last - first, 1e-9), 1 + disconnected


def run(port: int, label: str, rate: float, frames: int, streamd: bool) -> bool:
    go = mp.Event()
    proc = mp.Process(target=publisher, args=(port, go, rate, frames))
    proc.start()
    drain = drain_streamd if streamd else drain_baseline
    seen, elapsed, sessions = asyncio.run(drain(port, go, frames))
    proc.join()
    ok = seen >= frames and sessions == 1
    verdict = "sustained" if ok else ("DISCONNECTED by Redis" if sessions > 1 else "fell behind")
    print(
        f"{label:26s} offered {rate:5.0f}/s: got {seen:5d}/{frames} "
        f"at {seen / elapsed:6.0f} frames/s, connections {sessions}  -> {verdict}",
        flush=True,
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=6000)
    parser.add_argument("--rates", default="1000,2500,4000,6000")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    best = {"streamd": 0.0, "baseline": 0.0}
    with redis_server() as port:
        for rate in rates:
            if run(port, "baseline (RESP3 defaults)", rate, args.frames, streamd=False):
                best["baseline"] = rate
            if run(port, "streamd FrameSubscriber", rate, args.frames, streamd=True):
                best["streamd"] = rate
    print(
        f"highest sustained rate: streamd {best['streamd']:.0f}/s, "
        f"baseline {best['baseline']:.0f}/s (target: streamd >= 2500/s)"
    )


if __name__ == "__main__":
    main()
