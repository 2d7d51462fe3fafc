"""OpenCV's VideoCapture vs PyAV on the same H.264/H.265 clips: CPU per input
frame for each way of reading, as a ratio to OpenCV ``read()`` of every frame.

"1 in 3" is the pacer thinning a 15 fps camera to 5 fps: every frame must be
decoded (later frames refer to it), only one in three is converted to BGR.
The latency column is the extra delay a decoder adds before a frame comes out
(frame threading holds frames back), in frames.

Usage: python -m benchmarks.decoders [--frames 240] [--clips DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import av
import cv2

from tests.cameras import make_clips

T = TypeVar("T")
Reader = Callable[[Path, int], tuple[int, int]]  # -> (frames out, max frames held back)


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


OPENING = [0.0]  # CPU spent opening (probing) clips: not part of a frame's cost


def timed_open(opener: Callable[[], T]) -> T:
    start = cpu_seconds()
    result = opener()
    OPENING[0] += cpu_seconds() - start
    return result


def cv2_read(path: Path, count: int) -> tuple[int, int]:
    done = 0
    while done < count:
        capture = timed_open(lambda: cv2.VideoCapture(str(path), cv2.CAP_FFMPEG))
        while done < count:
            ok, _ = capture.read()
            if not ok:
                break
            done += 1
        capture.release()
    return done, -1


def cv2_grab_retrieve(path: Path, count: int) -> tuple[int, int]:
    done = 0
    while done < count:
        capture = timed_open(lambda: cv2.VideoCapture(str(path), cv2.CAP_FFMPEG))
        while done < count:
            if not capture.grab():
                break
            if done % 3 == 0:
                capture.retrieve()
            done += 1
        capture.release()
    return done, -1


def av_reader(
    *,
    convert_every: int,
    keyframes_only: bool = False,
    key_packets_only: bool = False,
    decode: bool = True,
    threads: str = "SLICE",
    count: int = 0,
) -> Reader:
    def read(path: Path, frames: int) -> tuple[int, int]:
        sent = out = held = 0
        while sent < frames:
            with timed_open(lambda: av.open(str(path))) as container:
                stream = container.streams.video[0]
                context = stream.codec_context
                context.thread_type = threads
                context.thread_count = count
                if keyframes_only:
                    context.skip_frame = "NONKEY"
                for packet in container.demux(stream):
                    sent += packet.size > 0
                    if not decode or (key_packets_only and not packet.is_keyframe):
                        if sent >= frames:
                            break
                        continue  # demuxed, never given to the decoder
                    for frame in context.decode(packet):
                        if not (keyframes_only or key_packets_only):
                            held = max(held, sent - out - 1)
                        if convert_every and out % convert_every == 0:
                            frame.to_ndarray(format="bgr24")
                        out += 1
                    if sent >= frames:
                        break
        return out, held

    return read


MODES: list[tuple[str, Reader]] = [
    ("OpenCV read() every frame (decode + BGR)", cv2_read),
    ("OpenCV grab() every frame, retrieve() 1 in 3", cv2_grab_retrieve),
    ("PyAV decode every frame + BGR", av_reader(convert_every=1)),
    ("PyAV decode every frame, BGR 1 in 3", av_reader(convert_every=3)),
    ("PyAV decode every frame, no BGR", av_reader(convert_every=0)),
    ("PyAV decode + BGR, 1 thread", av_reader(convert_every=1, threads="NONE", count=1)),
    ("PyAV decode + BGR, frame threads", av_reader(convert_every=1, threads="AUTO")),
    (
        "PyAV keyframes only (skip_frame=NONKEY) + BGR",
        av_reader(convert_every=1, keyframes_only=True),
    ),
    (
        "PyAV keyframe packets only to the decoder + BGR",
        av_reader(convert_every=1, key_packets_only=True),
    ),
    ("PyAV demux only (the floor of reading a stream)", av_reader(convert_every=0, decode=False)),
]


def measure(path: Path, frames: int) -> None:
    print(f"\n{path.stem}: CPU per input frame, ratio to OpenCV read()", flush=True)
    base: float | None = None
    for label, reader in MODES:
        reader(path, 10)  # warm caches and lazy imports
        OPENING[0] = 0.0
        start = cpu_seconds()
        done, held = reader(path, frames)
        used = cpu_seconds() - start - OPENING[0]
        # keyframes-only returns only keyframes; cost is per *input* frame
        per_frame = used / frames
        base = base or per_frame
        delay = "" if held < 0 else f"  held back {held} frame(s)"
        print(
            f"  {label:48s} {per_frame * 1e3:6.2f} ms  {per_frame / base:5.2f}x"
            f"  ({done} out){delay}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--clips", type=Path, help="reuse clips made by benchmarks.clips")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.clips or Path(tmp)
        paths = make_clips(folder) if args.clips is None else sorted(folder.glob("h26*"))
        for path in paths:
            if path.suffix in (".h264", ".h265"):
                measure(path, args.frames)


if __name__ == "__main__":
    main()
