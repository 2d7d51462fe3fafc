"""Frames through a Redis Cluster with 1 and then 3 masters, in the same run:
streamd's own publisher (SPUBLISH, pipelined per shard) for N cameras spread
over two publisher processes, and streamd's sharded subscriber (one SSUBSCRIBE
connection per master) in a gateway-like process that counts what it drains.

Each camera publishes at a fixed rate (``--fps``, one or several rates). For
each layout and rate it reports delivered frames/s and MB/s, how often Redis
dropped the subscriber (its pub/sub output-buffer limit: it fell behind), the
CPU each redis-server spent (from /proc) per frame, the busiest master's CPU
share, and the subscriber's CPU per drained frame. Every part runs on this
machine's 2 cores, so the clients compete with the Redis servers: the figures
that carry over to real hardware are Redis CPU per frame and per master, not
the absolute rates.

Usage: python -m benchmarks.cluster [--seconds 4] [--kib 200] [--cameras 12] [--fps 10,40]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import tempfile
import time
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from benchmarks._redis import fake_jpeg
from streamd.states import RedisState
from streamd.stats import CameraCounters
from streamd.transport.cluster import Topology
from streamd.transport.frame import EncodedFrame, FrameMeta
from streamd.transport.publisher import FramePublisher
from streamd.transport.sharded import ShardedFrameSubscriber
from tests.scale_support import RedisCluster

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


async def _publish(
    url: str, cameras: list[str], kib: int, fps: float, go: MpEvent, seconds: float
) -> int:
    jpeg = fake_jpeg(kib * 1024)
    publishers = [
        FramePublisher(
            redis_url=url,
            channel=f"video:{camera}",
            fallback=lambda _payload: False,
            stats=CameraCounters(),
            queue_size=8,
            cluster=True,
        )
        for camera in cameras
    ]
    tasks = [asyncio.create_task(p.run()) for p in publishers]
    while any(p.redis_state is not RedisState.UP for p in publishers):
        await asyncio.sleep(0.01)
    await asyncio.to_thread(go.wait)
    seq = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        seq += 1
        for publisher, camera in zip(publishers, cameras, strict=True):
            # As capture does: submit and move on; the sender batches what piles up.
            publisher.submit(
                EncodedFrame(
                    FrameMeta(camera, seq, time.time_ns(), 0, 1920, 1080), jpeg, time.monotonic()
                )
            )
        await asyncio.sleep(max(0.0, start + seq / fps - time.monotonic()))
    await asyncio.sleep(0.3)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return sum(p.stats.counters["published"] for p in publishers)


def publisher_process(
    url: str, cameras: list[str], kib: int, fps: float, go: MpEvent, seconds: float, out: Any
) -> None:
    out.value = asyncio.run(_publish(url, cameras, kib, fps, go, seconds))


async def _drain(url: str, cameras: list[str], ready: MpEvent, go: MpEvent, result: Any) -> None:
    counted = [0, 0]  # frames, bytes

    def on_frame(_camera: str, data: bytes) -> None:
        counted[0] += 1
        counted[1] += len(data)

    topology = Topology(url, cluster=True)
    subscriber = ShardedFrameSubscriber(topology, "video:", on_frame)
    for camera in cameras:
        subscriber.want(camera)
    task = asyncio.create_task(subscriber.run())
    while not subscriber.subscribed:
        await asyncio.sleep(0.01)
    ready.set()
    await asyncio.to_thread(go.wait)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    start = time.monotonic()
    idle = 0
    last = 0
    while idle < 10:  # stop 1 s after the last frame
        await asyncio.sleep(0.1)
        idle = idle + 1 if counted[0] == last else 0
        last = counted[0]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["frames"] = counted[0]
    result["bytes"] = counted[1]
    result["cpu"] = usage.ru_utime + usage.ru_stime - cpu0
    result["wall"] = time.monotonic() - start - 1.0
    result["drops"] = sum(node.sessions - 1 for node in subscriber.nodes.values())
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def subscriber_process(
    url: str, cameras: list[str], ready: MpEvent, go: MpEvent, result: Any
) -> None:
    asyncio.run(_drain(url, cameras, ready, go, result))


def run_layout(
    masters: int, cameras: int, kib: int, fps: float, seconds: float
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        cluster = RedisCluster(Path(workdir), masters=masters, replicas=0)
        if masters == 1:
            cluster.start_single_master()
        else:
            cluster.start()
        try:
            ids = [f"cam{i}" for i in range(cameras)]
            manager = mp.Manager()
            result = manager.dict()
            ready, go = mp.Event(), mp.Event()
            counts = [mp.Value("q", 0), mp.Value("q", 0)]
            sub = mp.Process(target=subscriber_process, args=(cluster.url, ids, ready, go, result))
            sub.start()
            ready.wait(20)
            pubs = [
                mp.Process(
                    target=publisher_process,
                    args=(cluster.url, ids[k::2], kib, fps, go, seconds, counts[k]),
                )
                for k in range(2)
            ]
            for pub in pubs:
                pub.start()
            time.sleep(1.0)  # publishers connected
            redis_pids = [p.pid for p in cluster.processes.values()]
            cpu_before = [cpu_seconds(pid) for pid in redis_pids]
            go.set()
            for pub in pubs:
                pub.join()
            sub.join()
            cpu = [
                cpu_seconds(pid) - before
                for pid, before in zip(redis_pids, cpu_before, strict=True)
            ]
            frames = int(result["frames"])
            wall = float(result["wall"])
            return {
                "masters": masters,
                "offered": cameras * fps,
                "drops": int(result["drops"]),
                "published": sum(c.value for c in counts),
                "frames": frames,
                "fps": frames / wall,
                "mb_s": result["bytes"] / wall / 1e6,
                "redis_cpu_s": sum(cpu),
                "redis_us_per_frame": sum(cpu) / max(1, frames) * 1e6,
                "busiest_master_pct": max(cpu) / wall * 100,
                "sub_us_per_frame": float(result["cpu"]) / max(1, frames) * 1e6,
            }
        finally:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--kib", type=int, default=200)
    parser.add_argument("--cameras", type=int, default=12)
    parser.add_argument("--fps", default="10,40", help="per camera; comma-separated rates")
    args = parser.parse_args()
    rates = [float(r) for r in args.fps.split(",")]
    rows = [
        run_layout(masters, args.cameras, args.kib, fps, args.seconds)
        for fps in rates
        for masters in (1, 3)
    ]
    print(f"{args.cameras} cameras, {args.kib} KiB frames, {args.seconds:.0f} s, 2 publishers")
    print(
        "masters  offered/s  frames/s   MB/s  sub drops  redis us/frame  busiest master"
        "  sub us/frame"
    )
    for row in rows:
        print(
            f"{row['masters']:>7}  {row['offered']:>9.0f}  {row['fps']:>8.0f}  {row['mb_s']:>5.0f}"
            f"  {row['drops']:>9}  {row['redis_us_per_frame']:>14.1f}"
            f"  {row['busiest_master_pct']:>13.0f}%  {row['sub_us_per_frame']:>12.1f}"
        )


if __name__ == "__main__":
    main()
