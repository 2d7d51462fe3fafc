"""Small H.264/H.265 clips encoded once per test module with ffmpeg, and PyAV
helpers to read them as access units and decode units one by one (an
independent check of streamd.video's own splitting and rewriting)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av

SIZE = "176x144"
FRAMES = 20


def encode(folder: Path, name: str, *args: str, frames: int = FRAMES, size: str = SIZE) -> Path:
    """``name`` is the file name; its suffix picks the container (.h264, .hevc, .mp4, .mkv)."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is not installed"
    path = folder / name
    subprocess.run(
        [
            *(ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"),
            *("-i", f"testsrc2=size={size}:rate=15", "-frames:v", str(frames)),
            *args,
            str(path),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def x264(folder: Path, name: str, profile: str, bframes: int, *extra: str) -> Path:
    return encode(
        folder, name, "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast",
        "-profile:v", profile, "-bf", str(bframes), "-g", "10", *extra,
    )  # fmt: skip


def x265(folder: Path, name: str) -> Path:
    params = "keyint=10:min-keyint=10:scenecut=0:bframes=0:log-level=error"
    return encode(
        folder, name, "-pix_fmt", "yuv420p", "-c:v", "libx265", "-preset", "ultrafast",
        "-x265-params", params,
    )  # fmt: skip


def packets(path: Path) -> list[tuple[bytes, bool, int | None, int | None]]:
    """(bytes, is_keyframe, pts, dts) of each demuxed packet, in decode order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(bytes(p), p.is_keyframe, p.pts, p.dts) for p in container.demux(stream) if p.size]


def extradata(path: Path) -> bytes:
    with av.open(str(path)) as container:
        data = container.streams.video[0].codec_context.extradata
        assert data is not None
        return bytes(data)


def decode_units(codec: str, units: list[bytes]) -> list[tuple[int, int]]:
    """Feed ``units`` one by one to a fresh decoder with no extradata; the
    (width, height) of every frame out, flushed at the end (a refused unit
    is just a missing frame, so callers compare counts)."""
    context = av.CodecContext.create(codec, "r")
    assert isinstance(context, av.VideoCodecContext)
    sizes: list[tuple[int, int]] = []
    for index, unit in enumerate(units):
        packet = av.Packet(unit)
        packet.pts = index
        packet.time_base = Fraction(1, 15)
        # A unit the decoder refuses is a frame missing from the result.
        with contextlib.suppress(av.InvalidDataError):
            sizes += [(f.width, f.height) for f in context.decode(packet)]
    sizes += [(f.width, f.height) for f in context.decode(None)]
    return sizes
