"""What to decode and what to re-encode (pure decisions, no I/O).

- Keyframes only: an unwatched camera whose detector needs a frame no more often
  than the stream's keyframes come decodes keyframes only. Not when keyframes are
  so far apart that the camera would look stalled, or their spacing is unknown.
- Passthrough: an MJPEG camera's own JPEG is published as it came (plus our
  metadata segment) when nothing has to be drawn on it and no resize is asked.
"""

from __future__ import annotations

import struct

# Keyframes further apart than this would trip the stall check (3 s) and make
# a viewer arriving wait too long for a frame.
MAX_KEYFRAME_GAP_S = 2.5
# Non-key packets kept to catch up when full decoding resumes mid-GOP (10 s at 60 fps).
MAX_KEYFRAME_BACKLOG = 600

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field


def keyframes_suffice(
    *, watched: bool, detect_interval: float | None, keyframe_interval: float | None
) -> bool:
    """``detect_interval``: seconds between frames the detector takes; None: no detector."""
    if watched or keyframe_interval is None or keyframe_interval > MAX_KEYFRAME_GAP_S:
        return False
    return detect_interval is None or detect_interval >= keyframe_interval


def can_pass_through(
    jpeg: bytes | None, frame_width: int, target_width: int | None, drawing: bool
) -> bool:
    return (
        jpeg is not None and not drawing and (target_width is None or target_width == frame_width)
    )


def _segments(jpeg: bytes) -> list[tuple[int, int]]:
    """(marker, offset of its payload) for each header segment up to SOS."""
    out: list[tuple[int, int]] = []
    if not jpeg.startswith(b"\xff\xd8"):
        return out
    pos = 2
    while pos + 4 <= len(jpeg):
        if jpeg[pos] != 0xFF:
            return out
        marker = jpeg[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        out.append((marker, pos + 4))
        if marker == 0xDA:  # SOS: entropy-coded data follows
            return out
        (length,) = struct.unpack_from(">H", jpeg, pos + 2)
        pos += 2 + length
    return out


def jpeg_size(jpeg: bytes) -> tuple[int, int] | None:
    """(width, height) from the JPEG's SOF header; None if there is none."""
    for marker, payload in _segments(jpeg):
        if marker in _SOF_MARKERS and payload + 5 <= len(jpeg):
            height, width = struct.unpack_from(">HH", jpeg, payload + 1)
            return (width, height) if width and height else None
    return None


def is_self_contained_jpeg(jpeg: bytes) -> bool:
    """Has its own Huffman tables (DHT) before the scan: any decoder reads it."""
    markers = [marker for marker, _ in _segments(jpeg)]
    return 0xC4 in markers and markers[-1:] == [0xDA]
