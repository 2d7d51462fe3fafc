"""Soak: does any streamd process grow while cameras stream to viewers for a while?

A real ``streamd run`` (its own redis-server, several synthetic cameras) serves
steady viewers (one ``/ws/{id}`` per camera, one multiplexed ``/ws`` of all),
two viewers that never read (one of each kind), and a wave of short-lived
viewers every couple of seconds (clean and abrupt closes, single and
multiplexed, some that never read). Every ``--interval`` seconds the RSS and
open fds of the daemon and of each camera child are sampled; after the
warm-up the RSS slope is fitted by least squares and reported in MB per 10
minutes, per process. Target: under 5 MB per 10 minutes for every process.

Usage: python -m benchmarks.soak --minutes 10 [--cameras 3] [--interval 5] [--warmup S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from tests.conftest import Daemon, write_config
from tests.support import (
    RedisServer,
    abort_socket,
    add_server_options,
    fd_count,
    free_port,
    least_squares_slope,
    raw_viewer,
    rss_bytes,
    streamd_processes,
)
from tests.viewers import MuxWatcher, Watcher

TARGET_MB_PER_10_MIN = 5.0
MB = 1024 * 1024
# Several viewers from one address (all of ours are on loopback) and some headroom.
SERVER_OPTIONS = {"max_viewers": 500, "max_viewers_per_address": 400}


def soak_cameras(count: int) -> list[dict[str, Any]]:
    """The first camera is larger and faster; the others are small."""
    cameras = [{"id": "soak0", "source": "synthetic:?width=640&height=360", "fps": 15}]
    cameras += [
        {"id": f"soak{i}", "source": "synthetic:?width=320&height=180", "fps": 10}
        for i in range(1, count)
    ]
    return cameras


@contextlib.contextmanager
def running_daemon(
    workdir: Path,
    cameras: list[dict[str, Any]],
    server_options: dict[str, Any] | None = None,
    redis_args: tuple[str, ...] = (),
) -> Iterator[tuple[Daemon, RedisServer]]:
    """Its own redis-server and ``streamd run`` on free ports; both stopped after."""
    redis_server = RedisServer(free_port(), workdir, redis_args)
    redis_server.start()
    port = free_port()
    config = write_config(
        workdir / "streamd.toml", redis_url=redis_server.url, port=port, cameras=cameras
    )
    add_server_options(config, server_options or SERVER_OPTIONS)
    daemon = Daemon(config, port)
    try:
        daemon.wait_healthy()
        yield daemon, redis_server
    finally:
        daemon.stop()
        redis_server.kill()


# --- short-lived viewers ---------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where short-lived viewers connect, and how long a never-reading one stays."""

    port: int
    cameras: list[str]
    hold_s: float = 1.0

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"


async def _single_clean(target: Target) -> None:
    url = f"ws://{target.base}/ws/{target.cameras[0]}"
    async with connect(url, max_size=None, open_timeout=10) as ws:
        await asyncio.wait_for(ws.recv(), 10)  # the cached frame comes at once


async def _mux_clean(target: Target) -> None:
    async with connect(f"ws://{target.base}/ws", max_size=None, open_timeout=10) as ws:
        await ws.send(json.dumps({"op": "subscribe", "cameras": target.cameras}))
        async with asyncio.timeout(10):
            while not isinstance(await ws.recv(), bytes):
                pass


async def _single_abrupt(target: Target) -> None:
    url = f"ws://{target.base}/ws/{target.cameras[-1]}"
    ws = await connect(url, max_size=None, open_timeout=10)
    await asyncio.wait_for(ws.recv(), 10)
    ws.transport.abort()  # gone without a close frame


async def _mux_abrupt(target: Target) -> None:
    ws = await connect(f"ws://{target.base}/ws", max_size=None, open_timeout=10)
    await ws.send(json.dumps({"op": "subscribe", "cameras": target.cameras}))
    async with asyncio.timeout(10):
        while not isinstance(await ws.recv(), bytes):
            pass
    ws.transport.abort()


async def _hold_unread(sock: socket.socket, hold_s: float) -> None:
    """Frames fill its small receive buffer at once; the server's sends then block."""
    try:
        await asyncio.sleep(hold_s)
    finally:
        abort_socket(sock)


