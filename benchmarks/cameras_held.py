"""Cameras held on this machine (issue 20): N RTSP test cameras (1080p15 H.264
main stream + 640x360 substream, motion detection on the substream at
``detect_fps = 5``), each with one passthrough viewer (a WebSocket client on
``/ws/{id}?format=h264``, all viewers in one separate process), the test
cameras' RTSP server on the same machine. N grows until some viewer gets
< 95 % of the camera's frames; the largest N that held is the figure.

Baseline, measured the same way in the same run: the JPEG path, the camera
with ``passthrough = false``, no substream, motion on the main stream at 5 fps,
one viewer on ``/ws/{id}`` (JPEG).

Usage: python -m benchmarks.cameras_held [--passthrough 8,12,16,20] [--jpeg 1,2,3,4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._daemon import temporary_daemon
from benchmarks._procs import cpu_seconds, descendants, machine_busy
from benchmarks._redis import redis_server
from benchmarks._viewers import Viewers
from benchmarks.end_to_end import percentile
from tests.cameras import Clip, RtspServer, make_clip

MAIN = Clip("h264", 1920, 1080)
SUB = Clip("h264", 640, 360)
FPS = 15
DETECT_FPS = 5
MIN_SHARE = 0.95
WARM_S = 8.0


@dataclass(frozen=True)
class Step:
    path: str
    cameras: int
    worst_share: float  # worst viewer's frames ÷ the camera's (FPS x seconds)
    window: float  # seconds counted: from 1 s after the last viewer's first frame
    slowest_start: float  # daemon healthy → the last viewer's first frame, seconds
    p50: float
    p99: float
    daemon_cores: float
    main_cores: float  # the daemon's own process (supervisor + gateway), of daemon_cores
    shares: list[float]  # every viewer's share of the camera's frames, ascending
    rtsp_cores: float
    viewer_cores: float
    machine_cores: float
    load: float  # 1-minute load average at the end of the step

    @property
    def holds(self) -> bool:
        return self.worst_share >= MIN_SHARE


def camera(index: int, path: str, main_url: str, sub_url: str) -> dict[str, Any]:
    motion = {"fps": FPS, "detector": "motion", "detect_fps": DETECT_FPS}
    if path == "passthrough":
        return {"id": f"cam{index}", "source": main_url, "detect_source": sub_url, **motion}
    return {"id": f"cam{index}", "source": main_url, "passthrough": False, **motion}


def run_step(
    redis_port: int, rtsp: RtspServer, path: str, cameras: int, seconds: float,
    processes: int = 1,
) -> Step:  # fmt: skip
    main_url, sub_url = rtsp.clip_url(MAIN), rtsp.clip_url(SUB)
    config = [camera(i, path, main_url, sub_url) for i in range(cameras)]
    query = "?format=h264" if path == "passthrough" else ""
    # One address for every viewer here: the per-address cap (20) would refuse some.
    server = "max_viewers_per_address = 1000"
    with temporary_daemon(redis_port, config, healthy_within=90, server=server) as (daemon, _):
        urls = [f"ws://{daemon.base}/ws/cam{i}{query}" for i in range(cameras)]
        healthy = time.monotonic()
        groups = [urls[i::processes] for i in range(processes)]
        with contextlib.ExitStack() as stack:
            watching = [stack.enter_context(Viewers(g, WARM_S + seconds + 1)) for g in groups]
            time.sleep(WARM_S)
            viewer_pids = [w.process.pid for w in watching if w.process.pid is not None]
            assert rtsp.process is not None
            pids = [daemon.process.pid, *descendants(daemon.process.pid)]
            daemon0 = sum(cpu_seconds(pid) for pid in pids)
            main0 = cpu_seconds(daemon.process.pid)
            rtsp0 = cpu_seconds(rtsp.process.pid)
            viewer0 = sum(cpu_seconds(pid) for pid in viewer_pids)
            busy0, total0 = machine_busy()
            start = time.monotonic()
            time.sleep(seconds)
            end = time.monotonic()
            daemon1 = sum(cpu_seconds(pid) for pid in pids)
            main1 = cpu_seconds(daemon.process.pid)
            rtsp1 = cpu_seconds(rtsp.process.pid)
            viewer1 = sum(cpu_seconds(pid) for pid in viewer_pids)
            busy1, total1 = machine_busy()
            load = os.getloadavg()[0]
            logs = [log for w in watching for log in w.logs()]
    elapsed = end - start
    # Counted from when every viewer is getting frames: 20 cameras opening two
    # streams each on a loaded machine take longer than WARM_S to all start.
    firsts = [log.arrivals[0] if log.arrivals else end for log in logs]
    counted_from = min(max(start, max(firsts) + 1.0), end - 4.0)
    window = end - counted_from
    latencies = [lat for log in logs for lat in log.latencies_between(counted_from, end)]
    ncpu = os.cpu_count() or 1
    shares = sorted(log.count_between(counted_from, end) / (FPS * window) for log in logs)
    return Step(
        path=path,
        cameras=cameras,
        worst_share=shares[0],
        shares=shares,
        window=window,
        slowest_start=max(firsts) - healthy,
        p50=percentile(latencies, 0.5),
        p99=percentile(latencies, 0.99),
        daemon_cores=(daemon1 - daemon0) / elapsed,
        main_cores=(main1 - main0) / elapsed,
        rtsp_cores=(rtsp1 - rtsp0) / elapsed,
        viewer_cores=(viewer1 - viewer0) / elapsed,
        machine_cores=(busy1 - busy0) / (total1 - total0) * ncpu,
        load=load,
    )


def describe(step: Step) -> str:
    return (
        f"{step.path} N={step.cameras}: worst viewer {100 * step.worst_share:.1f} % of frames "
        f"over {step.window:.1f} s (last viewer's first frame {step.slowest_start:.1f} s "
        "after healthy), "
        f"median viewer {100 * step.shares[len(step.shares) // 2]:.1f} %, "
        f"p50/p99 {step.p50 * 1e3:.0f}/{step.p99 * 1e3:.0f} ms; cores: streamd "
        f"{step.daemon_cores:.2f} (its main process {step.main_cores:.2f}), "
        f"RTSP server {step.rtsp_cores:.2f}, viewers "
        f"{step.viewer_cores:.2f}, machine {step.machine_cores:.2f}; load {step.load:.1f}"
        f" -> {'held' if step.holds else 'NOT held'}"
    )


def largest_held(
    redis_port: int, rtsp: RtspServer, path: str, counts: list[int], seconds: float,
    processes: int = 1,
) -> tuple[int, list[Step]]:  # fmt: skip
    held, steps = 0, []
    for count in counts:
        step = run_step(redis_port, rtsp, path, count, seconds, processes)
        steps.append(step)
        print("  " + describe(step), flush=True)
        if not step.holds:
            break
        held = count
    return held, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passthrough", default="8,12,16,20")
    parser.add_argument("--jpeg", default="1,2,3,4,6")
    parser.add_argument("--seconds", type=float, default=14.0)
    parser.add_argument(
        "--viewer-processes", type=int, default=1, help="viewers spread over this many processes"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_port:
        folder = Path(tmp)
        for clip in (MAIN, SUB):
            make_clip(folder, clip)
        rtsp = RtspServer(clips=folder)
        rtsp.start()
        try:
            results = {}
            for path in ("passthrough", "jpeg"):
                counts = [int(n) for n in getattr(args, path).split(",")]
                print(f"# {path}", flush=True)
                results[path] = largest_held(
                    redis_port, rtsp, path, counts, args.seconds, args.viewer_processes
                )[0]
        finally:
            rtsp.stop()
    ratio = results["passthrough"] / results["jpeg"] if results["jpeg"] else float("inf")
    print(
        f"largest N held: passthrough {results['passthrough']} vs JPEG {results['jpeg']} "
        f"-> {ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
