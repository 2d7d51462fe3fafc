"""End to end: N H.264 720p15 RTSP cameras with motion detection through the
whole daemon (supervisor, one child per camera, Redis, gateway) to 2 WebSocket
viewers each, in another process. For each N: delivered fps per viewer (worst
viewer), capture → viewer latency p50/p99 over all frames, and CPU of the
daemon with its children (cores) and of the whole machine.

Usage: part of ``python -m benchmarks``
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from benchmarks._daemon import temporary_daemon
from benchmarks._procs import cpu_seconds, descendants, machine_busy
from benchmarks._viewers import Viewers

FPS = 15
VIEWERS_PER_CAMERA = 2
MIN_FRAME_SHARE = 0.95
MAX_P99_S = 0.100


@dataclass(frozen=True)
class Step:
    cameras: int
    worst_fps: float
    p50: float
    p99: float
    daemon_cores: float  # daemon + camera children
    machine_cores: float  # everything on the box: cameras' server, Redis, viewers too
    viewer_cores: float  # the viewers' own process

    @property
    def holds(self) -> bool:
        return self.worst_fps >= MIN_FRAME_SHARE * FPS and self.p99 <= MAX_P99_S


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def run_step(redis_port: int, camera_url: str, cameras: int, seconds: float) -> Step:
    warm = 6.0  # RTSP open, first keyframe, motion warm-up
    cameras_config = [
        {"id": f"cam{i}", "source": camera_url, "fps": FPS, "detector": "motion"}
        for i in range(cameras)
    ]
    with temporary_daemon(redis_port, cameras_config, healthy_within=60) as (daemon, _):
        urls = [
            f"ws://{daemon.base}/ws/cam{i}"
            for i in range(cameras)
            for _ in range(VIEWERS_PER_CAMERA)
        ]
        with Viewers(urls, warm + seconds + 1) as watching:
            time.sleep(warm)
            pids = [daemon.process.pid, *descendants(daemon.process.pid)]
            cpu0 = sum(cpu_seconds(pid) for pid in pids)
            assert watching.process.pid is not None
            viewer0 = cpu_seconds(watching.process.pid)
            busy0, total0 = machine_busy()
            start = time.monotonic()
            time.sleep(seconds)
            end = time.monotonic()
            cpu1 = sum(cpu_seconds(pid) for pid in pids)
            viewer1 = cpu_seconds(watching.process.pid)
            busy1, total1 = machine_busy()
            logs = watching.logs()
    elapsed = end - start
    cores = total1 - total0
    ncpu = os.cpu_count() or 1
    latencies = [lat for log in logs for lat in log.latencies_between(start, end)]
    return Step(
        cameras=cameras,
        worst_fps=min(log.count_between(start, end) for log in logs) / elapsed,
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        daemon_cores=(cpu1 - cpu0) / elapsed,
        machine_cores=(busy1 - busy0) / cores * ncpu if cores else math.nan,
        viewer_cores=(viewer1 - viewer0) / elapsed,
    )
