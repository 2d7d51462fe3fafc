"""One camera child's CPU per published frame, two checkouts of streamd
interleaved on the same test camera, so a busy or drifting machine moves both
alike: how a change to the camera path moved its cost.

Usage: python -m benchmarks.camera_ab OLD_CHECKOUT NEW_CHECKOUT
           [--cameras h264:1280x720:motion,h264:640x360:none] [--rounds 3] [--seconds 8]

A camera is ``codec:WIDTHxHEIGHT:detector``. Each checkout's child runs with
that checkout on ``PYTHONPATH``; the medians of the rounds are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._redis import redis_server
from tests.cameras import Clip, RtspServer, make_clip

_RUN_ONE = """
import json, sys
from benchmarks.camera_cost import child_cost
cost = child_cost(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), watched=True,
                  detector=sys.argv[4])
print(json.dumps([cost.cpu_per_s, cost.fps]))
"""


def run_one(
    checkout: str, port: int, url: str, seconds: float, detector: str
) -> tuple[float, float]:
    """(share of a core, frames per second) of one child from ``checkout``."""
    env = dict(os.environ, PYTHONPATH=checkout)
    out = subprocess.run(
        [sys.executable, "-c", _RUN_ONE, str(port), url, str(seconds), detector],
        env=env,
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    cpu, fps = json.loads(out.stdout.strip().splitlines()[-1])
    return float(cpu), float(fps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkouts", nargs=2, help="two streamd checkouts: old, new")
    parser.add_argument("--cameras", default="h264:1280x720:motion,h264:640x360:none")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as folder, redis_server() as port:
        cameras = []
        for spec in args.cameras.split(","):
            codec, size, detector = spec.split(":")
            width, height = (int(v) for v in size.split("x"))
            clip = Clip(codec, width, height)
            make_clip(Path(folder), clip)
            cameras.append((spec, clip, detector))
        rtsp = RtspServer(clips=Path(folder))
        rtsp.start()
        try:
            for round_no in range(args.rounds):
                for spec, clip, detector in cameras:
                    for checkout in args.checkouts:
                        url = rtsp.clip_url(clip)
                        cpu, fps = run_one(checkout, port, url, args.seconds, detector)
                        results.setdefault((spec, checkout), []).append((cpu, fps))
                        per_frame = cpu / fps * 1e3 if fps else float("nan")
                        print(f"round {round_no} {spec} {checkout}: {per_frame:.2f} ms/frame")
        finally:
            rtsp.stop()
    print("medians:")
    for (spec, checkout), runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        fps = statistics.median(r[1] for r in runs)
        per_frame = cpu / fps * 1e3 if fps else float("nan")
        share = f"{100 * cpu:5.1f} % core {fps:5.1f} fps"
        print(f"  {spec:24s} {checkout:30s} {share} {per_frame:.2f} ms")


if __name__ == "__main__":
    main()
