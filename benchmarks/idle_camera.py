"""CPU a camera child uses when nobody watches (no encoding) vs when watched, in
one run: a real child process against a real redis-server; "watched" means a
Redis subscriber on its channel.

Usage: python -m benchmarks.idle_camera [--seconds 5] [--width 1280] [--fps 15]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time

import redis

from benchmarks._redis import redis_server
from streamd.config import CameraConfig, DetectorConfig
from streamd.transport.local import MessageType, encode_json
from streamd.worker.spec import WorkerSpec

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def measure(port: int, camera: CameraConfig, seconds: float, watched: bool) -> float:
    parent, child = socket.socketpair()
    spec = WorkerSpec(camera, f"redis://127.0.0.1:{port}/0", f"video:{camera.id}", "warning")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamd.worker",
            "--camera",
            camera.id,
            "--control-fd",
            str(child.fileno()),
            "--log-level",
            "warning",
        ],
        pass_fds=(child.fileno(),),
    )
    child.close()
    parent.sendall(encode_json(MessageType.SPEC, spec.to_json()))
    pubsub = redis.Redis(port=port).pubsub()
    if watched:
        pubsub.subscribe(f"video:{camera.id}")
    parent.setblocking(False)
    try:
        time.sleep(3.0)  # start-up and the first demand decisions
        while watched and pubsub.get_message(timeout=0.0) is not None:
            pass  # frames buffered during start-up do not count
        start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
        deadline = start + seconds
        received = 0
        while time.monotonic() < deadline:
            message = (
                pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) if watched else None
            )
            received += message is not None
            with contextlib.suppress(BlockingIOError):
                parent.recv(1 << 20)  # keep the control socket drained
            if not watched:
                time.sleep(0.05)
        used = cpu_seconds(proc.pid) - start_cpu
        elapsed = time.monotonic() - start
    finally:
        parent.close()
        proc.wait(10)
    load = used / elapsed
    label = "watched" if watched else "idle (no viewer)"
    extra = f", {received / elapsed:.1f} frames/s received" if watched else ""
    print(f"  {label:18s}: {100 * load:5.1f} % of one core{extra}", flush=True)
    return load


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--fps", type=float, default=15.0)
    args = parser.parse_args()
    height = args.width * 9 // 16
    source = f"synthetic:?width={args.width}&height={height}"
    with redis_server() as port:
        for detector in ("none", "motion"):
            camera = CameraConfig(
                "bench", source, fps=args.fps, detection=DetectorConfig(kind=detector)
            )
            print(f"{args.width}x{height} at {args.fps:g} fps, detector={detector}:", flush=True)
            watched = measure(port, camera, args.seconds, watched=True)
            idle = measure(port, camera, args.seconds, watched=False)
            print(
                f"  saved per idle camera: {100 * (watched - idle):.1f} % of a core "
                f"({watched / max(idle, 1e-9):.1f}x less CPU when idle)",
                flush=True,
            )


if __name__ == "__main__":
    main()
