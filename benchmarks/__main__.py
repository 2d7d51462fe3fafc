"""One benchmark command: ``python -m benchmarks [--quick]``.

Starts its own redis-server and test cameras (H.264/H.265/JPEG over RTSP from
clips encoded once by ffmpeg, and an HTTP MJPEG camera), then prints one table.
Every figure is set against a baseline measured in the same run, on the same
machine, at the same time, so a loaded or slow machine moves both alike:

1. camera child CPU per published frame vs the floor (decode + JPEG encode
   from the decoder's planes, of the same clip in a tight loop), for each
   source kind and size; and that floor vs the BGR way (decode + BGR + OpenCV's
   JPEG encode);
2. an idle camera's CPU vs the same camera watched, with and without motion
   detection;
3. gateway CPU per delivered 100 KiB frame vs a raw TCP send of the same bytes;
4. end to end, N H.264 720p15 cameras with motion detection and 2 viewers
   each, N growing: worst viewer's fps vs the camera's, capture → viewer
   latency p50/p99, CPU; and the largest N with every viewer >= 95 % of frames
   and p99 <= 100 ms;
5. how cost grows (full run only): camera CPU per frame with resolution,
   gateway CPU with viewers, daemon CPU with cameras (from 4), with the slope;
6. H.264 passthrough (issue 20) per frame vs a demux-only loop and vs decode +
   JPEG, and its bytes per frame vs JPEG (benchmarks/passthrough.py).

Run on their own (longer, and the first needs Chromium): the wall in headless
Chromium, WebCodecs vs JPEG (``python -m benchmarks.wall_passthrough``), and
passthrough cameras held on this machine vs the JPEG path
(``python -m benchmarks.cameras_held``); docs/performance.md, "Passthrough on
the wall and per node".
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks._redis import redis_server
from benchmarks.camera_cost import child_cost, clip_jpegs, floor_per_frame
from benchmarks.end_to_end import FPS, VIEWERS_PER_CAMERA, Step, run_step
from benchmarks.gateway_cost import gateway_per_frame, raw_send_per_frame
from benchmarks.passthrough import clips as passthrough_clips
from benchmarks.passthrough import measure as passthrough_measure
from tests.cameras import Clip, MjpegHttpServer, RtspServer, make_clip

H264_720 = Clip("h264", 1280, 720)
MJPEG_720 = Clip("mjpeg", 1280, 720)
H264_360 = Clip("h264", 640, 360)
FULL_CLIPS = (
    H264_360,
    H264_720,
    Clip("h264", 1920, 1080),
    Clip("h265", 1280, 720),
    Clip("h265", 1920, 1080),
    MJPEG_720,
)
QUICK_CLIPS = (H264_720, MJPEG_720)


@dataclass
class Row:
    figure: str
    measured: str
    baseline: str
    ratio: float | None
    target: str = ""
    ok: bool | None = None


class Table:
    def __init__(self) -> None:
        self.rows: list[Row | str] = []

    def section(self, title: str) -> None:
        self.rows.append(title)
        print(f"# {title}", flush=True)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        print(f"  {row.figure}: {row.measured} vs {row.baseline} -> {ratio}", flush=True)

    def render(self) -> str:
        head = ("figure", "measured", "baseline", "ratio", "target", "")
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for row in self.rows:
            if isinstance(row, str):
                lines.append(f"| **{row}** | | | | | |")
                continue
            ratio = "" if row.ratio is None or math.isnan(row.ratio) else f"{row.ratio:.2f}"
            verdict = "" if row.ok is None else ("ok" if row.ok else "MISSED")
            cells = (row.figure, row.measured, row.baseline, ratio, row.target, verdict)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


@contextmanager
def test_cameras(folder: Path, clips: tuple[Clip, ...]) -> Iterator[tuple[RtspServer, str]]:
    """The RTSP server for every clip, and an HTTP MJPEG camera (720p, 15 fps)."""
    for clip in clips:
        make_clip(folder, clip)
    rtsp = RtspServer(clips=folder)
    rtsp.start()
    try:
        with MjpegHttpServer(clip_jpegs(folder / MJPEG_720.filename), fps=FPS) as http:
            yield rtsp, http.url
    finally:
        rtsp.stop()


def camera_rows(
    table: Table, redis_port: int, rtsp: RtspServer, http_url: str, clips: tuple[Clip, ...],
    folder: Path, seconds: float, floor_frames: int,
) -> None:  # fmt: skip
    table.section("1. camera child CPU per published frame (watched, 15 fps, no detector)")
    sources = [(f"RTSP {c.codec.upper()} {c.width}x{c.height}", rtsp.clip_url(c), c) for c in clips]
    sources.append(("HTTP MJPEG 1280x720", http_url, MJPEG_720))
    for label, url, clip in sources:
        floor = floor_per_frame(folder / clip.filename, floor_frames)
        cost = child_cost(redis_port, url, seconds, watched=True)
        ratio = cost.per_frame / floor
        table.add(
            Row(
                f"{label} ({cost.fps:.1f} fps)",
                ms(cost.per_frame),
                f"floor {ms(floor)}",
                ratio,
                "<= 1.25",
                ratio <= 1.25,
            )
        )
        if clip.codec != "mjpeg":  # what the planes save over the BGR way
            bgr = floor_per_frame(folder / clip.filename, floor_frames, via_bgr=True)
            table.add(Row("  floor vs the BGR way", ms(floor), f"BGR way {ms(bgr)}", floor / bgr))


def idle_rows(table: Table, redis_port: int, url: str, seconds: float) -> None:
    table.section("2. idle camera vs the same camera watched (RTSP H.264 1280x720 15 fps)")
    for detector, target in (("none", 0.15), ("motion", None)):
        watched = child_cost(redis_port, url, seconds, watched=True, detector=detector)
        if watched.fps < 0.9 * FPS:  # the stream was lost meanwhile: measure again
            watched = child_cost(redis_port, url, seconds, watched=True, detector=detector)
        idle = child_cost(redis_port, url, seconds, watched=False, detector=detector)
        ratio = idle.cpu_per_s / watched.cpu_per_s
        table.add(
            Row(
                f"idle, detector={detector}",
                f"{100 * idle.cpu_per_s:.1f} % core",
                f"watched {100 * watched.cpu_per_s:.1f} % core ({watched.fps:.1f} fps)",
                ratio,
                f"<= {target}" if target is not None else "",
                None if target is None else ratio <= target,
            )
        )


def gateway_rows(table: Table, redis_port: int, seconds: float) -> None:
    table.section("3. gateway CPU per delivered 100 KiB frame (100 frames/s to 2 viewers)")
    per_frame, delivered = gateway_per_frame(redis_port, viewers=2, rate=100, seconds=seconds)
    raw = raw_send_per_frame(fanout=2, rate=100, seconds=seconds)
    table.add(
        Row(
            f"gateway ({delivered} frames delivered)",
            f"{per_frame * 1e6:.0f} µs",
            f"raw TCP send {raw * 1e6:.0f} µs",
            per_frame / raw,
            "<= 2",
            per_frame / raw <= 2,
        )
    )


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else math.nan


def growth_rows(
    table: Table, redis_port: int, rtsp: RtspServer, steps: list[Step], seconds: float
) -> None:
    table.section("5. how cost grows")
    by_size = []
    for clip in (c for c in FULL_CLIPS if c.codec == "h264"):
        cost = child_cost(redis_port, rtsp.clip_url(clip), seconds, watched=True)
        megapixels = clip.width * clip.height / 1e6
        by_size.append((megapixels, cost.per_frame * 1e3))
        table.add(Row(f"H.264 {clip.width}x{clip.height}: camera CPU per frame",
                      ms(cost.per_frame), "", None))  # fmt: skip
    table.add(Row("slope with resolution", f"{slope(by_size):.2f} ms per megapixel", "", None))
    by_viewers = []
    for viewers in (1, 2, 4, 8):
        per_frame, _ = gateway_per_frame(redis_port, viewers=viewers, rate=50, seconds=seconds)
        published = per_frame * viewers  # CPU per frame the camera published
        by_viewers.append((float(viewers), published * 1e6))
        table.add(Row(f"{viewers} viewer(s) of one 50 fps camera: gateway CPU per frame",
                      f"{published * 1e6:.0f} µs", "", None))  # fmt: skip
    table.add(Row("slope with viewers", f"{slope(by_viewers):.0f} µs per viewer", "", None))
    if len(steps) >= 2:
        points = [(float(s.cameras), s.daemon_cores) for s in steps]
        table.add(
            Row("slope with cameras (from 4)", f"{slope(points):.3f} cores per camera", "", None)
        )


def end_to_end_rows(
    table: Table, redis_port: int, url: str, counts: list[int], seconds: float
) -> list[Step]:
    table.section(
        f"4. end to end: N H.264 720p{FPS} RTSP cameras, motion detection, "
        f"{VIEWERS_PER_CAMERA} viewers each"
    )
    best: Step | None = None
    steps = []
    for count in counts:
        step = run_step(redis_port, url, count, seconds)
        steps.append(step)
        table.add(
            Row(
                f"N={count}: worst viewer fps; p50 / p99 latency",
                f"{step.worst_fps:.1f} fps; {ms(step.p50)} / {ms(step.p99)}",
                f"camera {FPS} fps; p99 target 100 ms",
                step.worst_fps / FPS,
                ">= 0.95; p99 <= 100 ms",
                step.holds,
            )
        )
        table.add(
            Row(
                f"N={count}: CPU, daemon + children / viewers / whole machine",
                f"{step.daemon_cores:.2f} / {step.viewer_cores:.2f} / "
                f"{step.machine_cores:.2f} cores",
                f"{os.cpu_count()} cores",
                step.machine_cores / (os.cpu_count() or 1),
                "",
            )
        )
        if step.holds:
            best = step
        else:
            break
    largest = best.cameras if best else 0
    table.add(
        Row("largest N held", str(largest), "target 12", largest / 12, ">= 12", largest >= 12)
    )
    return steps


def passthrough_rows(table: Table, folder: Path, frames: int) -> None:
    table.section(f"6. H.264 1920x1080 passthrough per frame (load {os.getloadavg()[0]:.1f})")
    for path, label in passthrough_clips(folder):
        f = passthrough_measure(path, label, frames, frames // 4)
        mine = f"{f.passthrough * 1e6:.0f} µs"
        ratio = f.passthrough / f.demux_only
        demux_only = f"demux only {f.demux_only * 1e6:.0f} µs"
        table.add(
            Row(f"{label}: demux + passthrough", mine, demux_only, ratio, "<= 1.5", ratio <= 1.5)
        )
        decode_jpeg = f"decode + JPEG {ms(f.decode_jpeg)}"
        table.add(
            Row(f"{label}: vs decode + JPEG", mine, decode_jpeg, f.passthrough / f.decode_jpeg)
        )
        sizes = (f"{f.message_bytes:.0f} B", f"JPEG {f.jpeg_bytes:.0f} B")
        table.add(Row(f"{label}: bytes per frame", *sizes, f.message_bytes / f.jpeg_bytes))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sources, shorter runs")
    parser.add_argument("--cameras", help="end-to-end camera counts, e.g. 1,2,4,8,12")
    parser.add_argument("--sections", default="1,2,3,4,5,6", help="which parts to run, e.g. 2,4")
    args = parser.parse_args()
    quick = args.quick
    clips = QUICK_CLIPS if quick else FULL_CLIPS
    seconds = 4.0 if quick else 8.0
    counts = [int(n) for n in args.cameras.split(",")] if args.cameras else None
    counts = counts or ([1, 2] if quick else [1, 2, 4, 6, 8, 10, 12, 14, 16])
    sections = set(args.sections.split(","))
    table = Table()
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_port:
        folder = Path(tmp)
        with test_cameras(folder, clips) as (rtsp, http_url):
            h264 = rtsp.clip_url(H264_720)
            if "1" in sections:
                floor_frames = 90 if quick else 300
                camera_rows(table, redis_port, rtsp, http_url, clips, folder, seconds, floor_frames)
            if "2" in sections:
                idle_rows(table, redis_port, h264, seconds)
            if "3" in sections:
                gateway_rows(table, redis_port, seconds)
            steps = []
            if "4" in sections:
                steps = end_to_end_rows(table, redis_port, h264, counts, 6.0 if quick else 10.0)
            if "5" in sections and not quick:
                growth_rows(table, redis_port, rtsp, steps, seconds)
            if "6" in sections:
                passthrough_rows(table, folder, 300 if quick else 900)
    print()
    print(table.render())


if __name__ == "__main__":
    main()
