"""Frame sources for one camera child: synthetic test pattern, video file, RTSP,
HTTP(S) MJPEG and V4L2 devices (the last four through OpenCV's FFmpeg/V4L2).

All calls block; they run in the child's capture thread, never in its event loop.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Protocol
from urllib.parse import parse_qs

import cv2
import numpy as np

from streamd.redact import redact_url

Image = np.ndarray  # HxWx3 uint8, BGR
OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000


class SourceError(RuntimeError):
    """The source could not be opened; the message is safe to log (redacted)."""


class Source(Protocol):
    # Live sources (cameras, streams) are read as fast as they deliver and thinned
    # to the configured fps; paced ones (synthetic, files) are read on schedule.
    live: bool

    def open(self) -> None: ...

    def read(self) -> Image | None:
        """The next frame, or None when the source is lost (then reopen)."""
        ...

    def close(self) -> None: ...


class SyntheticSource:
    """A moving test pattern with a visible wall clock and frame counter."""

    live = False

    def __init__(self, width: int = 640, height: int = 360, *, moving: bool = True) -> None:
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

    def read(self) -> Image:
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


class CaptureSource:
    """Anything OpenCV's VideoCapture opens: files, rtsp://, http(s):// MJPEG, devices."""

    def __init__(self, target: str | int, *, live: bool, loop: bool = False) -> None:
        self.target = target
        self.live = live
        self.loop = loop
        self._capture: cv2.VideoCapture | None = None

    def _describe(self) -> str:
        return redact_url(str(self.target))

    def open(self) -> None:
        self.close()
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            READ_TIMEOUT_MS,
        ]
        if isinstance(self.target, int):
            capture = cv2.VideoCapture(self.target, cv2.CAP_V4L2, params)
        else:
            if not self.live and not os.path.exists(self.target):
                raise SourceError(f"file not found: {self._describe()}")
            capture = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self._describe()}")
        self._capture = capture

    def read(self) -> Image | None:
        if self._capture is None:
            return None
        ok, image = self._capture.read()
        if ok and image is not None:
            return image
        if self.loop and not self.live:
            # End of file: start over so a file works as an endless test camera.
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
            if ok and image is not None:
                return image
        return None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def open_source(spec: str, *, loop: bool = True) -> Source:
    """The source for a config ``source`` string; ``SourceError`` if it is unusable."""
    if spec.startswith("synthetic:"):
        return SyntheticSource.from_spec(spec)
    if spec.startswith("device:"):
        return CaptureSource(int(spec.removeprefix("device:")), live=True)
    if spec.startswith(("rtsp://", "rtsps://")):
        # RTSP over TCP: the supervisor sets OPENCV_FFMPEG_CAPTURE_OPTIONS in our env.
        return CaptureSource(spec, live=True)
    if spec.startswith(("http://", "https://")):
        return CaptureSource(spec, live=True)
    return CaptureSource(spec, live=False, loop=loop)


class Pacer:
    """Decides which frames to keep for a target fps (pure: ``now`` is passed in)."""

    def __init__(self, fps: float, now: float) -> None:
        self.interval = 1.0 / fps
        self.next_due = now

    def wait_time(self, now: float) -> float:
        return max(0.0, self.next_due - now)

    def take(self, now: float) -> bool:
        """True if a frame arriving at ``now`` should be published."""
        if now < self.next_due:
            return False
        # Schedule from the due time, not from now, so the average rate is exact;
        # but after a stall longer than one interval start afresh (no catch-up burst).
        self.next_due += self.interval
        if self.next_due <= now:
            self.next_due = now + self.interval
        return True
