"""What streamd costs per camera for issue 20's setup, against its floor, in
one run: a 1080p15 H.264 main stream passed through to one viewer (a test-side
``SUBSCRIBE au:{id}``) plus a 640x360 H.264 substream that motion detection
reads at ``detect_fps = 5``.

- streamd: CPU of the daemon and all its processes (fork server, camera
  child), from /proc, over the same seconds; the RTSP server and Redis are
  not streamd;
- floor: the same work in a plain loop in one fresh process: demux the main
  stream (packets never touched), demux + decode the substream, the motion
  detector on its Y plane at 5 fps (two threads, as reading two live streams
  needs). Target streamd ÷ floor <= 1.3;
- for comparison, today's JPEG path on the same camera: no substream, no
  passthrough, the main stream decoded and JPEG-encoded for one ``video:{id}``
  subscriber, motion on the main stream at 5 fps.

Usage: python -m benchmarks.passthrough_camera [--seconds 20]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import av
import redis

from benchmarks._daemon import temporary_daemon
from benchmarks._procs import descendants, tree_cpu_seconds
from benchmarks._redis import redis_server
from streamd.config import DetectorConfig
from streamd.worker.detectors import MotionDetector
from streamd.worker.planes import from_packed_i420
from tests.cameras import Clip, RtspServer, make_clip

MAIN = Clip("h264", 1920, 1080)
SUB = Clip("h264", 640, 360)
DETECT_FPS = 5
WARMUP_S = 8.0


@dataclass(frozen=True)
class Cost:
    cpu: float  # share of one core
    received_fps: float  # messages the viewer got per second


def streamd_cost(redis_port: int, camera: dict[str, Any], channel: str, seconds: float) -> Cost:
    with temporary_daemon(redis_port, [camera]) as (daemon, _folder):
        viewer = redis.Redis(port=redis_port).pubsub()
        viewer.subscribe(channel)
        try:
            time.sleep(WARMUP_S)  # open both streams, demand, keyframe interval known
            while viewer.get_message(timeout=0.0) is not None:
                pass
            pids = [daemon.process.pid, *descendants(daemon.process.pid)]
            before, start = tree_cpu_seconds(pids), time.monotonic()
            received = 0
            while time.monotonic() < start + seconds:
                message = viewer.get_message(ignore_subscribe_messages=True, timeout=0.2)
                received += message is not None
            elapsed = time.monotonic() - start
            after = tree_cpu_seconds(pids)
        finally:
            viewer.close()
    used = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    return Cost(used / elapsed, received / elapsed)


def _floor(main_url: str, sub_url: str, seconds: float, out: Queue[float]) -> None:
    import os

    stop = threading.Event()
    options = {"rtsp_transport": "tcp", "analyzeduration": "100000", "probesize": "32768"}

    def demux_main() -> None:
        with av.open(main_url, options=options) as container:
            for _packet in container.demux(container.streams.video[0]):
                if stop.is_set():
                    return

    def decode_and_detect() -> None:
        detector = MotionDetector(DetectorConfig(kind="motion", motion_warmup=1.0))
        with av.open(sub_url, options=options) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_type = "NONE"
            stream.codec_context.thread_count = 1
            index = 0
            for packet in container.demux(stream):
                if stop.is_set():
                    return
                for picture in stream.codec_context.decode(packet):
                    index += 1
                    if index % (15 // DETECT_FPS):
                        continue
                    planes = from_packed_i420(
                        picture.to_ndarray(), picture.width, picture.height, limited=True
                    )
                    detector.detect(planes.y, time.monotonic())

    threads = [threading.Thread(target=t, daemon=True) for t in (demux_main, decode_and_detect)]
    for thread in threads:
        thread.start()
    time.sleep(WARMUP_S)
    times = os.times()
    start_cpu, start = times.user + times.system, time.monotonic()
    time.sleep(seconds)
    times = os.times()
    out.put((times.user + times.system - start_cpu) / (time.monotonic() - start))
    stop.set()


def floor_cost(main_url: str, sub_url: str, seconds: float) -> float:
    context = mp.get_context("fork")
    out: Queue[float] = context.Queue()
    process = context.Process(target=_floor, args=(main_url, sub_url, seconds, out))
    process.start()
    result = out.get(timeout=seconds + 120)
    process.join(10)
    return result


@dataclass(frozen=True)
class Figures:
    passthrough: Cost
    jpeg: Cost
    floor: float


def measure(seconds: float) -> Figures:
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_port:
        folder = Path(tmp)
        for clip in (MAIN, SUB):
            make_clip(folder, clip)
        cameras = RtspServer(clips=folder)
        cameras.start()
        try:
            main_url, sub_url = cameras.clip_url(MAIN), cameras.clip_url(SUB)
            motion = {"detector": "motion", "detect_fps": DETECT_FPS, "fps": 15}
            floor = floor_cost(main_url, sub_url, seconds)
            passthrough = streamd_cost(
                redis_port,
                {"id": "cam", "source": main_url, "detect_source": sub_url, **motion},
                "au:cam",
                seconds,
            )
            jpeg = streamd_cost(
                redis_port,
                {"id": "cam", "source": main_url, "passthrough": False, **motion},
                "video:cam",
                seconds,
            )
        finally:
            cameras.stop()
    return Figures(passthrough, jpeg, floor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    f = measure(args.seconds)
    ratio = f.passthrough.cpu / f.floor
    print(f"floor (demux main + decode sub + motion @5): {f.floor * 100:.1f} % of a core")
    print(
        f"streamd passthrough + substream detection:  {f.passthrough.cpu * 100:.1f} % "
        f"({f.passthrough.received_fps:.1f} units/s to the viewer), "
        f"÷ floor = {ratio:.2f} (target <= 1.3: {'ok' if ratio <= 1.3 else 'MISSED'})"
    )
    print(
        f"streamd JPEG path (main decoded, motion on main): {f.jpeg.cpu * 100:.1f} % "
        f"({f.jpeg.received_fps:.1f} frames/s), ÷ floor = {f.jpeg.cpu / f.floor:.2f}, "
        f"passthrough ÷ JPEG = {f.passthrough.cpu / f.jpeg.cpu:.2f}"
    )


if __name__ == "__main__":
    main()
