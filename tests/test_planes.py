"""JPEGs made straight from the decoder's YUV 4:2:0 planes: the colours of the
picture FFmpeg itself would convert, limited-range video stretched to JPEG's
full range (else blacks would show grey), and even sizes when resizing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamd.worker.av_source import AvSource
from streamd.worker.planes import Planes, encode_jpeg, resize_to_width, to_bgr

from .cameras import Clip, make_clip


def encode_clip(path: Path, lavfi: str, pix_fmt: str, frames: int = 5) -> Path:
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg
    subprocess.run(
        [
            *(ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", lavfi),
            *("-frames:v", str(frames), "-pix_fmt", pix_fmt, "-c:v", "libx264", "-qp", "0"),
            str(path),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


def first_planes(path: Path) -> tuple[Planes, np.ndarray]:
    """The first frame's planes, and FFmpeg's own BGR conversion of it."""
    source = AvSource(str(path), live=False)
    source.open()
    try:
        frame = source.read()
        assert frame is not None
        planes = frame.planes()
        assert planes is not None
        reference = frame.image()
    finally:
        source.close()
    return planes, reference


def decoded(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_limited_range_video_keeps_black_black_and_white_white(tmp_path: Path) -> None:
    halves = "color=black:s=320x240,drawbox=x=160:y=0:w=160:h=240:color=white:t=fill"
    planes, _ = first_planes(encode_clip(tmp_path / "bw.mp4", halves, "yuv420p"))
    image = decoded(encode_jpeg(planes, 90))
    assert float(image[:, 20:140].mean()) < 4  # 16 if the studio range were kept
    assert float(image[:, 180:300].mean()) > 251  # 235 likewise


def test_full_range_video_is_not_stretched_again(tmp_path: Path) -> None:
    grey = "color=0x282828:s=320x240"  # 40 in full range; stretching again gives 28
    planes, _ = first_planes(encode_clip(tmp_path / "grey.mp4", grey, "yuvj420p"))
    image = decoded(encode_jpeg(planes, 95))
    assert abs(float(image.mean()) - 40) < 3


@pytest.mark.parametrize("clip", [Clip("h264", 640, 360), Clip("h265", 640, 360)])
def test_colours_match_ffmpegs_own_conversion(tmp_path: Path, clip: Clip) -> None:
    planes, reference = first_planes(make_clip(tmp_path, clip, seconds=0.5))
    from_planes = decoded(encode_jpeg(planes, 90))
    via_bgr = decoded(cv2.imencode(".jpg", reference, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    # As close to FFmpeg's picture as encoding its BGR conversion would be.
    assert (
        float(cv2.absdiff(from_planes, reference).mean())
        < 1.3 * float(cv2.absdiff(via_bgr, reference).mean()) + 1
    )
    assert float(cv2.absdiff(to_bgr(planes), reference).mean()) < 4


@settings(deadline=None, max_examples=60)  # OpenCV's first resize of a size is slow
@given(
    st.integers(1, 200).map(lambda n: 2 * n),
    st.integers(1, 120).map(lambda n: 2 * n),
    st.integers(1, 500),
)
def test_resized_planes_keep_even_sizes_and_the_aspect(width: int, height: int, to: int) -> None:
    planes = Planes(
        np.zeros((height, width), np.uint8),
        np.zeros((height // 2, width // 2), np.uint8),
        np.zeros((height // 2, width // 2), np.uint8),
    )
    out = resize_to_width(planes, to)
    assert out.width % 2 == 0 and out.height % 2 == 0
    assert out.u.shape == out.v.shape == (out.height // 2, out.width // 2)
    assert abs(out.width - to) <= 1 or (to < 2 and out.width == 2)
    assert abs(out.height / out.width - height / width) <= 2 / out.width + 2 / out.height
    assert decoded(encode_jpeg(out, 80)).shape == (out.height, out.width, 3)
