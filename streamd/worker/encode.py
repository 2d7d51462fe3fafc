"""Resize (aspect kept) and JPEG-encode: done once per published frame."""

from __future__ import annotations

import cv2
import numpy as np

from streamd.errors import StreamdError


class EncodeError(StreamdError, RuntimeError):
    """OpenCV refused to encode the frame."""


def resize_to_width(image: np.ndarray, width: int | None) -> np.ndarray:
    if width is None or image.shape[1] == width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    # INTER_AREA for shrinking avoids aliasing; linear is the cheap choice upward.
    interpolation = cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EncodeError("cv2.imencode failed")
    return buffer.tobytes()
