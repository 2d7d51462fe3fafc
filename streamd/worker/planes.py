"""Pictures as the decoder gives them: 4:2:0 planes (Y, then U and V at half size).

An H.264/H.265 camera decodes to YUV 4:2:0, and a JPEG stores YCbCr 4:2:0: the
JPEG can be made from the decoder's planes with no BGR picture in between
(libjpeg-turbo through ``simplejpeg``), and a motion detector reads the Y plane
as its grey picture. That saves the BGR conversion and the encoder's own colour
conversion back (``python -m benchmarks.decoders`` measures both ways).

JPEG (JFIF) wants full-range samples; most cameras send limited range (Y 16-235,
chroma 16-240), which is stretched here, else blacks would show grey.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

from streamd.worker.encode import EncodeError

# Limited ("MPEG", studio) range to full ("JPEG") range, as an affine map per plane.
_LUMA_GAIN = 255 / 219
_CHROMA_GAIN = 255 / 224


@dataclass(frozen=True, slots=True)
class Planes:
    """A full-range YUV 4:2:0 picture: ``y`` is HxW, ``u`` and ``v`` (H/2)x(W/2)."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def width(self) -> int:
        return int(self.y.shape[1])

    @property
    def height(self) -> int:
        return int(self.y.shape[0])


def from_packed_i420(packed: np.ndarray, width: int, height: int, *, limited: bool) -> Planes:
    """Planes from a packed I420 buffer (Y rows, then U, then V, as PyAV's
    ``to_ndarray()`` gives for yuv420p); ``limited``: stretch to full range."""
    flat = packed.reshape(-1)
    if limited:
        flat = _stretch(flat, width * height)
    luma, chroma = width * height, (width // 2) * (height // 2)
    return Planes(
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2),
    )


def _stretch(flat: np.ndarray, luma: int) -> np.ndarray:
    # cv2.addWeighted saturates to uint8 in one SIMD pass: about half a LUT's cost.
    out = np.empty_like(flat)
    cv2.addWeighted(flat[:luma], _LUMA_GAIN, flat[:luma], 0.0, -16 * _LUMA_GAIN, dst=out[:luma])
    cv2.addWeighted(
        flat[luma:], _CHROMA_GAIN, flat[luma:], 0.0, 128 - 128 * _CHROMA_GAIN, dst=out[luma:]
    )
    return out


def resize_to_width(planes: Planes, width: int | None) -> Planes:
    """Aspect kept, sizes even (4:2:0 needs them so)."""
    if width is None or width == planes.width:
        return planes
    width = max(2, width - width % 2)
    height = max(2, round(planes.height * width / planes.width / 2) * 2)
    interpolation = cv2.INTER_AREA if width < planes.width else cv2.INTER_LINEAR
    return Planes(
        cv2.resize(planes.y, (width, height), interpolation=interpolation),
        cv2.resize(planes.u, (width // 2, height // 2), interpolation=interpolation),
        cv2.resize(planes.v, (width // 2, height // 2), interpolation=interpolation),
    )


def encode_jpeg(planes: Planes, quality: int) -> bytes:
    try:
        jpeg: bytes = simplejpeg.encode_jpeg_yuv_planes(planes.y, planes.u, planes.v, quality)
    except (ValueError, RuntimeError) as exc:
        raise EncodeError(f"JPEG from planes failed: {exc}") from None
    return jpeg


def to_bgr(planes: Planes) -> np.ndarray:
    """A BGR picture (for drawing on: overlays, event snapshots)."""
    size = (planes.width, planes.height)
    u = cv2.resize(planes.u, size, interpolation=cv2.INTER_LINEAR)
    v = cv2.resize(planes.v, size, interpolation=cv2.INTER_LINEAR)
    # Full-range YCbCr is what OpenCV's YCrCb conversion expects (note Cr first).
    return cv2.cvtColor(cv2.merge((planes.y, v, u)), cv2.COLOR_YCrCb2BGR)
