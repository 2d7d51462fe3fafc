"""Drawing detections (and optionally a timestamp) on the frame to publish."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from streamd.worker.detectors import Detection

_COLOURS = [(0, 200, 255), (0, 255, 0), (255, 128, 0), (255, 0, 255), (0, 128, 255)]


def draw_overlay(
    image: np.ndarray, detections: Sequence[Detection], *, timestamp: float | None = None
) -> np.ndarray:
    """A copy with boxes and labels drawn; the input is never modified. With
    nothing to draw, the input itself is returned (published untouched)."""
    if not detections and timestamp is None:
        return image
    out = image.copy()
    thickness = max(1, round(out.shape[1] / 640))
    for det in detections:
        colour = _COLOURS[sum(det.label.encode()) % len(_COLOURS)]  # stable across runs
        x, y, w, h = det.box
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, 2 * thickness)
        text = f"{det.label} {det.score:.2f}"
        cv2.putText(
            out,
            text,
            (x, max(12, y - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45 * thickness,
            colour,
            thickness,
            cv2.LINE_AA,
        )
    if timestamp is not None:
        text = dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
        cv2.putText(
            out,
            text,
            (8, out.shape[0] - 8),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5 * thickness,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
    return out


def scale_detections(
    detections: tuple[Detection, ...], found_on: tuple[int, int] | None, size: tuple[int, int]
) -> tuple[Detection, ...]:
    """Boxes found on a ``found_on`` (width, height) picture, in ``size``'s pixels
    (a detection stream is smaller than the main stream it is drawn on)."""
    if not detections or found_on is None or found_on == size or 0 in found_on:
        return detections
    sx, sy = size[0] / found_on[0], size[1] / found_on[1]
    return tuple(
        replace(d, box=(round(x * sx), round(y * sy), round(w * sx), round(h * sy)))
        for d in detections
        for x, y, w, h in (d.box,)
    )