async def _single_never_reads(target: Target) -> None:
    sock = await asyncio.to_thread(raw_viewer, target.port, f"/ws/{target.cameras[0]}")
    await _hold_unread(sock, target.hold_s)


async def _mux_never_reads(target: Target) -> None:
    subscribe = json.dumps({"op": "subscribe", "cameras": target.cameras}).encode()
    sock = await asyncio.to_thread(raw_viewer, target.port, "/ws", first=subscribe)
    await _hold_unread(sock, target.hold_s)


VIEWER_KINDS: list[Callable[[Target], Awaitable[None]]] = [
    _single_clean,
    _mux_clean,
    _single_abrupt,
    _mux_abrupt,
    _single_never_reads,
    _mux_never_reads,
]


@dataclass
class Churn:
    """Short-lived viewers of every kind in turn, ``concurrency`` at a time."""

    target: Target
    concurrency: int = 24
    done: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    async def run(self, count: int) -> None:
        gate = asyncio.Semaphore(self.concurrency)
        kinds = itertools.cycle(VIEWER_KINDS)

        async def one(kind: Callable[[Target], Awaitable[None]]) -> None:
            async with gate:
                try:
                    await kind(self.target)
                    self.done += 1
                except Exception as exc:  # every failure is counted and reported
                    self.failed += 1
                    if len(self.errors) < 5:
                        self.errors.append(f"{kind.__name__}: {exc!r}")

        await asyncio.gather(*(one(next(kinds)) for _ in range(count)))


# --- sampling and fitting --------------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds since the start
    pid: int
    rss: int  # bytes
    fds: int


@dataclass
class ProcessFigures:
    label: str
    samples: int
    restarts: int
    rss_start_mb: float
    rss_end_mb: float
    slope_mb_per_10_min: float
    fds_start: int
    fds_end: int

    def line(self) -> str:
        return (
            f"{self.label:12s} samples {self.samples:4d}  RSS {self.rss_start_mb:7.1f} → "
            f"{self.rss_end_mb:7.1f} MB  slope {self.slope_mb_per_10_min:+7.2f} MB/10 min  "
            f"fds {self.fds_start:3d} → {self.fds_end:3d}  restarts {self.restarts}"
        )


def sample_all(daemon_pid: int, started: float, into: dict[str, list[Sample]]) -> None:
    now = time.monotonic() - started
    for label, pid in streamd_processes(daemon_pid).items():
        with contextlib.suppress(OSError, AssertionError):  # a child that just exited
            into.setdefault(label, []).append(Sample(now, pid, rss_bytes(pid), fd_count(pid)))


def fit(label: str, samples: list[Sample], warmup_s: float) -> ProcessFigures:
    """The least-squares RSS slope after the warm-up, on the newest process of
    ``label`` (a restarted child starts a new series)."""
    restarts = sum(1 for a, b in itertools.pairwise(samples) if a.pid != b.pid)
    last_pid = samples[-1].pid
    used = [s for s in samples if s.at >= warmup_s and s.pid == last_pid]
    if len(used) < 2:
        used = [s for s in samples if s.pid == last_pid][-2:]
    slope = least_squares_slope([s.at for s in used], [s.rss / MB for s in used]) * 600
    return ProcessFigures(
        label,
        len(used),
        restarts,
        used[0].rss / MB,
        used[-1].rss / MB,
        slope,
        used[0].fds,
        used[-1].fds,
    )


@dataclass
class SoakResult:
    processes: list[ProcessFigures]
    viewer_fps: dict[str, tuple[float, float]]  # steady viewer → (received, configured)
    churned: int
    churn_failed: int
    churn_errors: list[str]
    quiet_fds: dict[str, tuple[int, int]]  # label → (after warm-up, at the end), no churn
    daemon_alive: bool
    tracebacks: int  # in the daemon's log (its children log there too)


