"""Gateway CPU per delivered 100 KiB frame against a raw socket send of the same
bytes: the daemon's main process (subscriber + gateway; its camera child is
not counted) while a publisher sends frames to Redis and viewers in another
process receive them; the baseline is one process ``sendall``-ing the same
payloads over TCP to a reader, at the same rate and fan-out.

Usage: part of ``python -m benchmarks``
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks._daemon import temporary_daemon
from benchmarks._procs import cpu_seconds
from benchmarks._raw_send import raw_send_per_message
from benchmarks._redis import fake_jpeg
from benchmarks._viewers import Viewers
from streamd.transport.frame import FrameMeta, pack_frame

FRAME_BYTES = 100 * 1024


def _publish(port: int, channel: str, rate: float, seconds: float) -> None:
    client = redis.Redis(port=port)
    jpeg = fake_jpeg(FRAME_BYTES)
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) < start + seconds:
        meta = FrameMeta("gw", sent + 1, time.time_ns(), time.time_ns(), 1280, 720)
        client.publish(channel, pack_frame(meta, jpeg))
        sent += 1
        time.sleep(max(0.0, start + sent / rate - now))


def gateway_per_frame(
    redis_port: int, *, viewers: int, rate: float, seconds: float
) -> tuple[float, int]:
    """(CPU seconds per delivered frame, frames delivered in the window); the
    daemon's background CPU without frames is measured first and taken off."""
    warm = 3.0

    def no_such_file(folder: Path) -> list[dict[str, Any]]:
        # the child only retries its missing file: frames come from our publisher
        return [{"id": "gw", "source": str(folder / "none.mp4")}]

    with temporary_daemon(redis_port, camera_of=no_such_file) as (daemon, _):
        urls = [f"ws://{daemon.base}/ws/gw"] * viewers
        publisher = mp.get_context("fork").Process(
            target=_publish, args=(redis_port, "video:gw", rate, warm + seconds + 1)
        )
        with Viewers(urls, warm + 2 * seconds + 2) as watching:
            time.sleep(1.0)  # viewers connected, the gateway subscribed
            # The daemon's own background (supervisor, heartbeats, timers) with
            # no frames: not a cost of delivering a frame, so it is taken off.
            quiet0, quiet_start = cpu_seconds(daemon.process.pid), time.monotonic()
            time.sleep(seconds)
            background = (cpu_seconds(daemon.process.pid) - quiet0) / (
                time.monotonic() - quiet_start
            )
            publisher.start()
            time.sleep(warm)
            start, cpu0 = time.monotonic(), cpu_seconds(daemon.process.pid)
            time.sleep(seconds)
            end, cpu1 = time.monotonic(), cpu_seconds(daemon.process.pid)
            logs = watching.logs()
        publisher.join()
    delivered = sum(log.count_between(start, end) for log in logs)
    used = cpu1 - cpu0 - background * (end - start)
    return max(0.0, used) / max(1, delivered), delivered


def raw_send_per_frame(*, fanout: int, rate: float, seconds: float) -> float:
    """CPU seconds per ``sendall`` of one frame over TCP to a reading peer."""
    payload = pack_frame(FrameMeta("gw", 1, 0, 0, 1280, 720), fake_jpeg(FRAME_BYTES))
    return raw_send_per_message([payload], fanout=fanout, rate=rate, seconds=seconds)
