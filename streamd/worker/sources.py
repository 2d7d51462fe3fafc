"""Frame sources for one camera child: synthetic test pattern, and V4L2 devices
(OpenCV); RTSP, HTTP(S) MJPEG and video files go through PyAV (``av_source``).

A source hands out ``Frame`` objects (``frames``) that convert to BGR only when
asked: frames the pacer thins out are never converted, and MJPEG cameras carry
their own JPEG bytes so they can be published without a decode and re-encode.

All calls block; they run in the child's capture thread, never in its event loop.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs

import cv2
import numpy as np

from streamd.worker.frames import DecodeStats, Frame, Image, KeyframePolicy, Source, SourceError

OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000


class _NoKeyframes:
    """For sources where every frame stands alone: nothing to skip."""

    def keyframes_only_when(self, policy: KeyframePolicy) -> None:
        pass


class SyntheticSource(_NoKeyframes):
    """A moving test pattern with a visible wall clock and frame counter."""

    live = False

    def __init__(self, width: int = 640, height: int = 360, *, moving: bool = True) -> None:
        self.stats = DecodeStats()
        self.width = width
        self.height = height
        self.moving = moving  # pattern=static: a still image (no clock, no square)
        self.counter = 0
        ys, xs = np.mgrid[0:height, 0:width]
        self._background = np.dstack(
            (
                (xs * 255 // max(1, width - 1)).astype(np.uint8),
                (ys * 255 // max(1, height - 1)).astype(np.uint8),
                np.full((height, width), 96, np.uint8),
            )
        )

    @classmethod
    def from_spec(cls, spec: str) -> SyntheticSource:
        query = parse_qs(spec.partition("?")[2])
        try:
            width = int(query.get("width", ["640"])[0])
            height = int(query.get("height", ["360"])[0])
        except ValueError:
            raise SourceError(f"synthetic size must be integers: {spec!r}") from None
        if not (16 <= width <= 7680 and 16 <= height <= 4320):
            raise SourceError(f"synthetic size {width}x{height} out of range")
        pattern = query.get("pattern", ["moving"])[0]
        if pattern not in ("moving", "static"):
            raise SourceError(f"synthetic pattern must be moving or static, got {pattern!r}")
        return cls(width, height, moving=pattern == "moving")

    def open(self) -> None:
        pass

    def read(self) -> Frame:
        return Frame.of_image(self.draw(), self.stats)

    def draw(self) -> Image:
        self.counter += 1
        img = self._background.copy()
        if not self.moving:
            return img
        size = max(8, self.height // 6)
        x = (self.counter * 7) % max(1, self.width - size)
        y = (self.height - size) // 2
        cv2.rectangle(img, (x, y), (x + size, y + size), (255, 255, 255), -1)
        clock = dt.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        scale = max(0.4, self.height / 480)
        cv2.putText(
            img,
            clock,
            (10, int(30 * scale)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            2,
            cv2.LINE_AA,
        )
        cv2.putText(
            img,
            f"#{self.counter}",
            (10, int(62 * scale)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            2,
            cv2.LINE_AA,
        )
        return img

    def close(self) -> None:
        pass


class CaptureSource(_NoKeyframes):
    """A V4L2 device through OpenCV's VideoCapture (files and streams go through
    PyAV). ``grab`` on every frame, ``retrieve`` (decode to BGR) only for frames
    that are used."""

    live = True

    def __init__(self, device: int) -> None:
        self.stats = DecodeStats()
        self.device = device
        self._capture: cv2.VideoCapture | None = None

    def _describe(self) -> str:
        return f"device:{self.device}"

    def open(self) -> None:
        self.close()
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            READ_TIMEOUT_MS,
        ]
        capture = cv2.VideoCapture(self.device, cv2.CAP_V4L2, params)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self._describe()}")
        self._capture = capture

    def read(self) -> Frame | None:
        capture = self._capture
        if capture is None or not capture.grab():
            return None
        self.stats.decoded += 1
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        return Frame(width, height, self._retrieve, self.stats)

    def _retrieve(self) -> Image:
        assert self._capture is not None
        ok, image = self._capture.retrieve()
        if not ok or image is None:
            raise SourceError(f"cannot decode a frame from {self._describe()}")
        return image

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def open_source(spec: str, *, loop: bool = True) -> Source:
    """The source for a config ``source`` string; ``SourceError`` if it is unusable."""
    from streamd.worker.av_source import AvSource  # PyAV loads FFmpeg: only when used

    if spec.startswith("synthetic:"):
        return SyntheticSource.from_spec(spec)
    if spec.startswith("device:"):
        return CaptureSource(int(spec.removeprefix("device:")))
    if spec.startswith(("rtsp://", "rtsps://", "http://", "https://")):
        return AvSource(spec, live=True)
    return AvSource(spec, live=False, loop=loop)
