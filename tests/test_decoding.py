"""The pure decode decisions: keyframes only, MJPEG passthrough, JPEG headers."""

from __future__ import annotations

import cv2
import numpy as np

from streamd.worker.decoding import (
    can_pass_through,
    is_self_contained_jpeg,
    jpeg_size,
    keyframes_suffice,
)


def test_keyframes_suffice_only_for_an_unwatched_camera_whose_detector_needs_few_frames() -> None:
    assert keyframes_suffice(watched=False, detect_interval=None, keyframe_interval=2.0)
    assert keyframes_suffice(watched=False, detect_interval=2.0, keyframe_interval=2.0)
    assert not keyframes_suffice(watched=True, detect_interval=None, keyframe_interval=2.0)
    # motion detection at 15 fps needs every frame
    assert not keyframes_suffice(watched=False, detect_interval=1 / 15, keyframe_interval=2.0)
    # spacing not known yet, or so long the camera would look stalled
    assert not keyframes_suffice(watched=False, detect_interval=None, keyframe_interval=None)
    assert not keyframes_suffice(watched=False, detect_interval=None, keyframe_interval=10.0)


def test_passthrough_only_when_nothing_is_drawn_and_no_resize() -> None:
    assert can_pass_through(b"jpeg", 640, None, drawing=False)
    assert can_pass_through(b"jpeg", 640, 640, drawing=False)
    assert not can_pass_through(b"jpeg", 640, 320, drawing=False)
    assert not can_pass_through(b"jpeg", 640, None, drawing=True)
    assert not can_pass_through(None, 640, None, drawing=False)


def _jpeg(width: int, height: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", np.zeros((height, width, 3), np.uint8))
    assert ok
    return buffer.tobytes()


def _without_dht(jpeg: bytes) -> bytes:
    """AVI-style MJPEG: the same JPEG with its Huffman table segments removed."""
    out, pos = bytearray(jpeg[:2]), 2
    while jpeg[pos + 1] != 0xDA:
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if jpeg[pos + 1] != 0xC4:
            out += jpeg[pos : pos + 2 + length]
        pos += 2 + length
    return bytes(out + jpeg[pos:])


def test_jpeg_headers() -> None:
    jpeg = _jpeg(320, 200)
    assert jpeg_size(jpeg) == (320, 200)
    assert is_self_contained_jpeg(jpeg)
    stripped = _without_dht(jpeg)
    assert jpeg_size(stripped) == (320, 200)
    assert not is_self_contained_jpeg(stripped)
    assert jpeg_size(b"not a jpeg") is None
    assert jpeg_size(jpeg[:6]) is None
    assert not is_self_contained_jpeg(jpeg[:20])


def test_rtsp_transport_follows_the_supervisors_setting() -> None:
    from streamd.worker.av_source import rtsp_options

    assert rtsp_options({})["rtsp_transport"] == "tcp"
    env = {"OPENCV_FFMPEG_CAPTURE_OPTIONS": "rtsp_transport;udp"}
    assert rtsp_options(env)["rtsp_transport"] == "udp"
    assert rtsp_options({"OPENCV_FFMPEG_CAPTURE_OPTIONS": "rtsp_transport;bogus"}) == rtsp_options(
        {}
    )
