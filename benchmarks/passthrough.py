"""What H.264 passthrough (issue 20) costs a camera child per frame, against
reading the stream at all and against the JPEG path, on the same clip in the
same run: a 1080p15 H.264 clip made by ffmpeg (tests/cameras.py, 4 Mbit/s,
GOP 2 s), raw Annex-B and the same bitstream remuxed to MP4 (avcC samples).

- passthrough: ``demux.Demuxer`` + ``passthrough.Passthrough.feed`` per unit;
- demux only: ``benchmarks.decoders``' PyAV demux loop (packets never touched),
  the floor of reading a stream at all; target passthrough ÷ it <= 1.5;
- decode + JPEG: ``camera_cost.floor_per_frame``, what the child does per
  frame today (decode, JPEG from the decoder's planes).

And the bytes a viewer is sent per frame: passthrough messages against the
child's JPEGs (quality 80, full size) of the same frames.

Each CPU figure is measured alone in a fresh process (fork); opening and
probing the file is not part of a frame's cost.

Usage: python -m benchmarks.passthrough [--frames 600]  (section 6 of ``python -m benchmarks``)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path

import av

from benchmarks import decoders
from benchmarks.camera_cost import JPEG_QUALITY, floor_per_frame
from streamd.video.demux import Demuxer
from streamd.video.passthrough import Passthrough
from streamd.worker.planes import encode_jpeg, from_packed_i420
from tests.cameras import Clip, make_clip

CLIP = Clip("h264", 1920, 1080)


def _cpu() -> float:
    # Not os.times(): its 10 ms ticks are more than a demuxed packet costs.
    return time.process_time()


def _passthrough_loop(path: Path, frames: int) -> tuple[float, int]:
    """(CPU seconds without opening, bytes published) for ``frames`` units."""
    done = published = 0
    used = 0.0
    while done < frames:
        source = Demuxer(str(path))  # probing a file is no part of a frame's cost
        pipeline = Passthrough("bench", source.codec)
        start = _cpu()
        for unit in source:
            message = pipeline.feed(unit, time.time_ns())
            published += len(message) if message is not None else 0
            done += 1
            if done >= frames:
                break
        used += _cpu() - start
        source.close()
    return used, published


def _passthrough_worker(path: str, frames: int, out: Queue[tuple[float, float]]) -> None:
    _passthrough_loop(Path(path), 30)  # lazy imports, caches
    used, published = _passthrough_loop(Path(path), frames)
    out.put((used / frames, published / frames))


def _demux_worker(path: str, frames: int, out: Queue[tuple[float, float]]) -> None:
    decoders.cpu_seconds = _cpu  # its opening cost, at the same resolution (this process only)
    read = decoders.av_reader(convert_every=0, decode=False)
    read(Path(path), 30)
    decoders.OPENING[0] = 0.0
    start = _cpu()
    read(Path(path), frames)
    out.put(((_cpu() - start - decoders.OPENING[0]) / frames, 0.0))


def _jpeg_bytes_worker(path: str, frames: int, out: Queue[tuple[float, float]]) -> None:
    total = done = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            for picture in stream.codec_context.decode(packet):
                planes = from_packed_i420(
                    picture.to_ndarray(), picture.width, picture.height,
                    limited=picture.color_range != 2,
                )  # fmt: skip
                total += len(encode_jpeg(planes, JPEG_QUALITY))
                done += 1
            if done >= frames:
                break
    out.put((0.0, total / done))


def _alone(worker: Callable[[str, int, Queue[tuple[float, float]]], None], path: Path,
           frames: int) -> tuple[float, float]:  # fmt: skip
    context = mp.get_context("fork")
    out: Queue[tuple[float, float]] = context.Queue()
    process = context.Process(target=worker, args=(str(path), frames, out))
    process.start()
    result = out.get(timeout=600)
    process.join()
    return result


def remux_mp4(raw: Path) -> Path:
    """The same bitstream in MP4: avcC extradata, length-prefixed samples."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is not installed"
    mp4 = raw.with_suffix(".mp4")
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-r", "15", "-i", str(raw),
         "-c", "copy", str(mp4)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return mp4


@dataclass(frozen=True)
class Figures:
    label: str
    passthrough: float  # CPU s per frame
    demux_only: float
    decode_jpeg: float
    message_bytes: float  # per frame
    jpeg_bytes: float


def measure(path: Path, label: str, frames: int, decode_frames: int) -> Figures:
    passthrough, message_bytes = _alone(_passthrough_worker, path, frames)
    demux_only, _ = _alone(_demux_worker, path, frames)
    decode_jpeg = floor_per_frame(path, decode_frames)
    _, jpeg_bytes = _alone(_jpeg_bytes_worker, path, 60)
    return Figures(label, passthrough, demux_only, decode_jpeg, message_bytes, jpeg_bytes)


def clips(folder: Path) -> list[tuple[Path, str]]:
    raw = folder / CLIP.filename
    if not raw.exists():
        make_clip(folder, CLIP)
    return [(raw, "Annex-B .h264"), (remux_mp4(raw), "MP4 (avcC)")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for path, label in clips(Path(tmp)):
            print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
            f = measure(path, label, args.frames, args.frames // 4)
            print(
                f"{CLIP.width}x{CLIP.height} H.264 {f.label}: "
                f"passthrough {f.passthrough * 1e6:.0f} µs/frame, "
                f"demux only {f.demux_only * 1e6:.0f} µs -> {f.passthrough / f.demux_only:.2f}x "
                f"(target <= 1.5); decode + JPEG {f.decode_jpeg * 1e3:.2f} ms -> "
                f"{f.passthrough / f.decode_jpeg:.4f}x; bytes/frame {f.message_bytes:.0f} vs "
                f"JPEG {f.jpeg_bytes:.0f} -> {f.message_bytes / f.jpeg_bytes:.2f}x",
                flush=True,
            )
            print(f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