async def soak(
    workdir: Path,
    seconds: float,
    *,
    cameras: int = 3,
    interval: float = 5.0,
    warmup: float | None = None,
    churn_every: float = 2.0,
) -> SoakResult:
    warmup_s = warmup if warmup is not None else min(120.0, seconds / 3)
    specs = soak_cameras(cameras)
    ids = [str(c["id"]) for c in specs]
    fps = {str(c["id"]): float(c["fps"]) for c in specs}
    with running_daemon(workdir, specs) as (daemon, _redis):
        steady = [Watcher(f"ws://{daemon.base}/ws/{i}") for i in ids]
        mux = MuxWatcher(f"ws://{daemon.base}/ws", cameras=tuple(ids))
        async with contextlib.AsyncExitStack() as stack:
            for viewer in [*steady, mux]:
                await stack.enter_async_context(viewer)
            for viewer in [*steady, mux]:
                await viewer.wait_frames(3, timeout=20)
            subscribe = json.dumps({"op": "subscribe", "cameras": ids}).encode()
            stalled = [
                raw_viewer(daemon.port, f"/ws/{ids[0]}"),
                raw_viewer(daemon.port, "/ws", first=subscribe),
            ]
            for sock in stalled:
                stack.callback(sock.close)
            churn = Churn(Target(daemon.port, ids), concurrency=6)
            samples: dict[str, list[Sample]] = {}
            quiet: dict[str, list[int]] = {}
            started = time.monotonic()
            measured_from = started + warmup_s
            next_sample = next_churn = started
            warm_quiet_taken = False
            while (now := time.monotonic()) < started + seconds:
                if now >= next_sample:
                    sample_all(daemon.process.pid, started, samples)
                    next_sample += interval
                if not warm_quiet_taken and now >= measured_from:
                    _quiet_fds(daemon.process.pid, quiet)
                    warm_quiet_taken = True
                if now >= next_churn:
                    await churn.run(len(VIEWER_KINDS))
                    next_churn = max(next_churn + churn_every, time.monotonic())
                await asyncio.sleep(max(0.0, min(next_sample, next_churn) - time.monotonic()))
            sample_all(daemon.process.pid, started, samples)
            _quiet_fds(daemon.process.pid, quiet)
            end = time.monotonic()
            viewer_fps = {
                f"/ws/{i}": (v.count_since(measured_from) / (end - measured_from), fps[i])
                for i, v in zip(ids, steady, strict=True)
            }
            for i in ids:
                got = mux.camera_count_since(i, measured_from) / (end - measured_from)
                viewer_fps[f"/ws [{i}]"] = (got, fps[i])
        alive = daemon.process.poll() is None
        tracebacks = daemon.log_text().count("Traceback")
    return SoakResult(
        [fit(label, series, warmup_s) for label, series in sorted(samples.items())],
        viewer_fps,
        churn.done,
        churn.failed,
        churn.errors,
        {label: (fds[0], fds[-1]) for label, fds in quiet.items() if len(fds) == 2},
        alive,
        tracebacks,
    )


def _quiet_fds(daemon_pid: int, into: dict[str, list[int]]) -> None:
    """Fds between churn waves (no short-lived viewer open), per process."""
    for label, pid in streamd_processes(daemon_pid).items():
        with contextlib.suppress(OSError):
            into.setdefault(label, []).append(fd_count(pid))


def report(result: SoakResult) -> str:
    lines = [figures.line() for figures in result.processes]
    for label, (start, end) in sorted(result.quiet_fds.items()):
        lines.append(f"{label:12s} fds between waves: {start} after warm-up, {end} at the end")
    for viewer, (got, configured) in result.viewer_fps.items():
        lines.append(f"steady viewer {viewer:14s} {got:5.1f} fps (configured {configured:.0f})")
    lines.append(f"short-lived viewers: {result.churned} done, {result.churn_failed} failed")
    lines += [f"  {error}" for error in result.churn_errors]
    lines.append(f"tracebacks in the daemon's log: {result.tracebacks}")
    worst = max(abs(p.slope_mb_per_10_min) for p in result.processes)
    verdict = "met" if worst < TARGET_MB_PER_10_MIN else "MISSED"
    lines.append(
        f"worst RSS slope {worst:.2f} MB/10 min: target < {TARGET_MB_PER_10_MIN} {verdict}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds (default: a third, ≤ 120)"
    )
    args = parser.parse_args()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"start: {uptime}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        result = asyncio.run(
            soak(
                Path(workdir),
                args.minutes * 60,
                cameras=args.cameras,
                interval=args.interval,
                warmup=args.warmup,
            )
        )
    print(report(result))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"end: {uptime}")
    sys.exit(0 if result.daemon_alive and not result.tracebacks else 1)


if __name__ == "__main__":
    main()
