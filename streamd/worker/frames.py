"""What a camera source hands the capture thread: ``Frame`` (converted only when
asked), its ``DecodeStats``, the ``Source`` protocol every source meets, and
``SourceError``. Shared by ``sources`` (synthetic, V4L2) and ``av_source`` (PyAV),
which import it and not each other's vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from streamd.errors import StreamdError
from streamd.worker.planes import Planes

Image = np.ndarray  # HxWx3 uint8, BGR
# Asked with the seconds between keyframes (None: not known yet): decode keyframes only?
KeyframePolicy = Callable[[float | None], bool]


class SourceError(StreamdError, RuntimeError):
    """The source could not be opened; the message is safe to log (redacted)."""


@dataclass
class DecodeStats:
    """What a source's frames cost (cumulative; written by the capture thread)."""

    decoded: int = 0  # pictures the decoder produced (inter codecs: every frame)
    converted: int = 0  # frames converted to a picture we use (BGR or planes)
    planar: int = 0  # of those, taken as the decoder's planes (no BGR conversion)


class Frame:
    """One frame from a source. ``image()`` converts to BGR on first call (counted
    in ``stats.converted``); ``planes()`` gives the decoder's own YUV 4:2:0 planes
    instead, when the source decodes to them (None otherwise), with no BGR
    conversion. Either must be called before the source's next ``read()``.
    ``jpeg`` is the camera's own complete JPEG when the source is MJPEG;
    ``media_time`` the stream's own timestamp in seconds, when it has one."""

    __slots__ = (
        "_convert",
        "_image",
        "_planar",
        "_planes",
        "height",
        "jpeg",
        "keyframe",
        "media_time",
        "stats",
        "width",
    )

    def __init__(
        self,
        width: int,
        height: int,
        convert: Callable[[], Image],
        stats: DecodeStats,
        *,
        jpeg: bytes | None = None,
        keyframe: bool = True,
        media_time: float | None = None,
        planar: Callable[[], Planes | None] | None = None,
    ) -> None:
        self.media_time = media_time
        self.width = width
        self.height = height
        self.jpeg = jpeg
        self.keyframe = keyframe
        self.stats = stats
        self._convert = convert
        self._image: Image | None = None
        self._planar = planar
        self._planes: Planes | None = None

    @classmethod
    def of_image(cls, image: Image, stats: DecodeStats) -> Frame:
        """A frame that is already a BGR image (synthetic sources)."""
        frame = cls(int(image.shape[1]), int(image.shape[0]), lambda: image, stats)
        frame._image = image
        return frame

    def image(self) -> Image:
        if self._image is None:
            self._image = self._convert()
            if self._planes is None:
                self.stats.converted += 1
        return self._image

    def planes(self) -> Planes | None:
        if self._planes is None and self._planar is not None and self._image is None:
            self._planes = self._planar()
            if self._planes is None:
                self._planar = None  # not a 4:2:0 picture: BGR it is
            else:
                self.stats.converted += 1
                self.stats.planar += 1
        return self._planes

    def grey(self) -> np.ndarray:
        """The picture in grey: the Y plane when there are planes, no conversion."""
        planes = self.planes()
        if planes is not None:
            return planes.y
        return cv2.cvtColor(self.image(), cv2.COLOR_BGR2GRAY)


class Source(Protocol):
    # Live sources (cameras, streams) are read as fast as they deliver and thinned
    # to the configured fps; paced ones (synthetic, files) are read on schedule.
    live: bool
    stats: DecodeStats

    def open(self) -> None: ...

    def read(self) -> Frame | None:
        """The next frame, or None when the source is lost (then reopen)."""
        ...

    def close(self) -> None: ...

    def keyframes_only_when(self, policy: KeyframePolicy) -> None:
        """Decode keyframes only while ``policy(seconds between keyframes)`` says so;
        asked at every packet, so a change applies at once (sources that cannot
        skip frames ignore it)."""
        ...
