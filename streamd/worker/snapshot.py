"""An event's snapshot: the frame the event was detected on, boxes drawn, as a
JPEG no larger than ``snapshot_max_bytes``. It keeps the frame's own size, so
the event's boxes (frame coordinates) lie over the right pixels; a snapshot too
big at the camera's quality is encoded again at lower ones, then left out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamd.worker.detectors import Detection
from streamd.worker.encode import EncodeError, encode_jpeg
from streamd.worker.overlay import draw_overlay

FALLBACK_QUALITIES = (60, 40, 25)


def event_snapshot(
    image: np.ndarray, detections: Sequence[Detection], quality: int, max_bytes: int
) -> bytes | None:
    drawn = draw_overlay(image, detections)
    for q in (quality, *(q for q in FALLBACK_QUALITIES if q < quality)):
        try:
            jpeg = encode_jpeg(drawn, q)
        except EncodeError:
            return None
        if len(jpeg) <= max_bytes:
            return jpeg
    return None
